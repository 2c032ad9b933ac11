"""The integrator against closed forms (PF = GD on quadratics, GF = matrix exponential, BEA local error orders),
and its limits: network defaults, the GD-capped horizon of compare, time budgets and progress."""
import math
import time
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flows import Objective, compare, gradient_descent, integrate, local_error, pf_coefficient
from flows.dynamics.integrate import default_method, default_tolerances
from flows.objective import toys


@pytest.mark.parametrize("h", [0.5, 0.9, 1.05])
def test_pf_equals_gd_on_pf_quadratic(h):
    obj = toys.get("pf-quadratic")
    steps = 12
    gd = gradient_descent(obj, lr=h, steps=steps)
    # dopri8: 5x fewer field evaluations than dopri5 at these tolerances
    pf = integrate(obj, flow="pf", lr=h, steps=steps, method="dopri8", rtol=1e-11, atol=1e-13)
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
    return np.array([local_error(obj, obj.theta0, h, flow=flow) for h in hs])


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
    from flows import EigenTracker
    from flows.dynamics.fields import igr, pf, pf_topk
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
    with pytest.warns(RuntimeWarning, match="max_num_steps") as caught:
        traj = integrate(obj, flow="gf", lr=0.5, steps=40, max_num_steps=3, chunk=4)
    assert traj.status == "failed"
    assert caught[0].filename == __file__  # the warning points at the caller's line
    event = traj.events[-1]
    assert event["kind"] == "solver_failure" and "suggestion" in event
    assert len(traj) >= 1 and np.all(np.isfinite(traj.losses))


def test_fixed_step_is_bounded_by_stiffness():
    obj = toys.get("pf-quadratic")
    traj = integrate(obj, flow="gf", lr=2.0, steps=3, method="rk4")
    assert traj.config["step_size"] <= 1.0 / 2.0 + 1e-12  # λ_max = 2
    np.testing.assert_allclose(traj.states[-1][0], -0.35 * math.exp(-2 * 6.0), atol=1e-4)


def _small_cnn_objective(dtype=torch.float32):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 3), nn.Tanh(), nn.Conv2d(6, 6, 3), nn.Tanh(), nn.Flatten(),
                          nn.Linear(6 * 4 * 4, 10)).to(dtype)
    x = torch.randn(128, 1, 8, 8, dtype=dtype)
    y = torch.randint(0, 10, (128,))
    return Objective.from_module(model, F.cross_entropy, (x, y))


def test_defaults_depend_on_precision_and_size():
    assert default_tolerances(torch.float64) == (1e-7, 1e-9)
    assert default_tolerances(torch.float32) == (1e-4, 1e-6)
    assert default_tolerances(torch.complex64) == (1e-4, 1e-6)
    assert default_method(toys.get("cubic")) == "dopri5"
    assert default_method(_small_cnn_objective()) == "rk4"
    traj = integrate(toys.get("cubic", dtype=torch.float32), flow="gf", lr=0.1, steps=2)
    assert (traj.config["rtol"], traj.config["atol"]) == (1e-4, 1e-6)


def test_network_defaults_cost_a_known_number_of_evaluations():
    """Before: dopri5 at rtol 1e-7 in float32 (hundreds of evaluations per GD step), k-eigensolves per evaluation."""
    obj = _small_cnn_objective()
    assert obj.dim > 300
    h, steps = 0.5, 3
    gf = integrate(obj, flow="gf", lr=h, steps=steps)
    assert gf.status == "complete" and gf.config["method"] == "rk4"
    # step = min(h, 1/max(λ_max, 2/h)) ≤ h/2: at most 4 evaluations per RK4 substep
    substeps = int(np.ceil(h / gf.config["step_size"] - 1e-9))
    assert gf.config["step_size"] <= h / 2
    assert gf.config["field_evaluations"] == 4 * substeps * steps
    topk = integrate(obj, flow="pf_topk", lr=h, steps=steps, k=3)
    assert topk.status == "complete" and topk.config["eig_refresh"] == h
    assert topk.config["eigen_solves"] <= 2 * steps + 1  # about one per GD step, not one per evaluation


def test_compare_stops_the_flows_where_gd_diverged():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 3)).double()
    obj = Objective.from_module(model, F.mse_loss, (torch.randn(64, 8).double(), torch.randn(64, 3).double()))
    start = time.monotonic()
    cmp = compare(obj, lr=50.0, steps=2000, flows="gf")
    assert time.monotonic() - start < 60
    assert cmp.gd.status == "diverged"
    horizon = len(cmp.gd) - 1
    assert horizon < 50
    assert set(cmp.flows) == {"gf"}  # a single name is accepted
    assert cmp.flows["gf"].config["horizon"] == horizon
    assert "diverged" in cmp.flows["gf"].config["horizon_reason"]
    assert len(cmp.flows["gf"]) <= horizon + 1


def test_time_budget_stops_a_stalling_solve_and_keeps_what_it_reached():
    obj = toys.get("cubic")
    theta0 = torch.tensor([0.6, 0.5], dtype=torch.float64)
    start = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the continued branch winds around hλ = 1 here and dopri5 crawls (measured: no progress in 190 s)
        traj = integrate(obj, theta0, 0.5, flow="pf", steps=20, flow_options={"branch": "continued"}, time_budget=2.0,
                         progress=False)
    assert time.monotonic() - start < 15
    assert traj.status == "stopped"
    assert [e["kind"] for e in traj.events].count("time_budget") == 1
    assert len(traj) >= 1 and np.isfinite(traj.losses).all()
    gd = gradient_descent(toys.get("pf-quadratic"), lr=0.1, steps=10 ** 7, time_budget=0.5, progress=False,
                          states="none")
    assert gd.status == "stopped" and 1 < len(gd) < 10 ** 7
    assert gd.events[-1]["kind"] == "time_budget"
    with pytest.raises(ValueError, match="time_budget must be a finite number > 0"):
        integrate(obj, flow="gf", steps=2, time_budget=-1)


def test_progress_bar_reports_flow_time(capsys):
    integrate(toys.get("cubic"), flow="gf", lr=0.1, steps=3, progress=True)
    err = capsys.readouterr().err
    assert "gf:" in err and "/0.3 " in err  # the bar counts flow time up to t = 3h


def test_log_progress_prints_stdout_lines_and_bad_values_are_named(capsys, monkeypatch):
    """progress="log": lines on stdout (LOG_EVERY set to 0 here, so every update prints), nothing on stderr."""
    import flows.progress
    from flows import central_flow, gradient_descent

    monkeypatch.setattr(flows.progress, "LOG_EVERY", 0.0)
    obj = toys.get("cubic")
    integrate(obj, flow="gf", lr=0.1, steps=3, progress="log")
    gradient_descent(obj, None, 0.1, 4, progress="log")
    quad = toys.get("pf-quadratic")
    central_flow(quad, quad.theta0, 0.1, 2, progress="log")
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert any(" gf: " in line and "/0.3 (" in line for line in lines), captured.out
    assert any(" GD: 4/4 (100%)" in line for line in lines), captured.out
    assert not any(" GD: 5/4" in line for line in lines), captured.out  # a bar over steps, not rows
    assert any(" central: 0.2/0.2 (100%)" in line for line in lines), captured.out
    assert captured.err == ""
    for call in (lambda: gradient_descent(obj, None, 0.1, 2, progress="bar"),
                 lambda: integrate(obj, flow="gf", lr=0.1, steps=2, progress=1.5)):
        with pytest.raises(ValueError, match="progress must be True, False, None or 'log'"):
            call()


def test_log_progress_eta_follows_the_recent_pace(capsys, monkeypatch):
    """The ETA uses the units done since the last line: a run that slows gets a longer estimate, not the mean's."""
    import flows.progress as progress

    clock = iter([0.0, 60.0, 120.0])
    monkeypatch.setattr(progress, "monotonic", lambda: next(clock))
    lines = progress._LogLines(total=300, desc="central")  # start at t = 0
    lines.update(200)  # t = 60: 200 units in the first minute, 100 left at 200/min → 0.5 min
    lines.update(20)  # t = 120: 20 in the second minute, 80 left at 20/min → 4 min (the mean pace would say 0.7)
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("central: 200/300 (67%), 1.0 min, ETA 0.5 min")
    assert out[1].endswith("central: 220/300 (73%), 2.0 min, ETA 4.0 min")
    assert progress.eta_seconds(10, 0, 5.0) is None
