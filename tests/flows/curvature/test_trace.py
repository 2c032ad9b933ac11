"""Stochastic traces (Hutchinson, Hutch++) and parameter-subset curvature against dense float64 matrices."""
import numpy as np
import pytest
import torch

from flows import hessian_trace, parameter_eigenpairs, trace
from flows.curvature.operators import MatrixOperator, SubsetOperator


@pytest.mark.parametrize("method", ["hutchinson", "hutch++"])
def test_trace_is_unbiased_within_its_standard_error(method, constructed):
    """Over 40 seeds the estimates centre on tr A and the reported standard error matches their spread."""
    a = constructed(np.r_[np.linspace(1, 5, 200), [-2.0] * 50])
    truth = float(torch.trace(a))
    runs = [trace(MatrixOperator(a), 60, method, seed=s) for s in range(40)]
    values = np.array([r.value for r in runs])
    errors = np.array([r.standard_error for r in runs])
    assert abs(values.mean() - truth) < 4 * values.std(ddof=1) / np.sqrt(len(values))
    assert 0.5 < values.std(ddof=1) / np.median(errors) < 2.0  # the error bar is honest
    assert all(r.matvecs == 60 for r in runs)


def test_hutch_plus_plus_beats_hutchinson_on_a_decaying_spectrum(constructed):
    """Meyer et al.'s case: a few large eigenvalues dominate, as in network Hessians."""
    a = constructed(100.0 * 0.8 ** np.arange(400))
    truth = float(torch.trace(a))
    err = {m: np.median([abs(trace(MatrixOperator(a), 60, m, seed=s).value - truth) for s in range(10)])
           for m in ("hutchinson", "hutch++")}
    assert err["hutch++"] < 0.1 * err["hutchinson"], err
    # 33 sketch directions leave a remainder of Σ_{i≥33} 100·0.8^i ≈ 0.3 of tr A = 500 to the stochastic part
    est = trace(MatrixOperator(a), 99, "hutch++", seed=0)
    assert abs(est.value - truth) < 3 * est.standard_error and abs(est.value - truth) < 1e-4 * truth


def test_hessian_trace_of_an_mlp_and_of_one_layer(mlp_objective):
    theta = mlp_objective.theta0
    dense = mlp_objective.hessian(theta)
    est = hessian_trace(mlp_objective, theta, matvecs=150, seed=1)
    assert abs(est.value - float(torch.trace(dense))) < 4 * est.standard_error + 1e-8
    layout = mlp_objective.layout
    first = [n for n in layout.names if n.startswith("0.")]
    sub = SubsetOperator.of_parameters(MatrixOperator(dense), layout, ["0."])
    idx = sub.index
    block = dense[idx][:, idx]
    assert sub.shape == (sum(layout.sizes[layout.names.index(n)] for n in first),) * 2
    torch.testing.assert_close(sub @ torch.eye(sub.shape[0], dtype=torch.float64), block, rtol=0, atol=0)
    layer = hessian_trace(mlp_objective, theta, matvecs=len(idx), method="hutchinson", parameters=["0."])
    assert abs(layer.value - float(torch.trace(block))) < 5 * layer.standard_error + 1e-8


def test_layer_sharpness_is_the_top_eigenvalue_of_its_hessian_block(cnn_objective):
    theta = cnn_objective.theta0
    dense = torch.stack([cnn_objective.hvp(theta, e) for e in torch.eye(cnn_objective.dim, dtype=torch.float64)], 1)
    sub = SubsetOperator.of_parameters(MatrixOperator(dense), cnn_objective.layout, ["4.weight"])
    block = dense[sub.index][:, sub.index]
    pairs = parameter_eigenpairs(cnn_objective, theta, ["4.weight"], k=3, tol=1e-8)
    expected = torch.linalg.eigvalsh(0.5 * (block + block.T)).flip(0)[:3]
    torch.testing.assert_close(pairs.values, expected, rtol=1e-6, atol=1e-9)
    assert pairs.vectors.shape == (block.shape[0], 3)
    with pytest.raises(ValueError, match="no parameter matches"):
        parameter_eigenpairs(cnn_objective, theta, ["5.weight"])


def test_bad_trace_arguments_are_named():
    op = MatrixOperator(torch.eye(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="method must be one of"):
        trace(op, 30, "hutch+++")
    with pytest.raises(ValueError, match="matvecs"):
        trace(op, 2, "hutch++")
