"""One options style: the runners take keywords, and the frozen records (Solver, Spectrum, Recording) are exactly
those keywords, checked; misuse is loud and names the valid choices."""
import dataclasses
import inspect

import numpy as np
import pytest
import torch

from flows import (
    EigenTracker,
    Recording,
    Solver,
    Spectrum,
    central_flow,
    compare,
    gradient_descent,
    integrate,
    local_error,
)
from flows.dynamics.options import OPTION_NAMES


def test_the_keywords_of_integrate_are_the_fields_of_the_records():
    params = inspect.signature(integrate).parameters
    for record in (Solver, Spectrum, Recording):
        for f in dataclasses.fields(record):
            assert f.name in params and params[f.name].default == f.default, (record.__name__, f.name)
    assert list(params)[:4] == ["objective", "theta0", "lr", "steps"]
    for runner in (gradient_descent, central_flow, compare):
        assert list(inspect.signature(runner).parameters)[:4] == ["objective", "theta0", "lr", "steps"]
    for runner in (gradient_descent, central_flow):  # the same recording keywords
        runner_params = inspect.signature(runner).parameters
        assert {"states", "projection_size"} <= set(runner_params)


def test_a_record_passes_on_as_keywords(mlp_objective):
    theta0 = mlp_objective.theta0
    by_keywords = integrate(mlp_objective, theta0, 0.5, 3, flow="pf_topk", method="rk4", step_size=0.1, k=2,
                            eig_tol=1e-6, eig_refresh=0.0, states="projection", projection_size=5)
    by_records = integrate(mlp_objective, theta0, 0.5, 3, flow="pf_topk", **vars(Solver("rk4", step_size=0.1)),
                           **vars(Spectrum(k=2, eig_tol=1e-6, eig_refresh=0.0)),
                           **vars(Recording("projection", projection_size=5)))
    np.testing.assert_array_equal(by_keywords.states, by_records.states)
    assert by_records.states.shape == (4, 5)
    assert by_keywords.config == by_records.config


def test_unknown_keywords_and_the_old_positional_flow_are_type_errors(cubic):
    with pytest.raises(TypeError, match=r"unknown keyword argument\(s\) \['rtl'\]; valid: method, rtol"):
        compare(cubic, lr=0.1, steps=2, flows="gf", rtl=1e-6)
    with pytest.raises(TypeError, match=r"local_error\(\) got unknown keyword argument\(s\) \['solver'\]"):
        local_error(cubic, lr=0.1, flow="gf", solver=Solver("rk4"))
    with pytest.raises(TypeError, match="unexpected keyword argument 'solver'"):
        integrate(cubic, lr=0.1, steps=2, solver=Solver("rk4"))
    with pytest.raises(TypeError, match=r"the flow is a keyword since driftlab 0.3.0.*flow='gf'"):
        integrate(cubic, None, "gf", 0.1)
    assert set(OPTION_NAMES) == {"method", "rtol", "atol", "step_size", "max_num_steps", "chunk", "k", "tracker",
                                 "eig_tol", "eig_refresh", "states", "projection_size"}


@pytest.mark.parametrize("make,match", [
    (lambda: Solver(rtol=-1.0), "rtol"), (lambda: Solver(chunk=0), "chunk"), (lambda: Spectrum(k=0), "k"),
    (lambda: Spectrum(eig_tol=float("nan")), "eig_tol"), (lambda: Spectrum(tracker="warm"), "tracker"),
    (lambda: Recording("some"), "states must be one of"), (lambda: Recording(projection_size=0), "projection_size"),
])
def test_bad_option_values_are_named(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_bad_values_through_the_runners_are_named_before_anything_runs(cubic):
    calls = {"n": 0}
    original = cubic.loss_and_grad

    def counted(theta):
        calls["n"] += 1
        return original(theta)

    cubic.loss_and_grad = counted
    with pytest.raises(ValueError, match="eig_tol"):
        compare(cubic, lr=0.1, steps=2, flows="pf_topk", eig_tol=-1.0)
    with pytest.raises(ValueError, match="chunk"):
        integrate(cubic, lr=0.1, steps=2, chunk=0)
    assert calls["n"] == 0


def test_compare_and_local_error_forward_the_keywords(cubic):
    cmp = compare(cubic, lr=0.1, steps=4, flows=("gf", "pf_topk"), method="rk4", step_size=0.005, k=2,
                  tracker=EigenTracker(k=2, method="dense"), states="none")
    assert cmp.flows["gf"].states is None and len(cmp.drift["gf"]) == 5
    assert cmp.flows["pf_topk"].config["method"] == "rk4"
    err = local_error(cubic, lr=0.05, flow="igr", method="dopri8", rtol=1e-12, atol=1e-14)
    assert err == pytest.approx(local_error(cubic, lr=0.05, flow="igr", rtol=1e-12, atol=1e-14), rel=1e-6)
    assert err > 0 and torch.isfinite(torch.tensor(err))


def test_fixed_step_methods_step_onto_every_output_time(cubic):
    """A step that does not divide the output interval: the interval is cut into equal steps (none longer than
    step_size), so each output is an RK4 state, not torchdiffeq's linear interpolation between two steps."""
    theta = torch.tensor([0.3, -0.2], dtype=torch.float64)
    lr = 0.1
    coarse = integrate(cubic, theta, lr, 3, method="rk4", step_size=0.04)  # 0.1 = 3 steps of 0.0333
    exact = integrate(cubic, theta, lr, 3, method="rk4", step_size=lr / 3)
    np.testing.assert_array_equal(coarse.state_matrix(), exact.state_matrix())
    uneven = integrate(cubic, theta, lr, flow="gf", times=[0.0, 0.05, 0.17], method="euler", step_size=0.05)
    by_hand = theta.clone()
    for dt in (0.05, 0.04, 0.04, 0.04):  # [0, 0.05]: one step; [0.05, 0.17]: three of 0.04 (0.06 > step_size)
        by_hand = by_hand - dt * cubic.grad(by_hand)
    np.testing.assert_allclose(uneven.state_matrix()[-1], by_hand.numpy(), rtol=1e-14)
