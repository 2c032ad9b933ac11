"""The torch.optim forms are drop-in: schedulers scale every optimizer's step, parameter groups with their own
rate and decoupled weight decay, state_dict round trips with groups."""
import copy

import pytest
import torch

from analysis.controllers import (
    AliceOptimizer,
    ALIGOptimizer,
    ConstantOptimizer,
    CorridorLROptimizer,
    DriftAdjustedLROptimizer,
    PALOptimizer,
    SPSMaxOptimizer,
    WNGradOptimizer,
)

DT = torch.float64
OPTIMIZERS = {
    "constant": lambda p: ConstantOptimizer(p, lr=0.2),
    "wngrad": lambda p: WNGradOptimizer(p, lr=0.5),
    "alice": lambda p: AliceOptimizer(p, lr=0.01),
    "pal": lambda p: PALOptimizer(p),
    "sps": lambda p: SPSMaxOptimizer(p, max_lr=1.0),
    "alig": lambda p: ALIGOptimizer(p, max_lr=0.5),
    "clr": lambda p: CorridorLROptimizer(p, max_lr=1.0),
    "dal-fd": lambda p: DriftAdjustedLROptimizer(p, p=1.0, hvp="finite_difference"),
}
SCHEDULERS = {
    "step": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5),
    "lambda": lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda n: [1.0, 0.0, 0.25, 2.0, 1.0][n]),
    "cosine": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=4),
}


def _setup(seed=0):
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(24, 3, generator=gen, dtype=DT), torch.randn(24, 2, generator=gen, dtype=DT)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2)).double()
    return model, x, y


def _closure(model, opt, x, y):
    def closure():
        opt.zero_grad()
        loss = 0.5 * ((model(x) - y) ** 2).sum(1).mean()
        loss.backward()
        return loss
    return closure


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _step(model, opt, x, y):
    before = _flat(model)
    with torch.random.fork_rng():
        torch.manual_seed(123)
        opt.step(_closure(model, opt, x, y))
    return _flat(model) - before


@pytest.mark.parametrize("sched", sorted(SCHEDULERS))
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_scheduler_scales_every_optimizers_step(name, sched):
    model, x, y = _setup()
    opt = OPTIMIZERS[name](model.parameters())
    scheduler = SCHEDULERS[sched](opt)
    lr0 = opt.param_groups[0]["lr"]
    factors = []
    for _ in range(4):
        factor = opt.param_groups[0]["lr"] / lr0
        twin_model = copy.deepcopy(model)
        twin = OPTIMIZERS[name](twin_model.parameters())
        twin.load_state_dict(opt.state_dict())
        twin.param_groups[0]["lr"] = lr0  # the same optimizer state without the schedule
        full = _step(twin_model, twin, x, y)
        scaled = _step(model, opt, x, y)
        torch.testing.assert_close(scaled, factor * full, rtol=1e-10, atol=1e-14)
        factors.append(factor)
        scheduler.step()
    assert len(set(round(f, 12) for f in factors)) > 1  # the schedule did change the step


def test_groups_with_their_own_rate_and_decoupled_weight_decay_equal_sgd():
    """Constant with two groups (decay on weights, none on biases; another rate for the head) is torch's SGD
    with the same groups and AdamW-style decoupled decay θ ← θ − lr·wd·θ."""
    model, x, y = _setup()
    ref = copy.deepcopy(model)
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    opt = ConstantOptimizer([{"params": weights, "weight_decay": 0.1}, {"params": biases, "lr": 0.05}], lr=0.2)
    r_weights = [p for n, p in ref.named_parameters() if n.endswith("weight")]
    r_biases = [p for n, p in ref.named_parameters() if n.endswith("bias")]
    groups = [(r_weights, 0.2, 0.1), (r_biases, 0.05, 0.0)]
    for _ in range(3):
        opt.step(_closure(model, opt, x, y))
        for p in ref.parameters():
            p.grad = None
        (0.5 * ((ref(x) - y) ** 2).sum(1).mean()).backward()
        with torch.no_grad():
            for params, lr, wd in groups:
                for p in params:
                    p.mul_(1 - lr * wd).sub_(lr * p.grad)
    torch.testing.assert_close(_flat(model), _flat(ref), rtol=1e-12, atol=1e-14)


def test_state_dict_round_trip_with_groups_and_a_scheduler():
    def build(model):
        head = list(model[2].parameters())
        body = list(model[0].parameters())
        opt = PALOptimizer([{"params": body, "weight_decay": 0.01}, {"params": head, "lr": 0.5}])
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)

    model, x, y = _setup()
    opt, sched = build(model)
    for _ in range(6):
        opt.step(_closure(model, opt, x, y))
        sched.step()
    straight = _flat(model)
    model, x, y = _setup()
    opt, sched = build(model)
    for n in range(6):
        if n == 3:
            saved = copy.deepcopy((opt.state_dict(), sched.state_dict()))
            opt, sched = build(model)
            opt.load_state_dict(saved[0])
            sched.load_state_dict(saved[1])
        opt.step(_closure(model, opt, x, y))
        sched.step()
    torch.testing.assert_close(_flat(model), straight, rtol=0, atol=0)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.5 * 0.5 ** 3)


def test_bad_group_settings_are_named():
    model, _, _ = _setup()
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['weight_decay'\] must be a finite number ≥ 0"):
        ConstantOptimizer([{"params": list(model.parameters()), "weight_decay": -0.1}], lr=0.1)
