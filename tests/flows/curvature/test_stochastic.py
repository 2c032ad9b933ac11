"""Mini-batch estimators against exhaustive oracles on a small data set, and SGD through the GD runner."""
import itertools

import numpy as np
import pytest
import torch
from torch import nn

from analysis.controllers.stochastic import SGDController
from analysis.monitors.sharpness import BatchSharpness
from flows import Objective, gradient_descent
from flows.curvature.stochastic import (
    MiniBatches,
    batch_sharpness,
    gradient_noise_scale,
    minibatch_sharpness,
    piece_grad_and_hvp,
)


def _setup(n=10, seed=0):
    """A softplus MLP with a Huber loss (no experiment uses this pair)."""
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 3, generator=gen, dtype=torch.float64), torch.randn(n, 2, generator=gen, dtype=torch.float64)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 5), nn.Softplus(), nn.Linear(5, 2)).double()
    return model, nn.HuberLoss(), (x, y)


def _batch_objective(model, loss, data, index):
    x, y = data
    return Objective.from_module(model, loss, (x[list(index)], y[list(index)]))


def test_piece_derivatives_are_the_batchs_own():
    model, loss, data = _setup()
    batches = MiniBatches(model, loss, data, 4, seed=1)
    obj = batches.draw(3)
    theta = obj.theta0
    v = torch.randn(obj.dim, dtype=torch.float64)
    for i in range(3):
        x_b, y_b = obj.module_parts.batches[i]
        direct = Objective.from_module(model, loss, (x_b, y_b))
        g, hg = piece_grad_and_hvp(obj, i, theta)
        torch.testing.assert_close(g, direct.grad(theta))
        torch.testing.assert_close(hg, direct.hvp(theta, direct.grad(theta)))
        _, hv = piece_grad_and_hvp(obj, i, theta, v)
        torch.testing.assert_close(hv, direct.hvp(theta, v))


def test_batch_sharpness_and_noise_scale_against_the_exhaustive_mean():
    """With N = 8 and b = 3 all 56 batches are enumerable: the estimates agree with the exact expectations
    within a few of their standard errors."""
    model, loss, data = _setup(8)
    full = Objective.from_module(model, loss, data)
    theta = full.theta0
    exact_bs, exact_noise = [], []
    g_full = full.grad(theta)
    for index in itertools.combinations(range(8), 3):
        obj = _batch_objective(model, loss, data, index)
        g = obj.grad(theta)
        exact_bs.append(float(g @ obj.hvp(theta, g)) / float(g @ g))
        exact_noise.append(3 * 8 / 5 * float((g - g_full) @ (g - g_full)) / float(g_full @ g_full))
    batches = MiniBatches(model, loss, data, 3, seed=2)
    est = batch_sharpness(batches, theta, rel_error=0.01, max_samples=400)
    assert abs(est.mean - np.mean(exact_bs)) <= 4 * est.standard_error
    assert est.hvps == est.samples
    noise = gradient_noise_scale(batches, theta, g_full, rel_error=0.02, max_samples=400)
    assert abs(noise.mean - np.mean(exact_noise)) <= 4 * noise.standard_error
    # per-example noise: tr Σ = (1/(N−1)) Σᵢ ‖gᵢ − G‖² (the unbiased covariance the b = 1 estimator targets)
    per_example = [_batch_objective(model, loss, data, (i,)).grad(theta) for i in range(8)]
    tr_sigma = sum(float((gi - g_full) @ (gi - g_full)) for gi in per_example) / 7
    assert np.mean(exact_noise) == pytest.approx(tr_sigma / float(g_full @ g_full), rel=1e-10)


def test_minibatch_sharpness_is_the_mean_batch_lambda_max():
    model, loss, data = _setup(8)
    theta = Objective.from_module(model, loss, data).theta0
    exact = [float(torch.linalg.eigvalsh(_batch_objective(model, loss, data, idx).hessian(theta))[-1])
             for idx in itertools.combinations(range(8), 3)]
    est = minibatch_sharpness(MiniBatches(model, loss, data, 3, seed=4), theta, rel_error=0.02, max_samples=200)
    assert abs(est.mean - np.mean(exact)) <= 4 * est.standard_error


def test_the_estimator_stops_at_the_requested_error_and_says_when_it_could_not():
    model, loss, data = _setup(12)
    theta = Objective.from_module(model, loss, data).theta0
    batches = MiniBatches(model, loss, data, 4)
    est = batch_sharpness(batches, theta, rel_error=0.05)
    assert est.converged and est.standard_error <= 0.05 * abs(est.mean) and est.samples >= 8
    capped = batch_sharpness(batches, theta, rel_error=1e-6, max_samples=10)
    assert not capped.converged and capped.samples == 10


def test_sgd_through_the_runner_is_plain_sgd():
    model, loss, data = _setup(12)
    batches = MiniBatches(model, loss, data, 4, seed=5)
    obj = Objective.from_module(model, loss, data)
    ctrl = SGDController(batches)
    traj = gradient_descent(obj, obj.theta0, 0.1, 7, controller=ctrl, callbacks=[BatchSharpness(batches, every=3)])
    assert ctrl.epoch_ends == [2, 5]  # 3 batches per epoch
    replay = MiniBatches(model, loss, data, 4, seed=5)
    theta = obj.theta0.clone()
    for step in range(7):
        if step % 3 == 0:
            epoch = replay.epoch()
        g, _ = piece_grad_and_hvp(epoch, step % 3, theta)
        theta = theta - 0.1 * g
        np.testing.assert_allclose(traj.state_matrix()[step + 1], theta.numpy(), rtol=1e-12, atol=1e-14)
    assert np.isfinite(traj.metric("batch_sharpness")[[0, 3, 6]]).all()


def test_the_callback_records_every_measure_with_its_error():
    model, loss, data = _setup(12)
    batches = MiniBatches(model, loss, data, 4, seed=6)
    obj = Objective.from_module(model, loss, data)
    probe = BatchSharpness(batches, every=2, rel_error=0.5, max_samples=16,
                           measures=("batch_sharpness", "minibatch_sharpness", "gradient_noise_scale"))
    traj = gradient_descent(obj, obj.theta0, 0.1, 3, callbacks=[probe])
    for name in ("batch_sharpness", "minibatch_sharpness", "gradient_noise_scale"):
        values, errors = traj.metric(name), traj.metric(f"{name}_se")
        assert np.isfinite(values[[0, 2]]).all() and np.isnan(values[[1, 3]]).all() and (errors[[0, 2]] > 0).all()
    with pytest.raises(ValueError, match="measures must be a non-empty subset"):
        BatchSharpness(batches, measures=("hessian_trace",))


def test_bad_batch_input_is_named():
    model, loss, data = _setup(6)
    with pytest.raises(ValueError, match=r"batch_size must be an int in \[1, 6\]"):
        MiniBatches(model, loss, data, 7)
    batches = MiniBatches(model, loss, data, 6)
    theta = Objective.from_module(model, loss, data).theta0
    with pytest.raises(ValueError, match="batch_size must be < N"):
        gradient_noise_scale(batches, theta, theta)
    with pytest.raises(ValueError, match="rel_error"):
        batch_sharpness(batches, theta, rel_error=0)
