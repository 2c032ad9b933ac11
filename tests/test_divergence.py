"""Divergence is an outcome on a real network: event, partial trajectory saved, normal return."""
import numpy as np

from analysis import Sharpness
from experiments.zoo.datasets import digits_objective
from flows import Trajectory, gradient_descent, integrate


def test_gd_and_flow_diverge_cleanly_on_digits(tmp_path):
    obj, _, _ = digits_objective(n_train=200, widths=(64, 32, 10))
    traj = gradient_descent(obj, lr=50.0, steps=200, callbacks=[Sharpness(every=5)])
    assert traj.status == "diverged"
    event = traj.events[-1]
    assert event["kind"] == "divergence" and event["last_finite_step"] == event["step"] - 1
    assert 1 <= len(traj) < 201 and np.isfinite(traj.losses[:-1]).all()
    back = Trajectory.load(traj.save(tmp_path / "diverged"))
    assert back.status == "diverged" and len(back) == len(traj)
    np.testing.assert_array_equal(back.states, traj.states)
    pf = integrate(obj, flow="pf_topk", lr=50.0, steps=20, k=1, method="rk4", step_size=5.0, max_loss=1e6)
    assert pf.status == "diverged" and pf.events[-1]["kind"] == "divergence" and len(pf) >= 1
