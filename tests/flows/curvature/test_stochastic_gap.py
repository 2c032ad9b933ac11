"""The stochastic-sharpness-gap pieces and the momentum batch-sharpness thresholds, against exhaustive and
finite-difference oracles on a model no experiment uses (a softplus MLP with a Huber loss, float64)."""
import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from analysis import EoSDetector, SGDController, Sharpness, StepBatchSharpness, StochasticGap
from analysis.monitors.sharpness import BatchSharpness
from flows import Objective, batch_sharpness_threshold, gradient_descent
from flows.curvature.stochastic import (
    MiniBatches,
    batch_sharpness,
    piece_grad_and_hvp,
    projected_noise_variance,
    self_stabilization,
    stochastic_sharpness_gap,
)


def _setup(n=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 3, generator=gen, dtype=torch.float64), torch.randn(n, 2, generator=gen, dtype=torch.float64)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 5), nn.Softplus(), nn.Linear(5, 2)).double()
    return model, nn.HuberLoss(), (x, y)


def _grad(model, loss, data, index, theta):
    x, y = data
    return Objective.from_module(model, loss, (x[list(index)], y[list(index)])).grad(theta)


def test_projected_noise_variance_against_the_exhaustive_variance_and_its_closed_form():
    """N = 8, b = 3: all 56 batches. The estimate is within 4 standard errors of Var_B(uᵀg_B), which equals
    (uᵀΣu/b)(N − b)/N with Σ the per-example covariance (divisor N − 1) to 1e-12."""
    model, loss, data = _setup(8)
    full = Objective.from_module(model, loss, data)
    theta = full.theta0
    g_full = full.grad(theta)
    u = torch.randn(full.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    u = u / u.norm()
    projections = [float(u @ _grad(model, loss, data, idx, theta)) for idx in itertools.combinations(range(8), 3)]
    exact = float(np.mean((np.array(projections) - float(u @ g_full)) ** 2))
    per_example = np.array([float(u @ _grad(model, loss, data, (i,), theta)) for i in range(8)])
    assert exact == pytest.approx(per_example.var(ddof=1) / 3 * 5 / 8, rel=1e-12)
    est = projected_noise_variance(MiniBatches(model, loss, data, 3, seed=1), theta, 5 * u, g_full, rel_error=0.03,
                                   max_samples=2000)
    assert est.converged and abs(est.mean - exact) <= 4 * est.standard_error
    assert projected_noise_variance(MiniBatches(model, loss, data, 8), theta, u, g_full).mean == 0.0


def test_ratio_of_means_is_that_of_the_batches_drawn():
    """Replaying the estimator's batches (same seed): E[gᵀHg]/E[‖g‖²] over them to 1e-12, and a different number
    from the mean of the ratios."""
    model, loss, data = _setup(8)
    theta = Objective.from_module(model, loss, data).theta0
    est = batch_sharpness(MiniBatches(model, loss, data, 3, seed=2), theta, rel_error=0.02, max_samples=64)
    drawn = MiniBatches(model, loss, data, 3, seed=2).draw(est.samples)
    num, den = [], []
    for i in range(est.samples):
        g, hg = piece_grad_and_hvp(drawn, i, theta)
        num.append(float(g @ hg))
        den.append(float(g @ g))
    assert est.mean == pytest.approx(np.mean(np.array(num) / np.array(den)), rel=1e-12)
    assert est.extras["ratio_of_means"] == pytest.approx(np.mean(num) / np.mean(den), rel=1e-12)
    assert est.extras["ratio_of_means"] != pytest.approx(est.mean, rel=1e-4)


def test_self_stabilization_rates_against_central_differences_of_the_dense_sharpness():
    """∇S against (λ₁(θ + εv) − λ₁(θ − εv))/2ε along random v, and α = −g_⊥ᵀ∇S against −dλ₁/dε along −g_⊥."""
    model, loss, data = _setup(8)
    obj = Objective.from_module(model, loss, data)
    theta = obj.theta0

    def top(t):
        values, vectors = torch.linalg.eigh(obj.hessian(t))
        return float(values[-1]), vectors[:, -1]

    lam, u = top(theta)
    alpha, beta, grad_s = self_stabilization(obj, theta, -3 * u)  # any scale and sign of u
    eps = 1e-5
    for seed in range(3):
        v = torch.randn(obj.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        fd = (top(theta + eps * v)[0] - top(theta - eps * v)[0]) / (2 * eps)
        assert float(grad_s @ v) == pytest.approx(fd, rel=1e-6, abs=1e-9)
    g = obj.grad(theta)
    across = g - (u @ g) * u  # α is the sharpening rate along the gradient's part across u
    fd_alpha = -(top(theta + eps * across)[0] - top(theta - eps * across)[0]) / (2 * eps)
    assert alpha == pytest.approx(fd_alpha, rel=1e-6)
    assert self_stabilization(obj, theta, u, across)[0] == pytest.approx(alpha, rel=1e-12)
    assert beta == pytest.approx(float(grad_s @ grad_s), rel=1e-14)


def test_the_gap_closed_form_by_hand():
    assert stochastic_sharpness_gap(0.1, alpha=2.0, beta=8.0, noise_variance=0.5) == pytest.approx(0.1 * 8 * 0.5 / 8)
    assert math.isnan(stochastic_sharpness_gap(0.1, alpha=-1.0, beta=8.0, noise_variance=0.5))
    with pytest.raises(ValueError, match="lr must be > 0"):
        stochastic_sharpness_gap(0.0, 1.0, 1.0, 1.0)


def test_step_batch_sharpness_is_the_used_batchs_and_the_gap_callback_records_its_pieces():
    model, loss, data = _setup(12)
    obj = Objective.from_module(model, loss, data)
    ctrl = SGDController(MiniBatches(model, loss, data, 4, seed=5))
    monitor = Sharpness(every=2)
    gap = StochasticGap(monitor, MiniBatches(model, loss, data, 4, seed=6), every=2, rel_error=0.5, max_samples=16)
    traj = gradient_descent(obj, obj.theta0, 0.1, 5, controller=ctrl,
                            callbacks=[monitor, gap, StepBatchSharpness(ctrl, every=1)])
    replay = MiniBatches(model, loss, data, 4, seed=5)
    states = traj.state_matrix()
    for step in range(5):
        if step % 3 == 0:
            epoch = replay.epoch()
        theta = torch.as_tensor(states[step])
        g, hg = piece_grad_and_hvp(epoch, step % 3, theta)
        assert traj.metric("step_batch_sharpness")[step] == pytest.approx(float(g @ hg) / float(g @ g), rel=1e-12)
    assert np.isnan(traj.metric("step_batch_sharpness")[5])  # the last row takes no step
    for name in ("projected_noise_variance", "sharpening_rate", "self_stabilization"):
        assert np.isfinite(traj.metric(name)[[0, 2, 4]]).all() and np.isnan(traj.metric(name)[[1, 3]]).all()
    row = 2
    expected = stochastic_sharpness_gap(0.1, traj.metric("sharpening_rate")[row],
                                        traj.metric("self_stabilization")[row],
                                        traj.metric("projected_noise_variance")[row])
    np.testing.assert_equal(traj.metric("predicted_gap")[row], expected)
    with pytest.raises(ValueError, match="multiple of the Sharpness monitor's every=2"):
        StochasticGap(monitor, ctrl.batches, every=3)
    with pytest.raises(TypeError, match="controller must be an SGDController"):
        StepBatchSharpness(object())


def test_momentum_batch_sharpness_thresholds_and_the_detector_regimes():
    assert batch_sharpness_threshold(0.2) == pytest.approx(10.0)
    assert batch_sharpness_threshold(0.2, 0.5, "large") == pytest.approx(15.0)
    assert batch_sharpness_threshold(0.2, 0.5, "small") == pytest.approx(5.0)
    assert batch_sharpness_threshold(0.1, 0.9, "small") == pytest.approx(2.0)
    with pytest.raises(ValueError, match=r"batch must be one of \('large', 'small'\)"):
        batch_sharpness_threshold(0.2, 0.5, "medium")
    model, loss, data = _setup(12)
    obj = Objective.from_module(model, loss, data)
    ctrl = SGDController(MiniBatches(model, loss, data, 4, seed=5))
    traj = gradient_descent(obj, obj.theta0, 0.5, 6, momentum=0.5, controller=ctrl, states="none",
                            callbacks=[BatchSharpness(MiniBatches(model, loss, data, 4, seed=7), every=2,
                                                      rel_error=0.5, max_samples=16)])
    bs = traj.metric("batch_sharpness")
    small, large = EoSDetector().detect(traj, batch="small"), EoSDetector().detect(traj, batch="large")
    assert small.threshold == pytest.approx(2 * 0.5 / 0.5) and large.threshold == pytest.approx(2 * 1.5 / 0.5)
    measured = bs[np.isfinite(bs)]
    assert (small.first_crossing is not None) == bool((measured >= 2.0).any())
    with pytest.raises(ValueError, match="batch must be one of"):
        EoSDetector().detect(traj, batch="tiny")
