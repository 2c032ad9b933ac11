"""Preconditioned spectra against dense float64 oracles, and the optimizer runner against torch.optim itself."""
import numpy as np
import pytest
import torch
from torch import nn

from analysis import OptimizerController, PreconditionedSharpness
from flows import (
    EigenTracker,
    Objective,
    gradient_descent,
    objective_preconditioner,
    preconditioner_from,
    sharpness,
    stability_threshold,
    top_eigenpairs,
)


def _dense_hessian(obj, model, data, theta):
    """The oracle: torch.func.hessian of the loss written out with functional_call (independent of Objective)."""
    x, y = data
    names = obj.layout.names

    def loss(flat):
        params = dict(zip(names, obj.layout.split(flat)))
        return nn.functional.cross_entropy(torch.func.functional_call(model, params, (x,)), y)

    return torch.func.hessian(loss)(theta)


def _mlp(width=24, seed=0):
    """A GELU MLP with cross-entropy (no experiment uses this pair): D = 6·w + w + w·3 + 3."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=gen)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, width), nn.GELU(), nn.Linear(width, 3)).double()
    return Objective.from_module(model, nn.CrossEntropyLoss(), (x, y)), model, (x, y)


@pytest.mark.parametrize("method,width", [("dense", 8), ("lanczos", 60)])
def test_preconditioned_pairs_are_those_of_p_inverse_h(method, width):
    obj, model, data = _mlp(width)
    theta = obj.theta0
    p = torch.rand(obj.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3 + 0.05
    h = _dense_hessian(obj, model, data, theta)
    s = h / p.sqrt()[:, None] / p.sqrt()[None, :]
    expect = torch.linalg.eigvalsh(s).flip(0)[:3]
    pairs = top_eigenpairs(obj, theta, 3, tol=1e-8, method=method, preconditioner=p)
    torch.testing.assert_close(pairs.values, expect, rtol=1e-6, atol=1e-9)
    for i in range(3):  # P^{-1/2} w is an eigenvector of P⁻¹H
        v = pairs.vectors[:, i] / p.sqrt()
        torch.testing.assert_close(torch.linalg.solve(torch.diag(p), h @ v), pairs.values[i] * v, rtol=1e-5,
                                   atol=1e-8)
    assert sharpness(obj, theta, preconditioner=2.0) == pytest.approx(
        float(torch.linalg.eigvalsh(h)[-1]) / 2, rel=1e-6)


def test_a_tracker_follows_a_changing_preconditioner():
    obj, model, data = _mlp(60)
    tracker = EigenTracker(k=2, tol=1e-6)
    h = _dense_hessian(obj, model, data, obj.theta0)
    for scale in (1.0, 1.1, 1.3):
        p = torch.linspace(0.5, 2.0, obj.dim, dtype=torch.float64) * scale
        got = tracker.update(obj, obj.theta0, p).values
        expect = torch.linalg.eigvalsh(h / p.sqrt()[:, None] / p.sqrt()[None, :]).flip(0)[:2]
        torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("bad,needle", [(torch.ones(3), "shape"), (-1.0, "positive"), (0.0, "positive"),
                                        ("x", "positive number or a tensor")])
def test_bad_preconditioners_are_named(bad, needle):
    obj, _, _ = _mlp(8)
    with pytest.raises(ValueError, match=f"preconditioner.*{needle}"):
        top_eigenpairs(obj, obj.theta0, 1, preconditioner=bad)
    p = torch.ones(obj.dim, dtype=torch.float64)
    p[3] = 0.0
    with pytest.raises(ValueError, match="1 of .* are not"):
        top_eigenpairs(obj, obj.theta0, 1, preconditioner=p)


@pytest.mark.parametrize("cls,kw", [(torch.optim.Adam, {"lr": 0.01, "betas": (0.9, 0.99)}),
                                    (torch.optim.RMSprop, {"lr": 0.003, "alpha": 0.9, "momentum": 0.5}),
                                    (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
                                    (torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True})])
def test_the_runner_takes_torch_optims_own_steps(cls, kw):
    """gradient_descent with OptimizerController reproduces an ordinary training loop on the module."""
    obj, model, (x, y) = _mlp(10)
    traj = gradient_descent(obj, obj.theta0, kw["lr"], 15, controller=OptimizerController(cls, **kw))
    opt = cls(model.parameters(), **kw)
    thetas = []
    for _ in range(16):
        thetas.append(torch.cat([q.detach().reshape(-1) for q in model.parameters()]))
        opt.zero_grad()
        nn.CrossEntropyLoss()(model(x), y).backward()
        opt.step()
    np.testing.assert_allclose(traj.state_matrix(), torch.stack(thetas).numpy(), rtol=1e-10, atol=1e-12)
    # and the preconditioner read from the user's own optimizer matches the runner's, in the objective's order
    ctrl_p = None
    ctrl = OptimizerController(cls, **kw)
    gradient_descent(obj, obj.theta0, kw["lr"], 16, controller=ctrl)
    ctrl_p = ctrl.preconditioner()
    torch.testing.assert_close(objective_preconditioner(obj, opt), ctrl_p, rtol=1e-9, atol=1e-12)


def test_adams_preconditioner_by_hand_and_the_thresholds():
    param = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = torch.optim.Adam([param], lr=0.1, betas=(0.8, 0.9), eps=1e-3)
    grads = [torch.tensor([0.5, 1.0], dtype=torch.float64), torch.tensor([-1.0, 2.0], dtype=torch.float64)]
    v = torch.zeros(2, dtype=torch.float64)
    for g in grads:
        param.grad = g.clone()
        opt.step()
        v = 0.9 * v + 0.1 * g ** 2
    expect = (v / (1 - 0.9 ** 2)).sqrt() + 1e-3
    torch.testing.assert_close(preconditioner_from(opt), expect)
    assert stability_threshold(opt) == pytest.approx((2 + 2 * 0.8) / (0.2 * 0.1))
    sgd = torch.optim.SGD([param], lr=0.1, momentum=0.9)
    assert stability_threshold(sgd) == pytest.approx(2 * 1.9 / 0.1)
    nesterov = torch.optim.SGD([param], lr=0.1, momentum=0.5, nesterov=True)
    assert stability_threshold(nesterov) == pytest.approx(2 * 1.5 / (2.0 * 0.1))


def test_optimizer_misuse_is_named():
    obj, model, _ = _mlp(8)
    with pytest.raises(ValueError, match="optimizer_class must be one of"):
        OptimizerController(torch.optim.LBFGS, lr=0.1)
    with pytest.raises(ValueError, match="lr must be given"):
        OptimizerController(torch.optim.Adam)
    with pytest.raises(ValueError, match="momentum must be 0"):
        gradient_descent(obj, obj.theta0, 0.1, 2, controller=OptimizerController(torch.optim.Adam, lr=0.1),
                         momentum=0.5)
    fresh = torch.optim.Adam(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="no optimizer state"):
        preconditioner_from(fresh)
    other = torch.optim.Adam([nn.Parameter(torch.zeros(3))], lr=0.1)
    with pytest.raises(ValueError, match="another parameter set"):
        preconditioner_from(other, model.parameters())


def test_full_batch_adam_records_its_preconditioned_sharpness():
    """Adam at a large rate on the GELU/cross-entropy MLP: λ₁(P⁻¹H) is recorded against 38/h every 4th step
    (not at the last row, which took no step), and sharpness with the runner's P matches the dense oracle."""
    obj, model, data = _mlp(10)
    ctrl = OptimizerController(torch.optim.Adam, lr=0.02)
    traj = gradient_descent(obj, obj.theta0, 0.02, 12, controller=ctrl,
                            callbacks=[PreconditionedSharpness(ctrl, every=4)])
    got = traj.metric("preconditioned_sharpness")
    assert np.isfinite(got[[0, 4, 8]]).all() and np.isnan(got[[1, 2, 3, 12]]).all()
    np.testing.assert_allclose(traj.metric("stability_threshold")[8], 38 / 0.02)
    # the P after the last step is the one step 11 divided by; check the oracle for it at θ₁₁
    p = ctrl.preconditioner()
    theta11 = torch.as_tensor(traj.state_matrix()[11])
    h11 = _dense_hessian(obj, model, data, theta11)
    expect = float(torch.linalg.eigvalsh(h11 / p.sqrt()[:, None] / p.sqrt()[None, :])[-1])
    assert sharpness(obj, theta11, preconditioner=p, tol=1e-8) == pytest.approx(expect, rel=1e-6)
