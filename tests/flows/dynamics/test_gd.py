"""The GD runner: hand iteration with momentum, divergence as an outcome, the controller protocol."""

import numpy as np
import pytest
import torch

from flows import Controller, StepDecision, gradient_descent
from flows.objective import toys


def test_gd_matches_hand_iteration_with_momentum():
    obj = toys.get("cubic")
    h, beta = 0.2, 0.5
    traj = gradient_descent(obj, lr=h, steps=6, momentum=beta)
    theta, v = obj.theta0.clone(), torch.zeros(2, dtype=torch.float64)
    for n in range(7):
        np.testing.assert_allclose(traj.states[n], theta.numpy(), rtol=1e-14)
        v = beta * v + toys.spec("cubic").grad(theta)
        theta = theta - h * v
    np.testing.assert_allclose(traj.times, h * np.arange(7))
    assert np.all(traj.metric("lr")[:-1] == h)


def test_divergence_is_an_outcome():
    obj = toys.get("pf-quadratic")
    traj = gradient_descent(obj, lr=1.05, steps=500, max_loss=1e3)
    assert traj.status == "diverged"
    ev = [e for e in traj.events if e["kind"] == "divergence"]
    assert len(ev) == 1 and ev[0]["step"] == len(traj) - 1
    assert np.all(np.isfinite(traj.losses[:-1])) and traj.losses[-2] <= 1e3
    overflow = gradient_descent(obj, lr=1.05, steps=20000)  # runs to inf: stops, does not crash
    assert overflow.status == "diverged" and len(overflow) < 20001


def test_controller_protocol():
    class Halving(Controller):
        def decide(self, ctx):
            return StepDecision(ctx.lr / 2 ** ctx.step, info={"note": float(ctx.step)})

    obj = toys.get("cubic")
    traj = gradient_descent(obj, lr=0.4, steps=3, controller=Halving())
    np.testing.assert_allclose(traj.metric("lr")[:3], [0.4, 0.2, 0.1])
    np.testing.assert_allclose(traj.times, [0.0, 0.4, 0.6, 0.7])
    np.testing.assert_allclose(traj.metric("note")[:3], [0.0, 1.0, 2.0])
    with pytest.raises(TypeError, match="decide"):
        gradient_descent(obj, lr=0.1, steps=1, controller=object())

    class DuckTyped:  # decide alone: the runner names what is missing instead of probing with getattr
        def decide(self, ctx):
            return 0.1

    with pytest.raises(TypeError, match="lacks owns_momentum, evaluations, hyperparameters, wants_hessian"):
        gradient_descent(obj, lr=0.1, steps=1, controller=DuckTyped())


def test_callbacks_get_a_frozen_context_the_decision_and_the_recorder():
    import dataclasses

    obj = toys.get("cubic")
    seen = []

    def record(ctx, decision, rec):
        with pytest.raises(dataclasses.FrozenInstanceError):
            ctx.lr = 1.0
        rec.log("doubled_rate", 2 * decision.lr)
        seen.append((ctx.step, ctx.lr, decision.lr, rec.row))

    class Growing(Controller):
        def decide(self, ctx):
            return 0.1 * (ctx.step + 1)

    traj = gradient_descent(obj, lr=0.1, steps=3, controller=Growing(), callbacks=[record])
    assert [s[0] for s in seen] == [0, 1, 2, 3] and [s[3] for s in seen] == [0, 1, 2, 3]
    assert all(s[1] == 0.1 for s in seen)  # the runner's rate, unchanged after the decision
    np.testing.assert_allclose([s[2] for s in seen], [0.1, 0.2, 0.3, 0.3])  # the last row: the last rate used
    np.testing.assert_allclose(traj.metric("doubled_rate"), [0.2, 0.4, 0.6, 0.6])
    with pytest.raises(TypeError, match=r"must take \(ctx, decision, recorder\)"):
        gradient_descent(obj, lr=0.1, steps=1, callbacks=[lambda ctx, rec: None])
