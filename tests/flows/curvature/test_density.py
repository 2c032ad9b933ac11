"""Stochastic Lanczos quadrature against dense float64 eigendecompositions."""
import numpy as np
import pytest
import torch

from flows.curvature.density import lanczos_quadrature, spectral_density
from flows.curvature.operators import MatrixOperator


def test_full_lanczos_nodes_are_the_eigenvalues(constructed):
    lam = np.r_[np.linspace(-2, 3, 45), [7.0, 9.0, 12.0, 20.0, 40.0]]
    density = lanczos_quadrature(MatrixOperator(constructed(lam)), starts=3, steps=50)
    np.testing.assert_allclose(density.weights.sum(axis=1), 1.0, rtol=1e-10)
    heavy = density.nodes[density.weights > 1e-10]
    assert np.abs(heavy[:, None] - lam[None, :]).min(axis=1).max() < 1e-8
    assert density.matvecs <= 3 * 50


def test_moments_estimate_the_normalised_traces_of_powers(mlp_objective):
    """tr(Hⁿ)/D from 30 probes × 20 steps (exact per probe up to n = 39) within 4 standard errors."""
    theta = mlp_objective.theta0
    h = mlp_objective.hessian(theta)
    density = spectral_density(mlp_objective, theta, starts=30, steps=20, seed=3)
    assert density.matvecs == 30 * 20
    for n in (1, 2, 3, 4):
        truth = float(torch.trace(torch.linalg.matrix_power(h, n))) / mlp_objective.dim
        estimate, error = density.moment(n)
        assert abs(estimate - truth) < 4 * error + 1e-12, (n, estimate, truth, error)


def test_smoothed_density_is_a_density(cnn_objective):
    density = spectral_density(cnn_objective, cnn_objective.theta0, starts=4, steps=30)
    lo, hi = density.nodes.min(), density.nodes.max()
    width = density.default_width()
    grid = np.linspace(lo - 10 * width, hi + 10 * width, 4000)
    phi = density.smoothed(grid)
    assert phi.min() >= 0
    assert abs(np.trapezoid(phi, grid) - 1.0) < 1e-3
    with pytest.raises(ValueError, match="width must be > 0"):
        density.smoothed(grid, width=0.0)


def test_bad_arguments_are_named():
    op = MatrixOperator(torch.eye(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="starts"):
        lanczos_quadrature(op, starts=0)
    with pytest.raises(ValueError, match="steps"):
        lanczos_quadrature(op, steps=-1)
    identity = lanczos_quadrature(op, starts=2, steps=5)  # an invariant subspace at once: exact, no waste
    np.testing.assert_allclose(identity.nodes[identity.weights > 1e-12], 1.0)
