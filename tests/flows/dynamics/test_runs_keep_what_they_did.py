"""A run that meets a non-finite loss, an exception or a Ctrl-C keeps the steps it did and says why it stopped."""
import warnings

import numpy as np
import pytest
import torch

from flows import Objective, central_flow, compare, gradient_descent, integrate

THETA0 = torch.tensor([1.0, 1.0], dtype=torch.float64)


def _nan_loss_below(threshold: float) -> Objective:
    """½‖θ‖² whose value turns NaN once θ₀ < threshold while the gradient stays finite."""
    def energy(theta):
        nan = torch.full((), float("nan"), dtype=theta.dtype)
        return 0.5 * (theta ** 2).sum() + torch.where(theta[0] < threshold, nan, torch.zeros((), dtype=theta.dtype))
    return Objective.from_function(energy, 2, theta0=THETA0)


def _raising_below(threshold: float) -> Objective:
    def energy(theta):
        if float(theta[0].real) < threshold:
            raise RuntimeError("the simulator crashed")
        return 0.5 * (theta ** 2).sum()
    return Objective.from_function(energy, 2, theta0=THETA0)


def test_central_flow_stops_diverged_when_the_loss_turns_nan():
    with pytest.warns(RuntimeWarning, match="stopped after 7 GD steps: loss non-finite"):
        run = central_flow(_nan_loss_below(0.5), THETA0, 0.1, 20)
    assert run.status == "diverged" and run.events[-1]["step"] == 7  # 0.9⁷ = 0.478 < 0.5
    assert run.events[-1]["kind"] == "divergence"
    assert len(run) == 8 and np.isfinite(run.losses[:7]).all()


@pytest.mark.parametrize("runner", ["gd", "gf", "igr", "central"])
def test_an_exception_mid_run_returns_the_steps_done_as_failed(runner):
    obj = _raising_below(0.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if runner == "gd":
            run = gradient_descent(obj, THETA0, 0.1, 20)
        elif runner == "central":
            run = central_flow(obj, THETA0, 0.1, 20)
        else:
            run = integrate(obj, THETA0, 0.1, flow=runner, steps=20, method="rk4", step_size=0.05)
    assert run.status == "failed"
    assert isinstance(run.error, RuntimeError) and "simulator crashed" in str(run.error)
    assert any("failed" in str(w.message) or "stopped" in str(w.message) for w in caught)
    assert 5 <= len(run.losses) <= 9 and np.isfinite(run.losses).all()  # the steps before θ₀ fell under 0.5
    assert run.events[-1]["kind"] == "failed" and "simulator crashed" in run.events[-1]["reason"]


def test_an_exception_at_the_first_evaluation_is_raised():
    obj = _raising_below(0.5)
    with pytest.raises(RuntimeError, match="simulator crashed"):  # nothing done to keep: the error itself
        gradient_descent(obj, torch.tensor([0.1, 1.0], dtype=torch.float64), 0.1, 3)


def _interrupting_after(calls: int) -> Objective:
    count = {"n": 0}

    def energy(theta):
        count["n"] += 1
        if count["n"] == calls:
            raise KeyboardInterrupt
        return 0.5 * (theta ** 2).sum()
    return Objective.from_function(energy, 2, theta0=THETA0)


def test_one_ctrl_c_in_gd_stops_compare():
    result = compare(_interrupting_after(10), THETA0, 0.05, 200, flows=("gf", "igr"), method="rk4", step_size=0.01)
    assert result.gd.status == "interrupted" and result.flows == {}


def test_one_ctrl_c_in_the_first_flow_stops_compare():
    result = compare(_interrupting_after(400), THETA0, 0.05, 200, flows=("gf", "igr"), method="rk4", step_size=0.01)
    assert result.gd.status == "complete"
    assert list(result.flows) == ["gf"] and result.flows["gf"].status == "interrupted"
