"""GD's second-order midpoints on quadratics (closed forms) and Gaussian smoothing in time."""
import numpy as np
import pytest
import torch

from analysis.monitors.midpoint import Midpoints
from flows import Objective, gradient_descent
from flows.records.smoothing import gaussian_smoothed


@pytest.mark.parametrize("h_lambda", [2.0, 1.9, 0.5])
def test_midpoints_of_gd_on_a_quadratic(h_lambda):
    # θₙ₊₁ = rθₙ with r = 1 − hλ: θ̄ₙ = (1/r + 2 + r)/4·θₙ = (1 + r)²/(4r)·θₙ, E(θ̄ₙ) = ½λ·((1 + r)²/(4r))²·θₙ²
    lam, h = 4.0, h_lambda / 4.0
    obj = Objective.from_function(lambda th: 0.5 * lam * (th ** 2).sum(), 1)
    traj = gradient_descent(obj, torch.tensor([0.3], dtype=torch.float64), h, 12, callbacks=[Midpoints()])
    r = 1 - h_lambda
    theta = 0.3 * r ** np.arange(13)
    expect = 0.5 * lam * ((1 + r) ** 2 / (4 * r) * theta) ** 2
    got = traj.metric("midpoint_loss")
    assert np.isnan(got[0]) and np.isnan(got[-1])
    np.testing.assert_allclose(got[1:-1], expect[1:-1], rtol=1e-12, atol=1e-15)
    if h_lambda == 2.0:  # a pure period-2 oscillation: the midpoint is the centre, loss 0, GD's loss constant
        assert np.all(got[1:-1] < 1e-25) and np.allclose(traj.losses, 0.5 * lam * 0.09)
        np.testing.assert_allclose(traj.metric("midpoint_distance")[1:-1], 0.3)


def test_gaussian_smoothing():
    np.testing.assert_allclose(gaussian_smoothed(np.full(50, 2.5), 3.0), 2.5)
    alternating = gaussian_smoothed(1.0 + (-1.0) ** np.arange(200), 4.0)
    # a period-2 oscillation averages out (up to scipy's kernel truncation at 4σ: 1.8e-5 measured)
    assert np.abs(alternating[20:-20] - 1.0).max() < 1e-4
    with_gap = np.full(30, 1.0)
    with_gap[10] = np.nan
    np.testing.assert_allclose(gaussian_smoothed(with_gap, 2.0), 1.0)  # NaNs are left out, not spread
    with pytest.raises(ValueError, match="sigma"):
        gaussian_smoothed(np.ones(3), 0.0)
