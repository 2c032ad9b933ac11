"""Third derivatives through every normalisation op PyTorch offers, against central differences of HVPs.

The table of :mod:`flows.objective.norms` as a test: which kernels are wrong to third order (a strict expectation: if
torch fixes one, its row fails here and the routing can go), and that under ``exact_norms`` every op is right,
functional and ``torch.`` forms included; the decompositions equal the kernels to 1e-12.
"""
import pytest
import torch
import torch.nn.functional as F

from flows import Objective
from flows.objective.norms import batch_norm, exact_norms, instance_norm, layer_norm

DT = torch.float64
GEN = torch.Generator().manual_seed(0)
X0, A0, B0 = (torch.randn(4, 6, 5, generator=GEN, dtype=DT) for _ in range(3))
C = 6


def _op(name):
    """(f(x, θ_op), number of op parameters)."""
    stats = (torch.zeros(C, dtype=DT), torch.full((C,), 1.3, dtype=DT))
    return {
        "layer_norm": (lambda x, t: F.layer_norm(x, (5,), t[:5], t[5:10]), 10),
        "layer_norm_no_affine": (lambda x, t: F.layer_norm(x, (5,)), 0),
        "torch.layer_norm": (lambda x, t: torch.layer_norm(x, (5,), t[:5], t[5:10]), 10),
        "nn.LayerNorm": (lambda x, t: torch.func.functional_call(torch.nn.LayerNorm(5).double(),
                                                                 {"weight": t[:5], "bias": t[5:10]}, (x,)), 10),
        "batch_norm_train": (lambda x, t: F.batch_norm(x, None, None, t[:C], t[C:], training=True), 2 * C),
        "batch_norm_eval": (lambda x, t: F.batch_norm(x, *stats, t[:C], t[C:], training=False), 2 * C),
        "instance_norm": (lambda x, t: F.instance_norm(x, weight=t[:C], bias=t[C:]), 2 * C),
        "nn.InstanceNorm1d": (lambda x, t: torch.func.functional_call(
            torch.nn.InstanceNorm1d(C, affine=True).double(), {"weight": t[:C], "bias": t[C:]}, (x,)), 2 * C),
        "group_norm": (lambda x, t: F.group_norm(x, 3, t[:C], t[C:]), 2 * C),
        "rms_norm": (lambda x, t: F.rms_norm(x, (5,), t[:5]), 5),
        "sdpa": (lambda x, t: F.scaled_dot_product_attention(x * t[0], x * t[1] + t[2], x * t[3]), 4),
    }[name]


FAULTY = ["layer_norm", "layer_norm_no_affine", "torch.layer_norm", "nn.LayerNorm", "batch_norm_train",
          "instance_norm", "nn.InstanceNorm1d"]
EXACT = ["batch_norm_eval", "group_norm", "rms_norm", "sdpa"]


def _objective(name):
    f, n_op = _op(name)
    target = torch.randn(4, 6, 5, generator=torch.Generator().manual_seed(1), dtype=DT)

    def energy(theta):  # the op's input depends on θ too (its last two entries): that is where kernels fail
        x = X0 + theta[-2] * A0 + theta[-1] * B0 * X0
        return ((torch.tanh(f(x, theta[:n_op])) - target) ** 2).sum()

    return Objective.from_function(energy, n_op + 2)


def _third_order_error(obj, raw: bool) -> float:
    gen = torch.Generator().manual_seed(2)
    theta, v, w = (torch.randn(obj.dim, generator=gen, dtype=DT) * s for s in (0.5, 1.0, 1.0))
    eps = 1e-4
    fd = float((v @ obj.hvp(theta + eps * w, v) - v @ obj.hvp(theta - eps * w, v)) / (2 * eps))
    if raw:  # the kernel's own triple backward, outside exact_norms
        t = theta.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(obj.pieces[0](t), t, create_graph=True)
        (hv,) = torch.autograd.grad(g, t, grad_outputs=v, create_graph=True)
        (third,) = torch.autograd.grad(hv @ v, t)
    else:
        third = obj.third_derivative(theta, v)
    return abs(float(w @ third) - fd) / abs(fd)


@pytest.mark.parametrize("name", FAULTY)
def test_these_kernels_are_wrong_to_third_order(name):
    assert _third_order_error(_objective(name), raw=True) > 1e-3


@pytest.mark.parametrize("name", EXACT)
def test_these_kernels_are_right_to_third_order(name):
    assert _third_order_error(_objective(name), raw=True) < 1e-4


@pytest.mark.parametrize("name", FAULTY + EXACT)
def test_third_derivatives_are_right_under_exact_norms(name):
    assert _third_order_error(_objective(name), raw=False) < 1e-4


def test_decompositions_equal_the_kernels():
    x = X0 * 2 + 0.3
    w, b = torch.randn(C, dtype=DT, generator=GEN), torch.randn(C, dtype=DT, generator=GEN)
    torch.testing.assert_close(layer_norm(x, (5,), w[:5], b[:5]), F.layer_norm(x, (5,), w[:5], b[:5]),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer_norm(x, (6, 5)), F.layer_norm(x, (6, 5)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(batch_norm(x, None, None, w, b, True), F.batch_norm(x, None, None, w, b, True),
                               rtol=1e-12, atol=1e-12)
    rm, rv = torch.randn(C, dtype=DT), torch.rand(C, dtype=DT) + 0.5
    torch.testing.assert_close(batch_norm(x, rm, rv, w, b, False), F.batch_norm(x, rm, rv, w, b, False),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(instance_norm(x, weight=w, bias=b), F.instance_norm(x, weight=w, bias=b),
                               rtol=1e-12, atol=1e-12)
    # running statistics updated in place as the kernel does
    rm1, rv1, rm2, rv2 = rm.clone(), rv.clone(), rm.clone(), rv.clone()
    batch_norm(x, rm1, rv1, w, b, True, 0.2)
    F.batch_norm(x, rm2, rv2, w, b, True, 0.2)
    torch.testing.assert_close(rm1, rm2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rv1, rv2, rtol=1e-12, atol=1e-12)
    with exact_norms():  # routed, same values
        torch.testing.assert_close(torch.nn.LayerNorm(5).double()(x), F.layer_norm(x, (5,)), rtol=1e-12, atol=1e-12)


class _NanoLayerNorm(torch.nn.Module):
    """nanoGPT's LayerNorm: a custom class calling F.layer_norm (no nn.LayerNorm for a type check to see)."""

    def __init__(self, n):
        super().__init__()
        self.weight, self.bias = torch.nn.Parameter(torch.ones(n)), torch.nn.Parameter(torch.zeros(n))

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class _RawKernel(torch.nn.Module):
    def forward(self, x):
        return torch.ops.aten.native_layer_norm(x, [x.shape[-1]], None, None, 1e-5)[0]


def _module_error(model):
    torch.manual_seed(0)
    x, y = torch.randn(12, 5, dtype=DT), torch.randn(12, 2, dtype=DT)
    obj = Objective.from_module(model.double(), lambda o, t: 0.5 * ((o - t) ** 2).sum(1).mean(), (x, y))
    gen = torch.Generator().manual_seed(3)
    theta = obj.theta0 + 0.1 * torch.randn(obj.dim, generator=gen, dtype=DT)
    u = torch.linalg.qr(torch.randn(obj.dim, 2, generator=gen, dtype=DT))[0]
    z = torch.randn(obj.dim, generator=gen, dtype=DT)
    eps = 1e-4
    fd = (u.T @ obj.hvp(theta + eps * z, u.T).T - u.T @ obj.hvp(theta - eps * z, u.T).T) / (2 * eps)
    t = obj.third_derivatives(theta, u) @ z  # pairs (0,0), (0,1), (1,1)
    expected = torch.stack([fd[0, 0], fd[0, 1], fd[1, 1]])
    return float((t - expected).abs().max() / expected.abs().max())


def test_a_functional_layer_norm_in_a_custom_module_is_exact():
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), _NanoLayerNorm(8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    assert _module_error(model) < 1e-5


def test_a_kernel_called_past_the_functional_layer_is_refused_naming_the_layer():
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), _RawKernel(), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    with pytest.raises(ValueError, match=r"layer '1' \(_RawKernel, NativeLayerNormBackward0\)"):
        _module_error(model)


def test_decomposed_instance_norm_is_the_same_function():
    from flows.objective.norms import decomposed_norms

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv1d(2, 4, 3), torch.nn.InstanceNorm1d(4, affine=True),
                                torch.nn.Tanh()).double()
    x = torch.randn(5, 2, 9, dtype=DT)
    plain = decomposed_norms(model)
    torch.testing.assert_close(plain(x), model(x), rtol=1e-12, atol=1e-12)
    tracked = torch.nn.Sequential(torch.nn.InstanceNorm1d(2, affine=True, track_running_stats=True)).double()
    tracked[0].running_mean.uniform_()
    tracked[0].running_var.uniform_(0.5, 1.5)
    tracked.eval()
    torch.testing.assert_close(decomposed_norms(tracked)(x), tracked(x), rtol=1e-12, atol=1e-12)
