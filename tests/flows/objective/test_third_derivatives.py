"""Bilinear third derivatives ∇_θ(uᵢᵀ H uⱼ): a closed form, and central differences of HVPs on networks.

The finite-difference oracle: zᵀ∇(uᵢᵀHuⱼ) ≈ (uᵢᵀH(θ+εz)uⱼ − uᵢᵀH(θ−εz)uⱼ)/2ε in float64 (error O(ε²)),
ε = 1e-5,
with H·u from the objective's own HVPs, which are themselves checked against dense Hessians elsewhere.
The networks include a LayerNorm (the central-flows authors report wrong third derivatives through
PyTorch's fused LayerNorm: confirmed here with torch 2.13, and the same for the fused BatchNorm) and a
train-mode BatchNorm: as they are (rerouted by :mod:`flows.objective.norms`) and through
:func:`flows.objective.modules.decomposed_norms`.
"""
import pytest
import torch
from models import teacher_student
from torch import nn

from flows import Objective
from flows.objective.autodiff import pair_indices
from flows.objective.modules import decomposed_norms


def _images(n=24, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 5, 5, generator=gen, dtype=torch.float64), torch.randint(0, 3, (n,), generator=gen)


def _model(name):
    torch.manual_seed(0)
    if name == "mlp":
        return (nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 2)).double(),
                lambda out, y: 0.5 * ((out - y) ** 2).sum(1).mean(), teacher_student(n=32, d_in=6, d_out=2))
    if name == "layernorm":
        return (nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 3)).double(),
                nn.CrossEntropyLoss(), (teacher_student(n=32, d_in=6)[0], torch.arange(32) % 3))
    if name == "cnn":
        return (nn.Sequential(nn.Conv2d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(27, 3)).double(),
                nn.CrossEntropyLoss(), _images())
    if name == "batchnorm":
        return (nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Tanh(), nn.Flatten(),
                              nn.Linear(27, 3)).double(), nn.CrossEntropyLoss(), _images())
    raise ValueError(name)


@pytest.mark.parametrize("name", ["mlp", "layernorm", "cnn", "batchnorm"])
def test_against_central_differences_of_hvps(name):
    model, loss, data = _model(name)
    obj = Objective.from_module(decomposed_norms(model), loss, data, mode="train")
    theta = obj.theta0 + 0.1 * torch.randn(obj.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    gen = torch.Generator().manual_seed(2)
    u = torch.linalg.qr(torch.randn(obj.dim, 3, generator=gen, dtype=torch.float64))[0]
    z = torch.randn(obj.dim, generator=gen, dtype=torch.float64)
    t = obj.third_derivatives(theta, u)
    assert t.shape == (6, obj.dim)
    eps = 1e-5  # the error is O(ε²): 1e-3, 1e-4, 1e-5 converge on the autograd value (checked by hand)
    hu_plus, hu_minus = obj.hvp(theta + eps * z, u.T.contiguous()), obj.hvp(theta - eps * z, u.T.contiguous())
    for p, (i, j) in enumerate(pair_indices(3)):
        fd = float((u[:, i] @ hu_plus[j] - u[:, i] @ hu_minus[j]) / (2 * eps))
        assert float(z @ t[p]) == pytest.approx(fd, rel=1e-6, abs=1e-9), (name, i, j)


def test_closed_form_and_agreement_with_the_diagonal_contraction():
    # E = Σ θᵢ³/6 + θ₀θ₁θ₂: H = diag(θ) + the mixed terms, so ∇(uᵀHv) = u ⊙ v + (u₁v₂ + u₂v₁, u₀v₂ + u₂v₀, u₀v₁ + u₁v₀)
    obj = Objective.from_function(lambda th: (th ** 3).sum() / 6 + th[0] * th[1] * th[2], 3)
    theta = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
    u = torch.tensor([[1.0, 0.5], [2.0, -1.0], [0.0, 3.0]], dtype=torch.float64)
    t = obj.third_derivatives(theta, u)
    for p, (i, j) in enumerate(pair_indices(2)):
        a, b = u[:, i], u[:, j]
        mixed = torch.stack([a[1] * b[2] + a[2] * b[1], a[0] * b[2] + a[2] * b[0], a[0] * b[1] + a[1] * b[0]])
        torch.testing.assert_close(t[p], a * b + mixed)
    torch.testing.assert_close(t[0], obj.third_derivative(theta, u[:, 0]))
    torch.testing.assert_close(obj.third_derivatives(theta, u[:, 0]), t[:1])  # one vector: one pair


def test_quadratic_has_none_and_bad_shapes_are_refused():
    obj = Objective.from_function(lambda th: (th ** 2).sum(), 4)
    theta = torch.ones(4, dtype=torch.float64)
    assert torch.equal(obj.third_derivatives(theta, torch.eye(4, dtype=torch.float64)[:, :2]),
                       torch.zeros(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="u must have shape"):
        obj.third_derivatives(theta, torch.ones(3, 2, dtype=torch.float64))


@pytest.mark.parametrize("name", ["layernorm", "batchnorm"])
def test_fused_norm_layers_give_their_decompositions_third_derivatives(name):
    """The fused kernels are rerouted to elementary ops for third derivatives (flows.objective.norms): the layer as it
    is and its decomposition give the same function and the same third derivatives."""
    model, loss, data = _model(name)
    fused = Objective.from_module(model, loss, data, mode="train")
    plain = Objective.from_module(decomposed_norms(model), loss, data, mode="train")
    theta = fused.theta0 + 0.1
    u = torch.linalg.qr(torch.randn(fused.dim, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64))[0]
    torch.testing.assert_close(fused.third_derivatives(theta, u), plain.third_derivatives(theta, u),
                               rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(fused.third_derivative(theta, u[:, 0]), plain.third_derivative(theta, u[:, 0]),
                               rtol=1e-9, atol=1e-11)
    assert plain.layout == fused.layout  # same parameters, same names, same θ
    v = torch.randn(fused.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(plain.loss(theta), fused.loss(theta), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(plain.grad(theta), fused.grad(theta), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(plain.hvp(theta, v), fused.hvp(theta, v), rtol=1e-9, atol=1e-11)
    for mode in ("eval", "train"):  # running statistics in eval mode, batch statistics in train mode
        a = Objective.from_module(model, loss, data, mode=mode)
        b = Objective.from_module(decomposed_norms(model), loss, data, mode=mode)
        torch.testing.assert_close(b.loss(theta), a.loss(theta), rtol=1e-12, atol=1e-12)
