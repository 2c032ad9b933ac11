"""Heavy-ball and SGD modified flows: local-error orders measured against their theory (±0.3)."""
import numpy as np
import pytest
import torch
from torch import nn

from flows import FLOWS, Objective
from flows.curvature.stochastic import MiniBatches
from flows.dynamics.integrate import heavy_ball_local_error, sgd_epoch_local_error

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
