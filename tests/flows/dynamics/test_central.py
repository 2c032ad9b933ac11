"""The central flow of GD against closed forms: Euler-discretised gradient flow below the edge of stability, and
the self-stabilisation toy E(x, y) = ½(c + y)x² − s·y at the edge, whose stationary point is known by hand; and the
cheap eigen work of #34 (certified once per GD step, sub-critical pairs bounded) against the tight run it replaces."""
import numpy as np
import pytest
import torch
from torch import nn

from flows import Objective, Trajectory, central_flow, sharpness
from flows.dynamics.central import CentralState, sigma_matrix
from tests.models import teacher_student


def test_below_the_edge_it_is_the_euler_discretised_gradient_flow():
    h = torch.diag(torch.tensor([3.0, 1.0, 0.2], dtype=torch.float64))
    obj = Objective.from_function(lambda th: 0.5 * th @ h @ th, 3)
    theta0 = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    lr, steps, substeps = 0.1, 20, 4  # ηλ_max = 0.3: nothing critical
    out = central_flow(obj, theta0, lr, steps, substeps=substeps, states="full")
    per_step = (torch.eye(3, dtype=torch.float64) - lr / substeps * h).matrix_power(substeps)
    expect = torch.stack([per_step.matrix_power(n) @ theta0 for n in range(steps + 1)])
    assert isinstance(out, Trajectory) and out.status == "complete"
    np.testing.assert_allclose(out.state_matrix(), expect.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(out.times, lr * np.arange(steps + 1))  # the GD grid t = n·η
    assert (out.metric("critical") == 0).all()
    np.testing.assert_allclose(out.metric("predicted_loss"), out.losses)  # no oscillation, no correction
    np.testing.assert_allclose(out.metric("sharpness"), 3.0)


def test_at_the_edge_the_toy_reaches_its_hand_derived_stationary_point():
    # H = [[c + y, x], [x, 0]]: λ_max ≈ c + y; ∇(u₁ᵀHu₁) = (0, 1) along u₁ ≈ e_x. Progressive sharpening drives
    # y up at rate ηs until η(c + y) = 2; then stability pins y = 2/η − c, x̄ decays, and dy/dt = 0 needs
    # ½(x̄² + X) = s: X = 2s, predicted loss −s·y + ½(2/η)·X.
    c, s, lr = 19.0, 0.1, 0.1
    obj = Objective.from_function(lambda th: 0.5 * (c + th[1]) * th[0] ** 2 - s * th[1], 2)
    out = central_flow(obj, torch.tensor([0.01, 0.0], dtype=torch.float64), lr, 400, states="full")
    edge = 2 / lr - c
    late = slice(200, None)
    critical = out.metric("critical")
    assert (critical[late] == 1).all() and (critical[:5] == 0).all()
    np.testing.assert_allclose(out.state_matrix()[200:, 1], edge, rtol=1e-9)
    assert out.metric("sharpness").max() <= 2 / lr * (1 + 1e-9)  # the flow never leaves the stable region
    np.testing.assert_allclose(out.metric("sigma_0")[200:], 2 * s, rtol=1e-6)
    assert np.isnan(out.metric("sigma_0")[:5]).all()  # nothing critical, no oscillation variance
    np.testing.assert_allclose(out.metric("predicted_loss")[late], -s * edge + 0.5 * (2 / lr) * 2 * s, rtol=1e-6)
    assert out.metric("infeasibility").max() <= 1e-9 and out.metric("complementarity").max() <= 1e-9


def test_a_quadratic_above_the_edge_has_no_central_flow_and_says_so():
    obj = Objective.from_function(lambda th: 0.5 * (th ** 2 * torch.tensor([3.0, 1.0])).sum(), 2)
    with pytest.raises(ArithmeticError, match="central flow does not exist"):
        central_flow(obj, torch.tensor([1.0, 1.0], dtype=torch.float64), 0.8, 3)  # ηλ = 2.4, no third derivative


def test_fused_normalisation_layers_are_rerouted_not_silently_wrong():
    """A LayerNorm net's central flow equals the one of the same net written in elementary ops (the fused
    kernel's third derivative is wrong; driftlab reroutes it, flows.objective.norms)."""
    from torch import nn

    from flows import sharpness
    from flows.objective.norms import decomposed_norms

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Tanh(), nn.Linear(6, 3)).double()
    x = torch.randn(16, 4, dtype=torch.float64)
    obj = Objective.from_module(model, nn.CrossEntropyLoss(), (x, torch.arange(16) % 3))
    plain = Objective.from_module(decomposed_norms(model), nn.CrossEntropyLoss(), (x, torch.arange(16) % 3))
    lr = 2.2 / sharpness(obj, obj.theta0)
    a, b = central_flow(obj, obj.theta0, lr, 3, states="full"), central_flow(plain, plain.theta0, lr, 3, states="full")
    np.testing.assert_allclose(a.state_matrix(), b.state_matrix(), rtol=1e-8, atol=1e-10)


def test_bad_input():
    obj = Objective.from_function(lambda th: (th ** 2).sum(), 2)
    theta = torch.ones(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="lr"):
        central_flow(obj, theta, -0.1, 3)
    with pytest.raises(ValueError, match="substeps"):
        central_flow(obj, theta, 0.1, 3, substeps=0)
    with pytest.raises(ValueError, match="track"):
        central_flow(obj, theta, 0.1, 3, track=1.5)


def test_a_float32_network_above_the_edge_is_brought_to_it():
    """An untuned float32 MLP started at ηλ_max = 2.2: the flow pins the critical curvature at 2/η."""
    from models import fc_tanh, teacher_student

    from flows import sharpness

    x, y = teacher_student(n=64, d_in=6, d_out=2, width=8, dtype=torch.float32)
    obj = Objective.from_module(fc_tanh((6, 16, 2)), lambda out, t: 0.5 * ((out - t) ** 2).sum(1).mean(), (x, y))
    lr = 2.2 / sharpness(obj, obj.theta0)
    out = central_flow(obj, obj.theta0, lr, 6)
    assert out.metric("critical")[0] >= 1 and np.isfinite(out.metric("predicted_loss")).all()
    assert out.metric("sharpness")[1:].max() <= 2 / lr * 1.01  # stable from the first step on (tracker's tolerance)
    assert out.metric("infeasibility").max() <= 1e-9 and out.metric("complementarity").max() <= 1e-8
    sigma = sigma_matrix(out)
    assert sigma.shape[1] >= 1 and (np.nan_to_num(sigma) >= -1e-12 * max(1.0, np.nanmax(sigma))).all()  # X ⪰ 0


def _edge_mlp():
    from models import fc_tanh, teacher_student

    from flows import sharpness

    torch.manual_seed(0)
    x, y = teacher_student(n=64, d_in=6, d_out=2, width=8, dtype=torch.float64)
    obj = Objective.from_module(fc_tanh((6, 16, 2)).double(), lambda out, t: 0.5 * ((out - t) ** 2).sum(1).mean(),
                                (x, y))
    return obj, 2.2 / sharpness(obj, obj.theta0)


def test_the_registered_field_through_integrate_is_the_papers_discretisation_with_euler():
    """integrate(flow="central") with Euler at h/substeps takes exactly central_flow's steps; RK4 and dopri5
    integrate the same ODE (relaxation time h/substeps) and agree with each other, not with Euler's O(dt) error."""
    from flows import integrate

    obj, lr = _edge_mlp()
    steps = 12
    euler_cf = central_flow(obj, obj.theta0, lr, steps, states="full").state_matrix()
    traj = integrate(obj, obj.theta0, lr, flow="central", steps=steps, method="euler", step_size=lr / 4)
    np.testing.assert_allclose(traj.state_matrix(), euler_cf, rtol=0, atol=1e-13)
    assert traj.config["eigen_matvecs"] > 0 and traj.config["central_substeps"] == 4
    rk4 = integrate(obj, obj.theta0, lr, flow="central", steps=steps, method="rk4", step_size=lr / 8).state_matrix()
    dopri = integrate(obj, obj.theta0, lr, flow="central", steps=steps, method="dopri5").state_matrix()
    gap_methods = np.abs(rk4 - dopri).max()
    gap_euler = np.abs(rk4 - euler_cf).max()
    assert gap_methods < 0.05 * gap_euler, (gap_methods, gap_euler)
    assert np.abs(rk4 - euler_cf).max() < 0.05 * np.abs(euler_cf).max()


def test_central_flow_options_are_checked():
    from flows import integrate

    obj, lr = _edge_mlp()
    with pytest.raises(ValueError, match="substeps"):
        integrate(obj, obj.theta0, lr, flow="central", steps=1, flow_options={"substeps": 0})
    with pytest.raises(ValueError, match="valid choices: substeps, critical, track, eig_tol, max_k, eig_refresh"):
        integrate(obj, obj.theta0, lr, flow="central", steps=1, flow_options={"k": 3})
    with pytest.raises(ValueError, match="critical"):
        integrate(obj, obj.theta0, lr, flow="central", steps=1, flow_options={"critical": 2.5})


def test_a_run_stopped_midway_keeps_its_steps_and_says_why():
    """Ctrl-C part-way: the finished steps are returned, each row consistent with its state."""
    c, s, lr = 19.0, 0.1, 0.1
    calls = {"n": 0}

    def energy(th):
        calls["n"] += 1
        if calls["n"] == 250:
            raise KeyboardInterrupt
        return 0.5 * (c + th[1]) * th[0] ** 2 - s * th[1]

    obj = Objective.from_function(energy, 2)
    out = central_flow(obj, torch.tensor([0.01, 0.0], dtype=torch.float64), lr, 400, states="full")
    assert out.status == "interrupted" and out.events[-1]["kind"] == "interrupted"
    n = len(out)
    states = out.state_matrix()
    assert 2 < n < 401 and states.shape == (n, 2) and sigma_matrix(out).shape[0] == n and np.isfinite(out.losses).all()
    np.testing.assert_allclose(out.losses, [0.5 * (c + y) * x ** 2 - s * y for x, y in states.tolist()], rtol=1e-12)


def test_eigenpairs_once_per_step_stay_close_and_cost_less():
    """eig_refresh = η (a solve per GD step, Rayleigh–Ritz on the kept subspace at the other substeps) against a
    solve at every substep, on the float64 MLP started above the edge: measured 1.7% of ‖θ‖ apart at worst (the
    fast transient of the first steps; 1.8e-5 relative on the 1000-step toy), the sharpness after the transient
    within 0.1%."""
    obj, lr = _edge_mlp()
    every = central_flow(obj, obj.theta0, lr, 15, states="full")
    per_step = central_flow(obj, obj.theta0, lr, 15, states="full", eig_refresh=lr)
    gap = float(np.linalg.norm(every.state_matrix() - per_step.state_matrix(), axis=1).max())
    assert gap < 0.03 * float(np.linalg.norm(every.state_matrix(), axis=1).max()), gap
    assert per_step.config["eigen_matvecs"] < every.config["eigen_matvecs"]
    np.testing.assert_allclose(per_step.metric("sharpness")[5:], every.metric("sharpness")[5:], rtol=1e-3)
    with pytest.raises(ValueError, match="eig_refresh"):
        central_flow(obj, obj.theta0, lr, 1, eig_refresh=-1.0)


def test_the_trajectory_saves_and_loads_with_its_predictions(tmp_path):
    c, s, lr = 19.0, 0.1, 0.1
    obj = Objective.from_function(lambda th: 0.5 * (c + th[1]) * th[0] ** 2 - s * th[1], 2)
    out = central_flow(obj, torch.tensor([0.01, 0.0], dtype=torch.float64), lr, 60, states="projection",
                       projection_size=2)
    back = Trajectory.load(out.save(tmp_path / "central"))
    for name in ("predicted_loss", "predicted_grad_norm2", "sigma_0", "infeasibility", "critical"):
        np.testing.assert_array_equal(back.metric(name), out.metric(name))
    assert back.config["kind"] == "central" and back.config["eigen_matvecs"] == out.config["eigen_matvecs"] > 0
    assert back.states.shape == (61, 2)


# ----- #34: certified once per GD step, sub-critical pairs bounded, against the tight run they replace

def _silu_regressor() -> tuple[Objective, float]:
    """A SiLU MLP with a 3-output linear head on a teacher (no experiment uses it), D = 435 > the dense limit, so
    the tracker runs Lanczos; at hλ₀ = 2.2 two or three directions are critical from the first step on."""
    torch.manual_seed(0)
    x, y = teacher_student(n=64, d_in=6, d_out=3, width=8)
    model = nn.Sequential(nn.Linear(6, 16), nn.SiLU(), nn.Linear(16, 16), nn.SiLU(), nn.Linear(16, 3)).double()
    obj = Objective.from_module(model, lambda out, t: 0.5 * ((out - t) ** 2).sum(1).mean(), (x, y))
    return obj, 2.2 / sharpness(obj, obj.theta0, tol=1e-8)


def test_cheap_eigen_work_predicts_what_the_tight_run_predicts():
    obj, lr = _silu_regressor()
    assert obj.dim > 300
    tight = central_flow(obj, obj.theta0, lr, 5, verify_steps=0, subcritical="tight", eig_tol=1e-6)
    cheap = central_flow(obj, obj.theta0, lr, 5, eig_tol=1e-6)
    assert tight.status == cheap.status == "complete"
    assert tight.metric("critical").min() >= 1  # at the edge throughout: the SDCP and the pair vectors run
    np.testing.assert_array_equal(cheap.metric("critical"), tight.metric("critical"))
    for name in ("predicted_loss", "sharpness"):
        np.testing.assert_allclose(cheap.metric(name), tight.metric(name), rtol=1e-4)
    assert cheap.config["eigen_matvecs"] < 0.6 * tight.config["eigen_matvecs"]
    assert (cheap.config["verify_steps"], cheap.config["subcritical"]) == (1.0, "bounded")


def test_cost_options_are_checked():
    with pytest.raises(ValueError, match="verify_steps"):
        CentralState(verify_steps=-1)
    with pytest.raises(ValueError, match="subcritical must be one of"):
        CentralState(subcritical="loose")  # type: ignore[arg-type]
