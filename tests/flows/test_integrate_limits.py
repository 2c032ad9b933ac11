"""No public call runs for minutes unseen: network defaults, GD-capped horizons, wall-clock budgets, progress."""
import time
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flows import Objective, compare, gradient_descent, integrate, toys
from flows.integrate import default_method, default_tolerances


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
        traj = integrate(obj, theta0, "pf", 0.5, steps=20, flow_options={"branch": "continued"}, time_budget=2.0,
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
