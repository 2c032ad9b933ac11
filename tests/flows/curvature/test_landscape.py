"""Loss planes against direct evaluation, exact projections with residuals, filter normalisation, bad input."""
import numpy as np
import pytest
import torch

from flows.curvature.landscape import (
    batched_loss,
    filter_normalized_direction,
    interpolate,
    loss_plane,
    plane_coordinates,
)


@pytest.mark.parametrize("fixture", ["mlp_objective", "cnn_objective"])
def test_plane_values_are_the_loss_at_each_point(fixture, request):
    obj = request.getfixturevalue(fixture)
    theta = obj.theta0
    gen = torch.Generator().manual_seed(0)
    d1, d2 = (torch.randn(obj.dim, generator=gen, dtype=torch.float64) for _ in range(2))
    alphas, betas = np.linspace(-1, 1, 5), np.linspace(-0.5, 0.5, 4)
    plane = loss_plane(obj, theta, d1, d2, alphas, betas, chunk=3)
    assert plane.values.shape == (5, 4)
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            direct = float(obj.loss(theta + a * d1 + b * d2))
            assert plane.values[i, j] == pytest.approx(direct, rel=1e-12, abs=1e-14)


def test_projection_is_exact_in_the_plane_and_reports_the_distance_off_it():
    gen = torch.Generator().manual_seed(1)
    theta, d1, d2, normal = (torch.randn(30, generator=gen, dtype=torch.float64) for _ in range(4))
    # make `normal` orthogonal to both directions
    basis, _ = torch.linalg.qr(torch.stack([d1, d2], 1))
    normal = normal - basis @ (basis.T @ normal)
    normal = normal / torch.linalg.vector_norm(normal)
    coords = np.array([[0.0, 0.0], [1.5, -2.0], [-0.3, 0.7]])
    points = torch.stack([theta + a * d1 + b * d2 for a, b in coords])
    off = points + 0.25 * normal
    got, residual = plane_coordinates(points, theta, d1, d2)
    np.testing.assert_allclose(got, coords, atol=1e-12)
    np.testing.assert_allclose(residual, 0.0, atol=1e-12)
    got, residual = plane_coordinates(off, theta, d1, d2)
    np.testing.assert_allclose(got, coords, atol=1e-12)
    np.testing.assert_allclose(residual, 0.25, rtol=1e-12)


def test_interpolation_and_batched_loss_match_direct_evaluation(mlp_objective):
    start, end = mlp_objective.theta0, mlp_objective.theta0 + 0.3
    s, values = interpolate(mlp_objective, start, end, points=7, extend=0.5)
    assert s[0] == -0.5 and s[-1] == 1.5
    for si, v in zip(s, values):
        assert v == pytest.approx(float(mlp_objective.loss((1 - si) * start + si * end)), rel=1e-12)
    rows = torch.stack([start, end])
    np.testing.assert_allclose(batched_loss(mlp_objective, rows).numpy(),
                               [float(mlp_objective.loss(start)), float(mlp_objective.loss(end))], rtol=1e-12)


def test_filter_normalised_direction_matches_each_filter_norm(cnn_objective):
    theta = cnn_objective.theta0
    d = filter_normalized_direction(cnn_objective, theta, seed=3)
    layout = cnn_objective.layout
    for name, p, q in zip(layout.names, layout.split(theta), layout.split(d)):
        if p.ndim <= 1:
            assert bool((q == 0).all()), name  # biases and BatchNorm parameters ignored, as Li et al. do
        else:
            np.testing.assert_allclose(torch.linalg.vector_norm(q.reshape(q.shape[0], -1), dim=1).numpy(),
                                       torch.linalg.vector_norm(p.reshape(p.shape[0], -1), dim=1).numpy(),
                                       rtol=1e-12, err_msg=name)


def test_zero_and_parallel_directions_are_refused(mlp_objective):
    theta = mlp_objective.theta0
    d = torch.ones(mlp_objective.dim, dtype=torch.float64)
    with pytest.raises(ValueError, match="zero or not finite"):
        loss_plane(mlp_objective, theta, d, torch.zeros_like(d), [0.0], [0.0])
    with pytest.raises(ValueError, match="parallel"):
        loss_plane(mlp_objective, theta, d, -2.0 * d, [0.0], [0.0])
    with pytest.raises(ValueError, match="parallel"):
        plane_coordinates(theta[None], theta, d, 3.0 * d)
