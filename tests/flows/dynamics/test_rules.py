"""Update rules and schedules against their oracles: torch.optim's RMSprop and Adam step for step, the
backward-Euler identity behind the continuous EMA rate (1 − β)/β, and the schedules' values by hand."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from flows import Objective, gradient_descent
from flows.dynamics.rules import GD, RULES, Adam, RMSProp, ScalarRMSProp, get_rule
from flows.dynamics.schedules import Constant, StepDecay, WarmupCosine, as_schedule


def _classifier() -> Objective:
    """A LayerNorm MLP with cross-entropy on a Gaussian mixture (no experiment uses it)."""
    from models import gaussian_mixture

    torch.manual_seed(0)
    x, y = gaussian_mixture(n=64, d=4, classes=3, dtype=torch.float64)
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 3)).double()
    return Objective.from_module(model, nn.CrossEntropyLoss(), (x, y))


@pytest.mark.parametrize("rule,make", [
    (RMSProp(0.01, beta2=0.9, eps=1e-8), lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-8)),
    (Adam(0.01, beta1=0.8, beta2=0.95, eps=1e-8, bias_correction=True),
     lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.95), eps=1e-8)),
])
def test_the_discrete_rule_is_torchs_optimizer_step_for_step(rule, make):
    obj = _classifier()
    run = gradient_descent(obj, obj.theta0, 0.01, 12, controller=rule.controller(), states="full")
    theta = obj.theta0.clone().requires_grad_(True)
    opt = make([theta])
    expected = [theta.detach().clone()]
    for _ in range(12):
        opt.zero_grad()
        theta.grad = obj.grad(theta.detach())
        opt.step()
        expected.append(theta.detach().clone())
    np.testing.assert_allclose(run.state_matrix(), torch.stack(expected).numpy(), rtol=1e-12, atol=1e-14)
    assert run.config["controller_settings"]["rule"] == rule.name
    assert np.isfinite(run.metric("nu")[:-1]).all()  # the last row takes no step


@pytest.mark.parametrize("name", ["scalar_rmsprop", "rmsprop", "adam"])
def test_the_discrete_ema_is_the_backward_euler_step_of_the_continuous_rate(name):
    """ν' = ν + (1 − β)(g² − ν) equals ν + c(g² − ν') with c = (1 − β)/β: the rate the flows use."""
    rule = get_rule(name, lr=0.1, beta2=0.9)
    torch.manual_seed(1)
    theta = torch.randn(5, dtype=torch.float64)
    state = rule.fold(rule.initial_state(theta), torch.randn(5, dtype=torch.float64))
    g = torch.randn(5, dtype=torch.float64)
    new = rule.fold(state, g)
    implicit = rule.rate(new, g, g * g)  # the continuous rate at the *new* state
    for key in ("nu", "m") if name == "adam" else ("nu",):
        np.testing.assert_allclose((new[key] - state[key]).numpy(), implicit[key].numpy(), rtol=1e-13, atol=1e-15)
    assert rule.nu_rate == pytest.approx((1 - 0.9) / 0.9)


def test_the_preconditioner_rate_is_the_derivative_of_the_preconditioner():
    """dp/dt from the rule's chain rule against a central difference along ds/dt, with bias correction and a
    warm-up + cosine schedule (all three paths: ν, the correction, η(t))."""
    schedule = WarmupCosine(peak=0.05, warmup=5, total=40, final=0.005)
    for rule in (GD(schedule), ScalarRMSProp(schedule, beta2=0.95, eps=1e-3, bias_correction=True),
                 Adam(schedule, beta2=0.95, bias_correction=True)):
        torch.manual_seed(2)
        theta = torch.randn(4, dtype=torch.float64)
        state = rule.initial_state(theta)
        for _ in range(7):
            state = rule.fold(state, torch.randn(4, dtype=torch.float64))
        g = torch.randn(4, dtype=torch.float64)
        rate = rule.rate(state, g, g * g)
        h = 1e-6
        plus = rule.preconditioner({k: state[k] + h * rate[k] for k in state})
        minus = rule.preconditioner({k: state[k] - h * rate[k] for k in state})
        np.testing.assert_allclose(rule.preconditioner_rate(state, rate).numpy(), ((plus - minus) / (2 * h)).numpy(),
                                   rtol=1e-6, atol=1e-9)


def test_schedules_by_hand_and_gradient_descent_follows_one():
    cosine = WarmupCosine(peak=0.2, warmup=4, total=12, final=0.02)
    assert cosine(0) == pytest.approx(0.05) and cosine(2) == pytest.approx(0.15) and cosine(4) == pytest.approx(0.2)
    assert cosine(8) == pytest.approx(0.02 + 0.18 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert cosine(12) == pytest.approx(0.02) and cosine(50) == 0.02
    decay = StepDecay(0.1, every=3, factor=0.5)
    assert [decay(n) for n in range(7)] == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025])
    obj = Objective.from_function(lambda th: 0.5 * (th ** 2).sum(), 2)
    run = gradient_descent(obj, torch.ones(2, dtype=torch.float64), decay, 6)
    np.testing.assert_allclose(run.metric("lr")[:6], [decay(n) for n in range(6)])
    np.testing.assert_allclose(run.times, np.concatenate([[0.0], np.cumsum([decay(n) for n in range(6)])]))
    expected = np.prod([1 - decay(n) for n in range(6)])
    np.testing.assert_allclose(run.state_matrix()[-1], [expected, expected], rtol=1e-14)
    assert "StepDecay" in run.config["lr"]


@pytest.mark.parametrize("make,match", [
    (lambda: WarmupCosine(peak=0.1, warmup=10, total=5), "total"), (lambda: StepDecay(0.1, every=0), "every"),
    (lambda: StepDecay(0.1, every=2, factor=1.5), "factor"), (lambda: Constant(-1.0), "lr"),
    (lambda: as_schedule(lambda n: -0.1), "positive rate"), (lambda: RMSProp(0.1, beta2=1.0), "beta2"),
    (lambda: Adam(0.1, beta1=0.0), "beta1"), (lambda: ScalarRMSProp(0.1, eps=-1.0), "eps"),
    (lambda: get_rule("lion"), "valid choices: gd, scalar_rmsprop, rmsprop, adam"),
])
def test_bad_settings_are_named(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_thresholds_and_registry():
    assert GD(0.1).threshold == RMSProp(0.1).threshold == 2.0
    assert Adam(0.1, beta1=0.9).threshold == pytest.approx(38.0)  # 38/η: Cohen et al. 2022's preconditioned edge
    assert set(RULES) == {"gd", "scalar_rmsprop", "rmsprop", "adam"}
