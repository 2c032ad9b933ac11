"""The Gauss–Newton operator against Jᵀ H_out J built densely with torch.func, and against the Hessian."""
import pytest
import torch
import torch.nn.functional as F
from models import fc_tanh, gaussian_mixture, half_mse

from flows import Objective, ggn_eigenpairs, top_eigenpairs
from flows.curvature.operators import GGNOperator
from flows.curvature.spectrum import symmetric_eigenpairs


def _dense_ggn(obj, theta):
    parts = obj.module_parts
    total = torch.zeros(obj.dim, obj.dim, dtype=torch.float64)
    for i in range(len(parts.batches)):
        out = parts.outputs(theta, i)
        jac = torch.func.jacrev(lambda t, i=i: parts.outputs(t, i))(theta).reshape(out.numel(), -1)
        h_out = torch.func.hessian(lambda o, i=i: parts.loss(o, i, theta))(out).reshape(out.numel(), out.numel())
        total = total + jac.T @ h_out @ jac
    return total


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_ggn_products_equal_the_dense_gauss_newton_matrix(loss):
    x, y = gaussian_mixture(n=40, d=3, classes=3, seed=2)
    model = fc_tanh((3, 6, 3), seed=1, dtype=torch.float64)
    target = y if loss == "mse" else y.argmax(1)
    obj = Objective.from_module(model, half_mse if loss == "mse" else F.cross_entropy, (x, target), batch_size=16)
    theta = obj.theta0
    dense = _dense_ggn(obj, theta)
    op = GGNOperator(obj, theta)
    torch.testing.assert_close(op.to_dense(), dense, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(dense, dense.T, rtol=0, atol=1e-12)
    assert float(torch.linalg.eigvalsh(dense).min()) > -1e-10  # PSD for a convex loss


def test_ggn_equals_the_hessian_for_a_linear_model():
    x, y = gaussian_mixture(n=30, d=4, classes=2, seed=0)
    obj = Objective.from_module(torch.nn.Linear(4, 2).double(), half_mse, (x, y))
    theta = obj.theta0
    torch.testing.assert_close(GGNOperator(obj, theta).to_dense(), obj.hessian(theta), rtol=1e-10, atol=1e-12)


def test_ggn_top_eigenvalue_and_the_hessians(mlp_objective):
    """λ_max of the GGN by Lanczos on the operator, and beside it the Hessian's (they differ off a minimum)."""
    theta = mlp_objective.theta0
    ggn = symmetric_eigenpairs(GGNOperator(mlp_objective, theta), 2, tol=1e-8)
    dense = _dense_ggn(mlp_objective, theta)
    torch.testing.assert_close(ggn.values, torch.linalg.eigvalsh(dense).flip(0)[:2], rtol=1e-7, atol=1e-10)
    hessian = top_eigenpairs(mlp_objective, theta, 1, tol=1e-8).values[0]
    assert torch.isfinite(hessian)


def test_ggn_needs_a_module_objective(cubic):
    with pytest.raises(ValueError, match="from_module"):
        GGNOperator(cubic, cubic.theta0)


def test_ggn_of_a_train_mode_batchnorm_cnn_against_reverse_mode_jacobians(cnn_objective):
    """Forward-mode Jv through train-mode BatchNorm agrees with reverse-mode autograd (unlike torch.func's
    second derivatives there, see test_operators)."""
    theta = cnn_objective.theta0
    parts = cnn_objective.module_parts
    out = parts.outputs(theta, 0)
    jac = torch.autograd.functional.jacobian(lambda t: parts.outputs(t, 0), theta).reshape(out.numel(), -1)
    h_out = torch.autograd.functional.hessian(lambda o: parts.loss(o, 0, theta), out.detach())
    dense = jac.T @ h_out.reshape(out.numel(), out.numel()) @ jac
    torch.testing.assert_close(GGNOperator(cnn_objective, theta).to_dense(), dense, rtol=1e-10, atol=1e-13)


def test_ggn_eigenpairs_of_a_cross_entropy_network_match_the_dense_matrix():
    """ggn_eigenpairs on a loss and architecture the experiments do not use (cross-entropy, tanh net with 3 layers)."""
    x, y = gaussian_mixture(n=36, d=4, classes=3, seed=5)
    obj = Objective.from_module(fc_tanh((4, 5, 5, 3), seed=3, dtype=torch.float64), F.cross_entropy,
                                (x, y.argmax(1)), batch_size=10)
    theta = obj.theta0 + 0.3 * torch.randn(obj.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    pairs = ggn_eigenpairs(obj, theta, 3, tol=1e-9)
    expected = torch.linalg.eigvalsh(_dense_ggn(obj, theta)).flip(0)[:3]
    torch.testing.assert_close(pairs.values, expected, rtol=1e-7, atol=1e-12)
    with pytest.raises(ValueError, match="k must be"):
        ggn_eigenpairs(obj, theta, obj.dim)
    with pytest.raises(ValueError, match="which must be one of"):
        ggn_eigenpairs(obj, theta, 1, which="largest")
