"""The flow records: strict keywords (a misspelt option raises, naming the valid ones) and what the integrator reads;
the heavy-ball and SGD modified flows: local-error orders measured against their theory (±0.3)."""
import math
import time

import numpy as np
import pytest
import torch
from torch import nn

from flows import FLOWS, EigenTracker, Flow, Objective, compare, get_flow, integrate, local_error
from flows.curvature.stochastic import MiniBatches
from flows.dynamics.fields import pf_coefficient
from flows.dynamics.integrate import heavy_ball_local_error, sgd_epoch_local_error


@pytest.mark.parametrize("name", sorted(FLOWS))
def test_a_misspelt_keyword_to_a_field_raises_naming_the_valid_ones(cubic, name):
    flow = get_flow(name)
    with pytest.raises(TypeError, match="takes no option") as err:
        flow(cubic, cubic.theta0, 0.1, kk=3)
    for keyword in flow.keywords:
        assert keyword in str(err.value)


def test_compare_refuses_an_unknown_keyword_before_running_gd(cubic):
    start = time.monotonic()
    with pytest.raises(TypeError, match=r"unknown keyword argument\(s\) \['kk'\].*eig_refresh"):
        compare(cubic, lr=0.1, steps=10 ** 6, flows="pf_topk", kk=3)
    assert time.monotonic() - start < 5  # refused up front, not after a million GD steps
    with pytest.raises(TypeError, match="kk"):
        integrate(cubic, flow="pf_topk", lr=0.1, steps=2, kk=3)
    with pytest.raises(TypeError, match="kk"):
        local_error(cubic, flow="gf", lr=0.1, kk=3)


def test_flow_options_are_checked_against_the_record(cubic):
    with pytest.raises(ValueError, match=r"unknown flow_options \['rest'\] for flow 'gf'; valid choices: none"):
        integrate(cubic, flow="gf", lr=0.1, steps=2, flow_options={"rest": "igr"})
    with pytest.raises(ValueError, match="valid choices: branch"):
        integrate(cubic, flow="pf", lr=0.1, steps=2, flow_options={"brnach": "continued"})


def test_records_say_what_the_integrator_needs():
    assert {n for n, f in FLOWS.items() if f.complex_state} == {"pf"}
    assert {n for n, f in FLOWS.items() if f.eigenpairs} == {"pf_topk", "pf_topk_igr"}
    assert [FLOWS[n].order for n in ("gf", "igr", "third_order")] == [2, 3, 4]
    for flow in FLOWS.values():
        assert ("t" in flow.keywords) == flow.timed
        assert ("k" in flow.keywords) == flow.eigenpairs
        assert set(flow.prepare({})) <= set(flow.keywords)  # what the field receives, it accepts
        if flow.prepare is dict:  # options passed through unprepared are keywords themselves
            assert set(flow.options) <= set(flow.keywords)
    with pytest.raises(ValueError, match="stiffness must be one of"):
        Flow("x", FLOWS["gf"].field, "X", 2, stiffness="fast")


@pytest.mark.parametrize("lam,lr", [(3.0, 0.1), (-2.0, 0.5), (25.0, 0.1)])
def test_stiffness_models_by_hand(lam, lr):
    a = abs(lam)
    assert FLOWS["gf"].rate(lam, lr) == a
    assert FLOWS["igr"].rate(lam, lr) == pytest.approx(a * (1 + lr * a / 2 + (lr * a) ** 2 / 3))
    c = complex(pf_coefficient(torch.tensor(lr * lam, dtype=torch.float64)))
    assert FLOWS["pf"].rate(lam, lr) == pytest.approx(max(a, abs(c * lam)))
    assert math.isfinite(FLOWS["pf_topk"].rate(lam, lr))


def test_a_user_record_integrates_like_a_builtin(cubic):
    """A registered record is all the integrator needs: no name is tested anywhere."""
    def half_gf(objective, theta, lr):
        return -0.5 * objective.grad(theta)

    FLOWS["half_gf"] = Flow("half_gf", half_gf, "GF at half speed", 2)
    try:
        slow = integrate(cubic, flow="half_gf", lr=0.1, steps=4, method="rk4", step_size=0.01)
        fast = integrate(cubic, flow="gf", lr=0.05, steps=4, method="rk4", step_size=0.005)
        torch.testing.assert_close(torch.as_tensor(slow.states[-1]), torch.as_tensor(fast.states[-1]),
                                   rtol=1e-9, atol=1e-12)
    finally:
        del FLOWS["half_gf"]


RATES = (0.02, 0.04, 0.08)


def _order(errors, rates=RATES) -> float:
    return float(np.polyfit(np.log(rates), np.log(errors), 1)[0])


def _toy():
    """E(x, y) = (x² + y² − 1)²/4 + x·y/3 + sin(x)/5: non-quadratic, third derivatives everywhere."""
    return Objective.from_function(lambda t: (t[0] ** 2 + t[1] ** 2 - 1) ** 2 / 4 + t[0] * t[1] / 3
                                   + torch.sin(t[0]) / 5, 2)


@pytest.mark.parametrize("beta", [0.5, 0.9])
def test_heavy_ball_flow_orders(beta):
    """Rates scaled by 1 − β (the expansion is in h/(1 − β)); measured 3.03 and 3.20 against 3, 1.99 and 2.00
    against 2. At β = 0.9 the first-order flow's constant is large: it beats the leading-order flow only at the
    smallest rate here."""
    obj, theta = _toy(), torch.tensor([1.3, -0.4], dtype=torch.float64)
    rates = tuple((1 - beta) * r for r in (0.005, 0.01, 0.02))
    full = [heavy_ball_local_error(obj, theta, h, beta, "heavy_ball") for h in rates]
    lead = [heavy_ball_local_error(obj, theta, h, beta, "heavy_ball_gf") for h in rates]
    assert abs(_order(full, rates) - 3) <= 0.3, full
    assert abs(_order(lead, rates) - 2) <= 0.3, lead
    assert full[0] < lead[0]


def test_heavy_ball_at_zero_momentum_is_igr():
    obj, theta = _toy(), torch.tensor([0.7, 0.2], dtype=torch.float64)
    torch.testing.assert_close(FLOWS["heavy_ball"](obj, theta, 0.1, momentum=0.0), FLOWS["igr"](obj, theta, 0.1))
    with pytest.raises(ValueError, match=r"momentum must be a number in \[0, 1\)"):
        FLOWS["heavy_ball"](obj, theta, 0.1, momentum=1.0)


def test_sgd_modified_flow_orders_against_the_exact_mean_over_orders():
    """A tanh MLP with a log-cosh loss on 12 points in 4 batches of 3: the mean SGD epoch endpoint over all 24
    orders is O(h³) from the modified flow and O(h²) from gradient flow on the epoch's loss."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 2, generator=gen, dtype=torch.float64), torch.randn(12, 1, generator=gen,
                                                                               dtype=torch.float64)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    epoch = MiniBatches(model, lambda out, t: torch.log(torch.cosh(out - t)).mean(), (x, y), 3, seed=1).epoch()
    theta = epoch.theta0
    modified = [sgd_epoch_local_error(epoch, theta, h, "sgd_modified") for h in RATES]
    plain = [sgd_epoch_local_error(epoch, theta, h, "gf") for h in RATES]
    assert abs(_order(modified) - 3) <= 0.3, modified
    assert abs(_order(plain) - 2) <= 0.3, plain
    assert all(a < b for a, b in zip(modified, plain))


# The top-k principal flow certifies its eigen solves once per GD step of flow time (``verify_steps``), as the
# central flow does: the solves between are warm, and a repeated eigenvalue found by the certified solve stays in
# the set. Checked on a multi-output linear head (½-MSE), whose Hessian I_C ⊗ [X 1]ᵀ[X 1]/N repeats every
# eigenvalue C times, an objective no experiment uses.

OUTPUTS = 4


def linear_head() -> Objective:
    torch.manual_seed(0)
    x = torch.randn(64, 80, dtype=torch.float64)
    y = torch.randn(64, OUTPUTS, dtype=torch.float64)
    model = nn.Linear(80, OUTPUTS).double()

    def half_mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((out - target) ** 2).sum(dim=1).mean()
    return Objective.from_module(model, half_mse, (x, y))


class SpyTracker(EigenTracker):
    """An EigenTracker that records whether each update was certified."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.certified_updates: list[bool] = []

    def update(self, objective, theta, preconditioner=None, *, verify=None):
        self.certified_updates.append(self.verify if verify is None else verify)
        return super().update(objective, theta, preconditioner, verify=verify)


def run(obj: Objective, verify_steps: float):
    tracker = SpyTracker(k=6, tol=1e-8)
    lam = float(torch.linalg.eigvalsh(obj.hessian(obj.theta0))[-1])
    h = 1.5 / lam  # hλ₁ > 1: the PF's coefficients are complex there, its real part is integrated
    traj = integrate(obj, flow="pf_topk", lr=h, steps=3, method="rk4", step_size=h / 4, k=6, tracker=tracker,
                     eig_refresh=0.0, flow_options={"verify_steps": verify_steps}, states="full")
    return traj, tracker


def test_pf_topk_certifies_once_per_gd_step_and_keeps_every_copy_of_a_repeated_eigenvalue():
    obj = linear_head()
    assert obj.dim > 300  # Lanczos, not the dense path
    every, tracker_every = run(obj, 0)
    once, tracker_once = run(obj, 1)
    assert all(tracker_every.certified_updates)
    flags = tracker_once.certified_updates
    assert len(flags) == len(tracker_every.certified_updates) == 3 * 4 * 4  # RK4 at h/4: 4 stages per substep
    # t = 0, then the first evaluation at each multiple of h: RK4's last stage of every fourth substep
    assert [i for i, certified in enumerate(flags) if certified] == [0, 15, 31, 47]
    dense = torch.linalg.eigvalsh(obj.hessian(obj.theta0)).flip(0)[:6]
    assert torch.allclose(dense[:OUTPUTS], dense[0].expand(OUTPUTS), rtol=1e-10)  # the multiplicity is real
    torch.testing.assert_close(tracker_once.last.values, dense, rtol=1e-7, atol=0)  # every copy kept
    torch.testing.assert_close(once.states[-1], every.states[-1], rtol=1e-7, atol=1e-10)


def test_pf_topk_refuses_a_negative_verify_steps_naming_it():
    obj = linear_head()
    with pytest.raises(ValueError, match="verify_steps must be a finite number ≥ 0"):
        integrate(obj, flow="pf_topk", lr=0.1, steps=1, k=2, eig_refresh=0.0, flow_options={"verify_steps": -1})
