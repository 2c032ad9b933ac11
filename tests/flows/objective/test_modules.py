"""from_module on networks with Dropout, BatchNorm, complex parameters and bad data: deterministic or refused."""
import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flows import Objective, gradient_descent, top_eigenpairs


def _data(n=48):
    return torch.randn(n, 5, dtype=torch.float64), torch.randn(n, 2, dtype=torch.float64)


def _bn_dropout_net():
    return nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Dropout(0.3), nn.Linear(8, 2)).double()


def _buffers(model):
    return {n: b.clone() for n, b in model.named_buffers()}


def test_dropout_in_train_mode_is_switched_off_with_a_warning_and_the_objective_is_deterministic():
    model = _bn_dropout_net()  # a fresh model is in train mode
    with pytest.warns(RuntimeWarning, match="dropout layers in train mode"):
        obj = Objective.from_module(model, F.mse_loss, _data())
    theta = obj.theta0
    assert float(obj.loss(theta)) == float(obj.loss(theta))
    v = torch.randn_like(theta)
    assert torch.equal(obj.hvp(theta, v), obj.hvp(theta, v))
    a = top_eigenpairs(obj, theta, 2, tol=1e-6)
    b = top_eigenpairs(obj, theta, 2, tol=1e-6)
    assert a.converged and torch.allclose(a.values, b.values, rtol=1e-6)


def test_dropout_matches_the_network_without_it():
    x, y = _data()
    model = _bn_dropout_net()
    with pytest.warns(RuntimeWarning):
        obj = Objective.from_module(model, F.mse_loss, (x, y))
    plain = nn.Sequential(model[0], model[1], model[2], model[4])
    ref = Objective.from_module(plain, F.mse_loss, (x, y))
    assert float(obj.loss(obj.theta0)) == pytest.approx(float(ref.loss(ref.theta0)), rel=1e-14)


def test_seeded_dropout_is_a_fixed_mask_and_leaves_the_global_rng_alone():
    x, y = _data()
    model = _bn_dropout_net()
    obj = Objective.from_module(model, F.mse_loss, (x, y), stochastic_seed=7)
    off = Objective.from_module(model, F.mse_loss, (x, y), mode="eval")
    theta = obj.theta0
    state = torch.get_rng_state()
    first = float(obj.loss(theta))
    assert torch.equal(state, torch.get_rng_state())
    assert first == float(obj.loss(theta)) == float(obj.loss_and_grad(theta)[0])
    assert first != float(off.loss(theta))
    fwd = Objective.from_module(model, F.mse_loss, (x, y), stochastic_seed=7, hvp_method="forward_over_reverse")
    v = torch.randn_like(theta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mse_loss may fall back to double backward
        assert torch.allclose(fwd.hvp(theta, v), obj.hvp(theta, v), rtol=1e-10, atol=1e-12)


def test_a_random_loss_that_driftlab_cannot_switch_off_is_refused():
    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(5, 2).double()

        def forward(self, x):
            return F.dropout(self.lin(x), 0.5, training=True)  # functional: not a module driftlab can see

    with pytest.raises(ValueError, match="loss of this model is random"):
        Objective.from_module(Noisy(), F.mse_loss, _data())
    obj = Objective.from_module(Noisy(), F.mse_loss, _data(), stochastic_seed=1)
    assert float(obj.loss(obj.theta0)) == float(obj.loss(obj.theta0))


@pytest.mark.parametrize("hvp_method", ["double_backward", "forward_over_reverse"])
def test_running_statistics_are_never_touched(hvp_method):
    model = _bn_dropout_net()
    model[3].p = 0.0
    before = _buffers(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obj = Objective.from_module(model, F.mse_loss, _data(), hvp_method=hvp_method)
        theta = obj.theta0
        obj.loss(theta)
        obj.grad(theta)
        obj.hvp(theta, torch.randn(3, obj.dim, dtype=torch.float64))
        top_eigenpairs(obj, theta, 2)
        gradient_descent(obj, theta, 0.1, 3)
    after = _buffers(model)
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert int(after["1.num_batches_tracked"]) == 0


def test_train_mode_batchnorm_uses_full_batch_statistics_and_micro_batches_warn():
    x, y = _data(48)
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 2)).double()
    obj = Objective.from_module(model, F.mse_loss, (x, y))
    oracle = copy.deepcopy(model).train()
    with torch.no_grad():
        expected = float(F.mse_loss(oracle(x), y))  # one forward pass over the whole batch
    assert float(obj.loss(obj.theta0)) == pytest.approx(expected, rel=1e-13)
    with pytest.warns(RuntimeWarning, match="loss depends on batch_size"):
        ghost = Objective.from_module(model, F.mse_loss, (x, y), batch_size=16)
    with torch.no_grad():
        chunks = [float(F.mse_loss(copy.deepcopy(model).train()(x[i:i + 16]), y[i:i + 16])) for i in (0, 16, 32)]
    assert float(ghost.loss(ghost.theta0)) == pytest.approx(sum(chunks) / 3, rel=1e-13)
    # eval mode: running statistics, and then the micro-batch size does not matter
    a = Objective.from_module(model, F.mse_loss, (x, y), mode="eval")
    b = Objective.from_module(model, F.mse_loss, (x, y), mode="eval", batch_size=16)
    assert float(a.loss(a.theta0)) == pytest.approx(float(b.loss(b.theta0)), rel=1e-13)


def test_each_submodule_keeps_its_own_mode():
    model = _bn_dropout_net()
    model.train()
    model[1].eval()  # a user's frozen BatchNorm inside a training model
    model[3].eval()
    for mode in ("current", "eval", "train"):
        obj = Objective.from_module(model, F.mse_loss, _data(), mode=mode)
        obj.loss_and_grad(obj.theta0)
        assert model.training and not model[1].training and not model[3].training and model[0].training


def test_complex_parameters_are_refused():
    model = nn.Linear(3, 1, dtype=torch.cfloat)
    x, y = torch.randn(8, 3, dtype=torch.cfloat), torch.randn(8, 1, dtype=torch.cfloat)
    with pytest.raises(ValueError, match="complex parameters \\(weight, bias\\)"):
        Objective.from_module(model, lambda o, t: (o - t).abs().pow(2).mean(), (x, y))


@pytest.mark.parametrize("where", ["inputs", "targets"])
def test_non_finite_data_are_refused_naming_the_tensor(where):
    x, y = _data(20)
    batches = [(x[:10], y[:10]), (x[10:].clone(), y[10:].clone())]
    bad = batches[1][0] if where == "inputs" else batches[1][1]
    bad[2, 0] = float("inf") if where == "inputs" else float("nan")
    with pytest.raises(ValueError, match=f"the {where} of micro-batch 1 hold 1 NaN/Inf"):
        Objective.from_module(nn.Linear(5, 2).double(), F.mse_loss, batches)


def test_hessian_products_through_a_transformer_block_match_finite_differences():
    """nn.TransformerEncoderLayer uses a fused attention kernel with no second derivative on CPU (torch raised
    'derivative for aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented'); the
    objective runs attention on the math kernel, so HVPs work and are right. Cross-entropy, LayerNorm."""
    torch.manual_seed(0)

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Linear(4, 8)
            self.block = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            return self.head(self.block(self.emb(x)).mean(1))

    x, y = torch.randn(12, 5, 4, dtype=torch.float64), torch.randint(0, 3, (12,))
    obj = Objective.from_module(Tiny().double(), torch.nn.functional.cross_entropy, (x, y), batch_size=6)
    theta = obj.theta0
    for seed in range(3):
        v = torch.randn(obj.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        fd = (obj.grad(theta + 1e-5 * v) - obj.grad(theta - 1e-5 * v)) / 2e-5
        torch.testing.assert_close(obj.hvp(theta, v), fd, rtol=1e-6, atol=1e-8)
