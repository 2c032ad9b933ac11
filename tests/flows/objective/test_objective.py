"""Objective against dense float64 oracles built independently with torch.func.hessian."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flows import Objective


def _mlp():
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()


def _cnn():
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).double()


def _half_mse(out, y):
    return 0.5 * ((out - y) ** 2).sum(dim=1).mean()


def _oracle(model, loss_fn, x, y):
    """Flat-θ loss written without driftlab: manual unflatten + functional_call."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]

    def f(theta):
        params = {n: c.view(s) for n, c, s in zip(names, torch.split(theta, sizes), shapes)}
        return loss_fn(torch.func.functional_call(model, params, (x,)), y)

    return f


CASES = {
    "mlp": (_mlp, lambda n: torch.randn(n, 5, dtype=torch.float64)),
    "cnn": (_cnn, lambda n: torch.randn(n, 1, 6, 6, dtype=torch.float64)),
}


@pytest.mark.parametrize("arch", sorted(CASES))
@pytest.mark.parametrize("loss_name", ["half_mse", "cross_entropy"])
def test_grad_hvp_hessian_match_dense_oracle(arch, loss_name):
    make, inputs = CASES[arch]
    model = make()
    x = inputs(11)
    if loss_name == "half_mse":
        loss_fn, y = _half_mse, torch.randn(11, 3, dtype=torch.float64)
    else:
        loss_fn, y = F.cross_entropy, torch.randint(0, 3, (11,))
    obj = Objective.from_module(model, loss_fn, (x, y), batch_size=4)
    f = _oracle(model, loss_fn, x, y)
    theta = obj.theta0 + 0.1 * torch.randn(obj.dim, dtype=torch.float64)
    h_true = torch.func.hessian(f)(theta)
    g_true = torch.func.grad(f)(theta)
    loss, g = obj.loss_and_grad(theta)
    torch.testing.assert_close(loss, f(theta), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g, g_true, rtol=1e-10, atol=1e-12)
    v = torch.randn(obj.dim, dtype=torch.float64)
    torch.testing.assert_close(obj.hvp(theta, v), h_true @ v, rtol=1e-9, atol=1e-11)
    vs = torch.randn(4, obj.dim, dtype=torch.float64)
    torch.testing.assert_close(obj.hvp(theta, vs), vs @ h_true.T, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(obj.hessian(theta), h_true, rtol=1e-9, atol=1e-11)
    op = obj.hessian_operator(theta)
    torch.testing.assert_close(op @ v, h_true @ v, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(op @ vs.T, h_true @ vs.T, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(op.gradient, g_true, rtol=1e-10, atol=1e-12)
    assert op.matvecs == 5
    import numpy as np
    lin = op.to_scipy()
    np.testing.assert_allclose(lin.matvec(v.numpy()), (h_true @ v).numpy(), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("batching", [None, 1, 3, 5, "list"])
def test_micro_batch_independence(batching):
    model = _mlp()
    x, y = torch.randn(13, 5, dtype=torch.float64), torch.randn(13, 3, dtype=torch.float64)
    full = Objective.from_module(model, _half_mse, (x, y))
    if batching == "list":
        data = [(x[:2], y[:2]), (x[2:9], y[2:9]), (x[9:], y[9:])]
        obj = Objective.from_module(model, _half_mse, data)
    else:
        obj = Objective.from_module(model, _half_mse, (x, y), batch_size=batching)
    theta = full.theta0 + 0.05 * torch.randn(full.dim, dtype=torch.float64)
    v = torch.randn(full.dim, dtype=torch.float64)
    torch.testing.assert_close(obj.loss(theta), full.loss(theta), rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(obj.grad(theta), full.grad(theta), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(obj.hvp(theta, v), full.hvp(theta, v), rtol=1e-11, atol=1e-13)


def test_sum_reduction_equals_mean_reduction():
    model = _mlp()
    x, y = torch.randn(10, 5, dtype=torch.float64), torch.randn(10, 3, dtype=torch.float64)
    mean = Objective.from_module(model, _half_mse, (x, y), batch_size=3)
    total = Objective.from_module(model, lambda o, t: 0.5 * ((o - t) ** 2).sum(), (x, y),
                                  batch_size=4, loss_reduction="sum")
    torch.testing.assert_close(total.grad(mean.theta0), mean.grad(mean.theta0))


def test_forward_over_reverse_matches_and_falls_back_on_mse_loss():
    model = _mlp()
    x, y = torch.randn(9, 5, dtype=torch.float64), torch.randn(9, 3, dtype=torch.float64)
    ref = Objective.from_module(model, _half_mse, (x, y))
    fwd = Objective.from_module(model, _half_mse, (x, y), hvp_method="forward_over_reverse")
    v = torch.randn(2, ref.dim, dtype=torch.float64)
    torch.testing.assert_close(fwd.hvp(ref.theta0, v), ref.hvp(ref.theta0, v))
    assert fwd.hvp_method == "forward_over_reverse"
    # F.mse_loss breaks torch.func's forward-over-reverse in some torch versions: the answer
    # must stay right either way (fallback to double backward, with a warning, if it breaks).
    mse = Objective.from_module(model, F.mse_loss, (x, y), hvp_method="forward_over_reverse")
    ref_mse = Objective.from_module(model, F.mse_loss, (x, y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        torch.testing.assert_close(mse.hvp(ref.theta0, v), ref_mse.hvp(ref.theta0, v))


def test_dtype_and_float32_follow_theta():
    model = _mlp()
    x, y = torch.randn(6, 5), torch.randn(6, 3)
    obj = Objective.from_module(model, _half_mse, (x, y))
    t32 = obj.theta0.float()
    with pytest.warns(RuntimeWarning, match="theta is torch.float32 but .* parameters are torch.float64"):
        assert obj.grad(t32).dtype == torch.float32
    assert obj.hvp(t32, torch.randn(obj.dim)).dtype == torch.float32
    torch.testing.assert_close(obj.grad(t32).double(), obj.grad(obj.theta0), rtol=1e-4, atol=1e-5)


def test_mode_is_explicit_and_restored():
    model = nn.Sequential(nn.Linear(5, 20), nn.Dropout(0.5), nn.Linear(20, 3)).double()
    model.train()
    x, y = torch.randn(8, 5, dtype=torch.float64), torch.randn(8, 3, dtype=torch.float64)
    obj = Objective.from_module(model, _half_mse, (x, y), mode="eval")
    a, b = obj.loss(obj.theta0), obj.loss(obj.theta0)
    assert model.training, "the caller's mode must be restored"
    assert a == b, "eval mode: dropout off, deterministic"
    with pytest.warns(RuntimeWarning, match="switched off"):
        current = Objective.from_module(model, _half_mse, (x, y))
    assert current.loss(obj.theta0) == current.loss(obj.theta0) == a  # train-mode dropout is switched off
    seeded = Objective.from_module(model, _half_mse, (x, y), stochastic_seed=0)
    assert seeded.loss(obj.theta0) == seeded.loss(obj.theta0) != a  # a fixed mask, on request
    model.eval()
    assert current.loss(obj.theta0) == a


def test_module_is_not_modified_and_assign_writes_it():
    model = _mlp()
    before = [p.clone() for p in model.parameters()]
    obj = Objective.from_module(model, _half_mse, (torch.randn(4, 5).double(), torch.randn(4, 3).double()))
    theta = obj.theta0 + 1.0
    obj.grad(theta)
    obj.hvp(theta, torch.ones(obj.dim, dtype=torch.float64))
    for p, q in zip(model.parameters(), before):
        assert torch.equal(p, q)
    obj.assign_to_module(theta)
    assert torch.equal(torch.cat([p.reshape(-1) for p in model.parameters()]), theta)


def test_frozen_parameters_are_not_in_theta():
    model = _mlp()
    model[0].bias.requires_grad_(False)
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    obj = Objective.from_module(model, _half_mse, (x, y))
    assert obj.dim == sum(p.numel() for p in model.parameters()) - 7
    assert obj.grad(obj.theta0).shape == (obj.dim,)


# ------------------------------------------------------------------ bad input
def test_bad_inputs_raise_clear_errors():
    model = _mlp()
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="scalar"):
        Objective.from_module(model, lambda o, t: ((o - t) ** 2).mean(dim=1), (x, y))
    with pytest.raises(ValueError, match="scalar"):
        Objective.from_function(lambda t: t ** 2, dim=3)
    obj = Objective.from_module(model, _half_mse, (x, y))
    with pytest.raises(ValueError, match=rf"shape \({obj.dim},\)"):
        obj.grad(torch.zeros(obj.dim + 1, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating point"):
        obj.loss(torch.zeros(obj.dim, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        obj.loss([0.0] * obj.dim)
    with pytest.raises(ValueError, match="v must have shape"):
        obj.hvp(obj.theta0, torch.zeros(3, dtype=torch.float64))
    frozen = _mlp().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        Objective.from_module(frozen, _half_mse, (x, y))
    with pytest.raises(ValueError, match="empty"):
        Objective.from_module(model, _half_mse, (x[:0], y[:0]))
    with pytest.raises(ValueError, match="empty"):
        Objective.from_module(model, _half_mse, [])
    with pytest.raises(ValueError, match="differ in length"):
        Objective.from_module(model, _half_mse, (x, y[:3]))
    with pytest.raises(ValueError, match="batch_size"):
        Objective.from_module(model, _half_mse, (x, y), batch_size=0)
    with pytest.raises(ValueError, match="mode must be one of"):
        Objective.from_module(model, _half_mse, (x, y), mode="inference")
    with pytest.raises(ValueError, match="hvp_method must be one of"):
        Objective.from_module(model, _half_mse, (x, y), hvp_method="magic")
    with pytest.raises(TypeError, match="nn.Module"):
        Objective.from_module(lambda z: z, _half_mse, (x, y))
    with pytest.raises(ValueError, match="dim must be a positive int"):
        Objective.from_function(lambda t: t.sum(), dim=0)


def test_compiled_loss_matches_eager_and_failures_fall_back():
    import warnings

    from models import fc_tanh, teacher_student

    x, y = teacher_student(n=32, d_in=4, d_out=2, width=6)
    model = fc_tanh((4, 8, 2), dtype=torch.float64)
    eager = Objective.from_module(model, torch.nn.functional.mse_loss, (x, y))
    fast = Objective.from_module(model, torch.nn.functional.mse_loss, (x, y), compile="aot_eager")
    theta = eager.theta0
    l0, g0 = eager.loss_and_grad(theta)
    l1, g1 = fast.loss_and_grad(theta)
    torch.testing.assert_close(l1, l0, rtol=1e-12, atol=0)
    torch.testing.assert_close(g1, g0, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(fast.hvp(theta, g0), eager.hvp(theta, g0))  # HVPs stay eager
    broken = Objective.from_module(model, torch.nn.functional.mse_loss, (x, y), compile="no-such-backend")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        l2, g2 = broken.loss_and_grad(theta)
    assert any("torch.compile" in str(w.message) for w in caught) and broken.compile is False
    torch.testing.assert_close(g2, g0)
    with pytest.raises(ValueError, match="compile"):
        Objective.from_module(model, torch.nn.functional.mse_loss, (x, y), compile=3)


@pytest.mark.parametrize("const_dtype", [torch.float64, torch.float32])
def test_from_function_without_theta0_accepts_the_functions_own_dtype(const_dtype):
    a = torch.randn(3, 3, dtype=const_dtype)
    obj = Objective.from_function(lambda t: t @ a @ t, 3)
    theta = torch.ones(3, dtype=const_dtype)
    assert torch.allclose(obj.grad(theta), (a + a.T) @ theta)
    with pytest.raises(ValueError, match="must return a scalar"):
        Objective.from_function(lambda t: a @ t, 3)
