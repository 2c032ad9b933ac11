"""Repeated eigenvalues: top-k with multiplicity, against dense float64 (issue: single-vector Lanczos found one
copy of a repeated λ and said converged=True)."""
import warnings

import pytest
import torch

from flows import EigenTracker, Objective, gradient_descent, top_eigenpairs
from flows.curvature.operators import MatrixOperator
from flows.curvature.spectrum import symmetric_eigenpairs


def _matrix(values: list[float], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(values), len(values), generator=g, dtype=torch.float64))
    return q @ torch.diag(torch.tensor(values, dtype=torch.float64)) @ q.T


def _expected(values: list[float], k: int, which: str) -> torch.Tensor:
    v = torch.tensor(values, dtype=torch.float64)
    order = {"LA": torch.argsort(-v), "SA": torch.argsort(v), "LM": torch.argsort(-v.abs())}[which]
    return v[order[:k]]


def _spectrum(top: list[float], dim: int = 150) -> list[float]:
    rest = torch.linspace(0.9, -0.5, dim - len(top), dtype=torch.float64).tolist()
    return top + rest


@pytest.mark.parametrize(("multiplicity", "k"), [(2, 3), (10, 10), (12, 5), (10, 12)])
def test_repeated_top_eigenvalue_found_with_multiplicity(multiplicity, k):
    values = _spectrum([3.0] * multiplicity + [2.0, 1.5])
    op = MatrixOperator(_matrix(values))
    result = symmetric_eigenpairs(op, k, "LA", tol=1e-8)
    assert result.converged
    torch.testing.assert_close(result.values, _expected(values, k, "LA"), rtol=1e-7, atol=1e-7)
    vectors = result.vectors
    torch.testing.assert_close(vectors.T @ vectors, torch.eye(k, dtype=torch.float64), atol=1e-6, rtol=0)
    residual = torch.linalg.vector_norm(op.matrix @ vectors - vectors * result.values, dim=0)
    assert float(residual.max()) < 1e-6


def test_near_equal_cluster():
    values = _spectrum([3.0, 3.0 * (1 + 1e-6), 3.0 * (1 - 1e-6), 3.0 * (1 + 2e-6), 2.0])
    result = symmetric_eigenpairs(MatrixOperator(_matrix(values, seed=3)), 4, "LA", tol=1e-8)
    assert result.converged
    torch.testing.assert_close(result.values, _expected(values, 4, "LA"), rtol=1e-7, atol=0)


@pytest.mark.parametrize("which", ["SA", "LM"])
def test_repeated_extreme_values_for_sa_and_lm(which):
    values = _spectrum([1.0, 0.8]) + [-4.0] * 6
    result = symmetric_eigenpairs(MatrixOperator(_matrix(values, seed=1)), 4, which, tol=1e-8)
    assert result.converged
    torch.testing.assert_close(result.values, _expected(values, 4, which), rtol=1e-7, atol=1e-7)


def test_budget_too_small_says_so():
    values = _spectrum([3.0] * 10)
    first = symmetric_eigenpairs(MatrixOperator(_matrix(values)), 8, "LA", tol=1e-8, verify=False)
    with pytest.warns(RuntimeWarning, match="multiplicity"):
        result = symmetric_eigenpairs(MatrixOperator(_matrix(values)), 8, "LA", tol=1e-8,
                                      max_matvecs=first.matvecs + 10)
    assert not result.converged


def _linear_head(seed: int = 0) -> Objective:
    """nn.Linear(40, 10) with ½-MSE: H = I₁₀ ⊗ XᵀX/N (with the bias), every eigenvalue ten times."""
    torch.manual_seed(seed)
    x, y = torch.randn(200, 40, dtype=torch.float64), torch.randn(200, 10, dtype=torch.float64)
    model = torch.nn.Linear(40, 10).double()
    return Objective.from_module(model, lambda out, t: 0.5 * ((out - t) ** 2).sum(1).mean(), (x, y))


@pytest.mark.parametrize(("k", "which"), [(3, "LA"), (10, "LA"), (12, "LA"), (3, "SA")])
def test_multi_output_linear_head_against_dense(k, which):
    obj = _linear_head()
    dense = torch.linalg.eigvalsh(obj.hessian(obj.theta0))
    expected = dense.flip(0)[:k] if which == "LA" else dense[:k]
    result = top_eigenpairs(obj, obj.theta0, k, which, tol=1e-8, method="lanczos", max_matvecs=2000)
    assert result.converged
    torch.testing.assert_close(result.values, expected, rtol=1e-7, atol=1e-9)


def test_without_verification_a_copy_is_lost():
    """The defect this module guards: one start vector sees one copy (what the solver returned before)."""
    obj = _linear_head()
    top = float(torch.linalg.eigvalsh(obj.hessian(obj.theta0))[-1])
    result = top_eigenpairs(obj, obj.theta0, 3, method="lanczos", verify=False)
    assert result.converged and float(result.values[1]) < 0.99 * top  # the second copy's place taken
    fixed = top_eigenpairs(obj, obj.theta0, 3, method="lanczos")
    assert fixed.converged and float(fixed.values[2]) == pytest.approx(top, rel=1e-3)


def test_tracker_keeps_every_copy_along_gradient_descent():
    obj = _linear_head(seed=1)
    tracker = EigenTracker(k=4, tol=1e-8, method="lanczos", max_matvecs=2000)
    run = gradient_descent(obj, obj.theta0, lr=0.3, steps=4, states="full")
    for theta in run.states:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            result = tracker.update(obj, torch.as_tensor(theta))
        dense = torch.linalg.eigvalsh(obj.hessian(torch.as_tensor(theta))).flip(0)[:4]
        assert result.converged
        torch.testing.assert_close(result.values, dense, rtol=1e-7, atol=1e-9)
