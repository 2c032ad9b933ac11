"""Every public curvature entry point on models that no experiment uses, each against an oracle.

Models (float64, a few hundred parameters): a multi-output linear head with ½-MSE (every Hessian eigenvalue
repeated), a residual conv net with GroupNorm and cross-entropy, an InstanceNorm conv, a transformer block
with a functional layer norm (nanoGPT style) and SDPA, an LSTM and a GRU, multi-head attention. Oracles: the
Hessian from central differences of gradients (float64, error ~1e-9), third derivatives from central
differences of HVPs, stochastic estimates within four of their standard errors of the exact trace.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flows import Objective, central_flow, hessian_trace, spectral_density, top_eigenpairs
from flows.dynamics.central import sigma_matrix

DT = torch.float64


class _ResidualGroupNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.norm = nn.GroupNorm(2, 4)
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = torch.tanh(self.norm(self.conv1(x)))
        h = h + torch.tanh(self.conv2(h))
        return self.head(h.mean(dim=(2, 3)))


class _InstanceNormConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 4, 3)
        self.norm = nn.InstanceNorm1d(4, affine=True)
        self.head = nn.Linear(4 * 4, 2)

    def forward(self, x):
        return self.head(torch.tanh(self.norm(self.conv(x))).flatten(1))


class _NanoLayerNorm(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(n)), nn.Parameter(torch.zeros(n))

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class _Block(nn.Module):
    """A pre-norm transformer block: functional layer norm, one-head causal SDPA, a tanh MLP."""

    def __init__(self, d=6):
        super().__init__()
        self.ln1, self.ln2 = _NanoLayerNorm(d), _NanoLayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 8), nn.Tanh(), nn.Linear(8, d))
        self.head = nn.Linear(d, 2)

    def forward(self, x):
        q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v, is_causal=True))
        x = x + self.mlp(self.ln2(x))
        return self.head(x[:, -1])


class _Recurrent(nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.rnn = cell(3, 5, batch_first=True)
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        out, _ = self.attn(x, x, x, need_weights=False)
        return self.head(torch.tanh(out).mean(1))


def _mse(out, y):
    return 0.5 * ((out - y) ** 2).sum(1).mean()


def _build(name):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    n = 12
    if name == "linear-head":
        model, x, loss = nn.Linear(6, 4), torch.randn(n, 6, generator=g, dtype=DT), _mse
        y = torch.randn(n, 4, generator=g, dtype=DT)
    elif name == "groupnorm-resnet":
        model, x, loss = _ResidualGroupNorm(), torch.randn(n, 2, 4, 4, generator=g, dtype=DT), F.cross_entropy
        y = torch.randint(0, 3, (n,), generator=g)
    elif name == "instancenorm":
        model, x, loss = _InstanceNormConv(), torch.randn(n, 2, 6, generator=g, dtype=DT), _mse
        y = torch.randn(n, 2, generator=g, dtype=DT)
    elif name == "transformer-block":
        model, x, loss = _Block(), torch.randn(n, 4, 6, generator=g, dtype=DT), F.cross_entropy
        y = torch.randint(0, 2, (n,), generator=g)
    elif name in ("lstm", "gru"):
        model = _Recurrent(nn.LSTM if name == "lstm" else nn.GRU)
        x, loss = torch.randn(n, 4, 3, generator=g, dtype=DT), F.cross_entropy
        y = torch.randint(0, 3, (n,), generator=g)
    else:
        model, x, loss = _Attention(), torch.randn(n, 3, 4, generator=g, dtype=DT), _mse
        y = torch.randn(n, 2, generator=g, dtype=DT)
    obj = Objective.from_module(model.double(), loss, (x, y))
    theta = obj.theta0 + 0.05 * torch.randn(obj.dim, generator=g, dtype=DT)
    return obj, theta


MODELS = ["linear-head", "groupnorm-resnet", "instancenorm", "transformer-block", "lstm", "gru", "attention"]


def _fd_hessian(obj, theta, eps=1e-5):
    eye = torch.eye(obj.dim, dtype=DT)
    cols = [(obj.grad(theta + eps * e) - obj.grad(theta - eps * e)) / (2 * eps) for e in eye]
    h = torch.stack(cols, dim=1)
    return 0.5 * (h + h.T)


@pytest.fixture(scope="module", params=MODELS)
def model(request):
    obj, theta = _build(request.param)
    return request.param, obj, theta, _fd_hessian(obj, theta)


def test_products_and_dense_hessian(model):
    name, obj, theta, h = model
    scale = float(h.abs().max())
    gen = torch.Generator().manual_seed(4)
    v = torch.randn(3, obj.dim, generator=gen, dtype=DT)
    torch.testing.assert_close(obj.hvp(theta, v[0]), h @ v[0], rtol=0, atol=1e-6 * scale * obj.dim ** 0.5)
    batched = obj.hvp(theta, v)
    torch.testing.assert_close(batched, torch.stack([obj.hvp(theta, row) for row in v]), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(obj.hessian(theta), h, rtol=0, atol=1e-6 * scale)
    # torch's batched double backward fails through group norm: detected once, single products used instead
    assert obj.batched_products is (name != "groupnorm-resnet")


def test_vmap_and_loop_blocks_agree(model):
    """``batching="vmap"`` (one batched backward per block) and ``"loop"`` give the same products: fresh and
    retained-graph blocks, and the pair vectors; on the CPU "auto" loops, elsewhere it would batch."""
    name, obj, theta, _ = model
    gen = torch.Generator().manual_seed(5)
    v = torch.randn(3, obj.dim, generator=gen, dtype=DT)
    u = torch.linalg.qr(torch.randn(obj.dim, 3, generator=gen, dtype=DT))[0]
    found = {}
    for batching in ("vmap", "loop"):
        obj.batching = batching
        op = obj.hessian_operator(theta)
        found[batching] = (obj.hvp(theta, v), op @ v.T, obj.third_derivatives(theta, u))
        op.release()
    obj.batching = "auto"
    for vmapped, looped in zip(found["vmap"], found["loop"]):
        torch.testing.assert_close(vmapped, looped, rtol=1e-11, atol=1e-13 * float(looped.abs().max()))
    assert not obj.batches_products(torch.device("cpu"))
    assert obj.batches_products(torch.device("cuda")) is (name != "groupnorm-resnet")  # a rule, no device needed


def test_batching_refuses_an_unknown_choice_naming_them():
    with pytest.raises(ValueError, match=r"batching must be one of \('auto', 'vmap', 'loop'\), got 'fast'"):
        Objective.from_module(nn.Linear(3, 1).double(), _mse, (torch.zeros(2, 3, dtype=DT),
                                                               torch.zeros(2, 1, dtype=DT)), batching="fast")


@pytest.mark.parametrize("which", ["LA", "SA"])
def test_top_eigenpairs_with_multiplicity(model, which):
    _, obj, theta, h = model
    dense = torch.linalg.eigvalsh(h)
    expected = dense.flip(0)[:4] if which == "LA" else dense[:4]
    result = top_eigenpairs(obj, theta, 4, which, tol=1e-7, method="lanczos", max_matvecs=3000)
    assert result.converged
    torch.testing.assert_close(result.values, expected, rtol=0, atol=1e-5 * float(dense.abs().max()))


def test_trace_and_density(model):
    _, obj, theta, h = model
    exact = float(torch.trace(h))
    for method in ("hutch++", "hutchinson"):
        est = hessian_trace(obj, theta, matvecs=60, method=method, seed=1)
        assert abs(est.value - exact) <= 4 * est.standard_error + 1e-6 * abs(exact), (method, est, exact)
    density = spectral_density(obj, theta, starts=6, steps=min(30, obj.dim - 1), seed=1)
    mean, se = density.moment(1)
    assert abs(mean - exact / obj.dim) <= 4 * se + 1e-6 * abs(exact), (mean, se, exact / obj.dim)


def test_third_derivatives_against_central_differences(model):
    _, obj, theta, _ = model
    gen = torch.Generator().manual_seed(6)
    u = torch.linalg.qr(torch.randn(obj.dim, 2, generator=gen, dtype=DT))[0]
    z = torch.randn(obj.dim, generator=gen, dtype=DT)
    eps = 2e-5  # the difference's own error is O(ε²): 3e-5 relative at ε = 1e-4 on the InstanceNorm conv
    hp, hm = obj.hvp(theta + eps * z, u.T), obj.hvp(theta - eps * z, u.T)
    fd = (u.T @ hp.T - u.T @ hm.T) / (2 * eps)
    expected = torch.stack([fd[0, 0], fd[0, 1], fd[1, 1]])
    t = obj.third_derivatives(theta, u) @ z
    assert float((t - expected).abs().max()) <= 1e-5 * float(expected.abs().max()) + 1e-9


def test_central_flow_twenty_steps_at_the_edge(model):
    name, obj, theta, h = model
    lam = float(torch.linalg.eigvalsh(h)[-1])
    if lam <= 0:
        pytest.skip("no positive curvature")
    lr = 2.2 / lam
    if name == "linear-head":  # a quadratic above the edge has no central flow: refused, not wrong
        with pytest.raises(ArithmeticError, match="central flow does not exist"):
            central_flow(obj, theta, lr, 20)
        return
    run = central_flow(obj, theta, lr, 20)
    assert run.status == "complete", run.events
    assert run.metric("critical")[0] >= 1
    assert (np.nan_to_num(sigma_matrix(run)) >= -1e-10).all()  # X ⪰ 0
    assert (run.metric("predicted_loss") >= run.losses - 1e-12).all()  # E + ½⟨H, Σ⟩ ≥ E on critical directions
    assert float(run.metric("infeasibility").max()) < 1e-6
