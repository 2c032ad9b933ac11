"""The helpers of ``landscape-digits``: the moments chosen from the detector, the plane's directions and grid."""
import numpy as np
import pytest
import torch

from experiments.drift.landscape_digits import choose_moments, plane_directions, square_grid


def test_moments_are_half_way_to_the_crossing_the_crossing_and_half_way_to_the_end():
    assert choose_moments(280, 600, 10) == {"before crossing": 140, "at crossing": 280, "hovering": 440}
    assert choose_moments(283, 600, 10)["at crossing"] == 280  # on the measurement grid
    assert choose_moments(4, 600, 10)["before crossing"] == 10  # never step 0 (θ₀ is not a moment of the run)
    assert choose_moments(None, 600, 10) == {"before crossing": 150, "at crossing": 300, "hovering": 450}


def test_square_grid_has_equal_spans_and_covers_the_points_with_the_margin():
    points = np.array([[0.0, -3.0], [0.01, 1.0], [0.005, 0.5]])
    a, b = square_grid(points, 0.25, 9)
    assert a[-1] - a[0] == pytest.approx(b[-1] - b[0]) == pytest.approx(4.0 * 1.5)
    assert a[0] < 0.0 and a[-1] > 0.01 and b[0] == pytest.approx(-4.0) and b[-1] == pytest.approx(2.0)


def test_plane_directions_are_orthonormal_and_span_u1_and_the_gradient(mlp_objective):
    theta = mlp_objective.theta0
    g = mlp_objective.grad(theta)
    u1 = torch.randn(mlp_objective.dim, dtype=theta.dtype, generator=torch.Generator().manual_seed(1))
    d1, d2 = plane_directions(mlp_objective, theta, u1)
    basis = torch.stack([d1, d2], dim=1)
    torch.testing.assert_close(basis.T @ basis, torch.eye(2, dtype=theta.dtype), rtol=0, atol=1e-10)
    residual = g - basis @ (basis.T @ g)
    assert float(torch.linalg.vector_norm(residual)) < 1e-10 * float(torch.linalg.vector_norm(g))
    with pytest.raises(ValueError, match="parallel"):
        plane_directions(mlp_objective, theta, 2.0 * g)
