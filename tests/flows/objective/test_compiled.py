"""The compiled curvature products (``hvp_method="compiled"``) equal the eager ones, off the home ground.

Models no experiment uses: a residual conv net with GroupNorm and cross-entropy (float64; its batched double
backward fails, and its third derivatives need the decomposed norm), and an LSTM with cross-entropy (float32).
Inductor compiles are tens of seconds each on a CPU, so the inductor checks are marked slow and the rest run the
traced graphs uncompiled (backend "eager"), which checks the tracing itself.
"""
import pytest
import torch
import torch.nn.functional as F
from test_foreign_models import _build, _Recurrent  # test basenames are unique, so this resolves
from torch import nn

from flows import Objective


def _lstm_f32():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(10, 4, 3, generator=g), torch.randint(0, 3, (10,), generator=g)
    return _Recurrent(nn.LSTM), (x, y)


def _relative(a, b):
    return float((a - b).abs().max() / b.abs().max())


def _check_equal(eager, compiled, theta, tol):
    gen = torch.Generator().manual_seed(2)
    v = torch.randn(3, eager.dim, generator=gen, dtype=theta.dtype)
    u = torch.linalg.qr(torch.randn(eager.dim, 3, generator=gen, dtype=theta.dtype))[0]
    g0, hv0 = eager.grad_and_hvp(theta, v)
    g1, hv1 = compiled.grad_and_hvp(theta, v)
    assert _relative(g1, g0) < tol and _relative(hv1, hv0) < tol
    assert _relative(compiled.hvp(theta, v[0]), hv0[0]) < tol  # one vector: shape (D,)
    assert _relative(compiled.third_derivatives(theta, u), eager.third_derivatives(theta, u)) < tol
    assert compiled.hvp_method == "compiled"  # no silent fallback


@pytest.mark.parametrize("backend", ["eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_products_equal_eager_in_float64_on_a_groupnorm_resnet(backend):
    eager, theta = _build("groupnorm-resnet")
    compiled = Objective.from_module(eager.model, F.cross_entropy, eager.module_parts.batches[0],
                                     hvp_method="compiled", compile=backend)
    _check_equal(eager, compiled, theta, 1e-12)


@pytest.mark.slow
def test_compiled_products_equal_eager_in_float32_on_an_lstm():
    model, data = _lstm_f32()
    eager = Objective.from_module(model, F.cross_entropy, data)
    compiled = Objective.from_module(model, F.cross_entropy, data, hvp_method="compiled")
    _check_equal(eager, compiled, eager.theta0, 1e-6)


def test_micro_batches_each_get_their_graph_and_sum():
    model, data = _lstm_f32()
    eager = Objective.from_module(model, F.cross_entropy, data, batch_size=4)
    compiled = Objective.from_module(model, F.cross_entropy, data, batch_size=4, hvp_method="compiled",
                                     compile="eager")
    assert len(compiled.pieces) == 3
    _check_equal(eager, compiled, eager.theta0, 1e-6)


def test_a_loss_that_cannot_be_traced_warns_once_and_runs_eagerly():
    def branching(theta):  # Python control flow on a value: make_fx cannot trace it
        return (theta ** 4).sum() if float(theta.sum()) > 0 else (theta ** 2).sum()

    theta = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    obj = Objective.from_function(branching, 3, hvp_method="compiled")
    with pytest.warns(RuntimeWarning, match="compiled curvature products .* failed"):
        hv = obj.hvp(theta, torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(hv, 12 * theta ** 2, rtol=1e-12, atol=0)
    assert obj.hvp_method == "double_backward"


def test_complex_theta_keeps_the_eager_holomorphic_products():
    obj = Objective.from_function(lambda t: (t ** 3).sum(), 2, hvp_method="compiled")
    theta = torch.tensor([1 + 1j, 2 - 1j], dtype=torch.complex128)
    v = torch.ones(2, dtype=torch.complex128)
    torch.testing.assert_close(obj.hvp(theta, v), 6 * theta, rtol=1e-12, atol=0)


def test_fixed_dropout_masks_are_not_compiled_into_fresh_draws():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Dropout(0.3), nn.Linear(6, 2)).double()
    g = torch.Generator().manual_seed(1)
    data = (torch.randn(16, 3, generator=g, dtype=torch.float64), torch.randint(0, 2, (16,), generator=g))
    eager = Objective.from_module(model, F.cross_entropy, data, stochastic_seed=3)
    compiled = Objective.from_module(model, F.cross_entropy, data, stochastic_seed=3, hvp_method="compiled",
                                     compile="eager")
    v = torch.randn(eager.dim, generator=g, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="draws random numbers"):
        hv = compiled.hvp(eager.theta0, v)
    torch.testing.assert_close(hv, eager.hvp(eager.theta0, v), rtol=1e-12, atol=0)
    assert compiled.hvp_method == "double_backward"
