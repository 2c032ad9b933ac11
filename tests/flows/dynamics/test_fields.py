"""The flow records: strict keywords (a misspelt option raises, naming the valid ones) and what the integrator reads."""
import math
import time

import pytest
import torch

from flows import FLOWS, Flow, compare, get_flow, integrate, local_error
from flows.dynamics.fields import pf_coefficient


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
