"""Flows against closed forms: PF = GD on quadratics, GF = matrix exponential, BEA local error orders."""
import math

import numpy as np
import pytest
import torch

from flows import compare, gradient_descent, integrate, local_error, pf_coefficient, toys


@pytest.mark.parametrize("h", [0.5, 0.9, 1.05])
def test_pf_equals_gd_on_pf_quadratic(h):
    obj = toys.get("pf-quadratic")
    steps = 12
    gd = gradient_descent(obj, lr=h, steps=steps)
    pf = integrate(obj, flow="pf", lr=h, steps=steps, rtol=1e-11, atol=1e-13)
    assert pf.status == "complete"
    assert np.iscomplexobj(pf.states)
    np.testing.assert_allclose(pf.states.real, gd.states, rtol=0, atol=1e-6)
    np.testing.assert_allclose(pf.states.imag, 0.0, atol=1e-6)  # imaginary part vanishes at t = n·h
    if h == 1.05:  # hλ = 2.1: GD oscillates and diverges along the sharp direction; so does PF
        assert abs(gd.states[-1, 0]) > abs(gd.states[0, 0])
        assert np.all(np.sign(gd.states[1:, 0]) != np.sign(gd.states[:-1, 0]))


def test_gf_equals_matrix_exponential():
    obj = toys.get("pf-quadratic")
    h, steps = 0.5, 10
    traj = integrate(obj, flow="gf", lr=h, steps=steps, rtol=1e-11, atol=1e-13)
    a2 = torch.diag(torch.tensor([2.0, 0.02], dtype=torch.float64))
    for t, state in zip(traj.times, traj.states):
        expected = torch.linalg.matrix_exp(-t * a2) @ obj.theta0
        np.testing.assert_allclose(state, expected.numpy(), rtol=0, atol=1e-9)


def _local_errors(flow, hs, name="cubic"):
    obj = toys.get(name)
    return np.array([local_error(obj, obj.theta0, flow, h) for h in hs])


@pytest.mark.parametrize("flow,order", [("gf", 2), ("igr", 3), ("third_order", 4), ("pf", 3)])
def test_local_error_orders(flow, order):
    hs = np.array([0.08, 0.04, 0.02, 0.01])
    errs = _local_errors(flow, hs)
    slope = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    if flow == "pf":
        assert slope >= order - 0.3, (slope, errs)
    else:
        assert abs(slope - order) <= 0.3, (slope, errs)


def test_pf_topk_full_rank_equals_pf_in_real_regime():
    obj = toys.get("cubic")
    h = 0.3  # hλ < 1 along the whole path (λ ≤ 1.6)
    a = integrate(obj, flow="pf", lr=h, steps=8, rtol=1e-10, atol=1e-12)
    b = integrate(obj, flow="pf_topk", lr=h, steps=8, k=2, rtol=1e-10, atol=1e-12)
    assert np.abs(a.states.imag).max() < 1e-10
    np.testing.assert_allclose(b.states, a.states.real, rtol=0, atol=1e-8)


def test_pf_coefficient_regimes_and_special_points():
    x = torch.tensor([-1.0, 0.0, 1e-6, 0.5, 1.0, 1.5, 3.0], dtype=torch.float64)
    c = pf_coefficient(x)
    assert torch.isfinite(c.real).all() and torch.isfinite(c.imag).all()
    assert abs(complex(c[1]) - (-1)) < 1e-15
    for xi, ci in zip(x.tolist(), c.tolist()):
        if xi in (0.0, 1.0):
            continue
        expected = (math.log(abs(1 - xi)) + (1j * math.pi if xi > 1 else 0)) / xi
        assert abs(ci - expected) < 1e-9 * max(1, abs(expected))
    assert c[4].real < -20  # the one-step kill is a very fast (finite) decay
    rate = (c * x).real  # growth rate × h of a component: log|1 − x|
    assert rate[0] > 0 and rate[3] < 0 and rate[5] < 0 and rate[6] > 0  # escape, decay, decay, divergence


def test_compare_reports_drift_on_grid():
    obj = toys.get("pf-quadratic")
    cmp = compare(obj, lr=0.9, steps=6, flows=("gf", "pf"), rtol=1e-10, atol=1e-12)
    assert cmp.drift["pf"].shape == (7,) and cmp.drift["pf"].max() < 1e-6
    assert cmp.drift["gf"][-1] > 1e-2  # GF does not oscillate; GD at hλ = 1.8 does
    assert cmp.drift["gf"][0] == 0.0


def test_bad_inputs_list_choices():
    obj = toys.get("cubic")
    with pytest.raises(ValueError, match="unknown flow 'nope'; valid choices: gf, igr"):
        integrate(obj, flow="nope", steps=2)
    with pytest.raises(ValueError, match="unknown method 'rk45'; valid choices: auto, dopri5"):
        integrate(obj, method="rk45", steps=2)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        integrate(obj, lr=0.0, steps=2)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        gradient_descent(obj, lr=-1.0, steps=2)
    with pytest.raises(ValueError, match="strictly increasing"):
        integrate(obj, times=[0.0, 0.2, 0.1])
    with pytest.raises(ValueError, match="at least two"):
        integrate(obj, times=[])
    with pytest.raises(ValueError, match=r"theta0 must have shape \(2,\)"):
        integrate(obj, torch.zeros(3, dtype=torch.float64), steps=2)
    with pytest.raises(ValueError, match="steps must be an int"):
        gradient_descent(obj, lr=0.1, steps=-1)


def test_pf_topk_igr_rest_full_rank_equals_pf_and_zero_rank_is_igr():
    obj = toys.get("cubic")
    theta = obj.theta0
    from flows.fields import igr, pf, pf_topk
    from flows import EigenTracker
    h = 0.3
    exact = pf(obj, theta, h).real
    full = pf_topk(obj, theta, h, k=2, rest="igr")
    torch.testing.assert_close(full, exact, rtol=1e-10, atol=1e-12)
    # with the top eigenpair only, the bulk follows IGR: compare against the closed form
    pairs = EigenTracker(k=1, method="dense").update(obj, theta)
    lam, u = pairs.values[0], pairs.vectors[:, 0]
    g = obj.grad(theta)
    expected = igr(obj, theta, h) + (pf_coefficient(h * lam).real + 1 + h * lam / 2) * (u @ g) * u
    torch.testing.assert_close(pf_topk(obj, theta, h, k=1, rest="igr"), expected, rtol=1e-12, atol=1e-12)


def test_solver_failure_keeps_work_and_says_what_to_try():
    obj = toys.get("pf-quadratic")
    with pytest.warns(RuntimeWarning, match="max_num_steps"):
        traj = integrate(obj, flow="gf", lr=0.5, steps=40, max_num_steps=3, chunk=4)
    assert traj.status == "failed"
    event = traj.events[-1]
    assert event["kind"] == "solver_failure" and "suggestion" in event
    assert len(traj) >= 1 and np.all(np.isfinite(traj.losses))


def test_fixed_step_is_bounded_by_stiffness():
    obj = toys.get("pf-quadratic")
    traj = integrate(obj, flow="gf", lr=2.0, steps=3, method="rk4")
    assert traj.config["step_size"] <= 1.0 / 2.0 + 1e-12  # λ_max = 2
    np.testing.assert_allclose(traj.states[-1][0], -0.35 * math.exp(-2 * 6.0), atol=1e-4)
