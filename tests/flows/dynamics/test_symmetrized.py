"""The symmetrized-center flow. Oracles: the GD map's rod identities (algebra, to round-off), the quadratic's growth
factor |1 − ηλ| (threshold ηλ = 2 exactly), the period-2 orbit of GD on a softening quartic (closed form), the
gradient flow when the rod is gone, and its declared cost."""
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from flows import Objective, gradient_descent, symmetrized_flow
from flows.dynamics.symmetrized import Rod, SymmetrizedCenter
from tests.models import teacher_student


class _AttentionClassifier(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.attend = torch.nn.Linear(3, 8), torch.nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.embed(x)
        return self.head(self.attend(z, z, z)[0].mean(dim=1))


def test_the_rod_identities_of_the_gd_map_hold_to_round_off_on_attention_with_cross_entropy():
    torch.manual_seed(0)
    model = _AttentionClassifier().double()
    obj = Objective.from_module(model, torch.nn.functional.cross_entropy,
                                (torch.randn(24, 5, 3, dtype=torch.float64), torch.randint(0, 4, (24,))))
    lr = 0.7
    w = torch.as_tensor(gradient_descent(obj, lr=lr, steps=6, states="full").state_matrix())
    center, half = 0.5 * (w[:-1] + w[1:]), 0.5 * (w[:-1] - w[1:])
    for t in range(len(center) - 1):
        plus, minus = obj.grad(center[t] + half[t]), obj.grad(center[t] - half[t])
        scale = float(w[t].abs().max())
        assert float((half[t] - 0.5 * lr * plus).abs().max()) <= 1e-14 * scale
        assert float((center[t + 1] - center[t] + 0.5 * lr * (plus + minus)).abs().max()) <= 1e-14 * scale
        assert float((half[t + 1] - half[t] + 0.5 * lr * (plus - minus)).abs().max()) <= 1e-14 * scale


def _quadratic(values: tuple[float, ...]) -> Objective:
    a = torch.diag(torch.tensor(values, dtype=torch.float64))
    return Objective.from_function(lambda th: 0.5 * th @ a @ th, len(values))


@pytest.mark.parametrize("edge", [1 - 1e-3, 1.0, 1 + 1e-3])
@pytest.mark.parametrize("substeps", [1, 3])
def test_on_a_quadratic_the_magnitude_is_gd_s_factor_1_minus_eta_lambda_per_step_threshold_exactly_two(edge, substeps):
    lam, lr, steps = 5.0, 2.0 * edge / 5.0, 40
    obj, theta0 = _quadratic((lam, 1.0)), torch.tensor([0.3, 1.0], dtype=torch.float64)
    traj = symmetrized_flow(obj, theta0, lr, steps, substeps=substeps)
    a0 = 0.5 * lr * lam * 0.3  # (η/2)uᵀ∇E(θ₀)
    expected = a0 * abs(1 - lr * lam) ** np.arange(steps + 1)
    np.testing.assert_allclose(traj.metric("magnitude"), expected, rtol=1e-12)
    assert traj.metric("secant_curvature") == pytest.approx(lam, rel=1e-12)
    final = traj.metric("magnitude")[-1]
    if edge == 1.0:
        assert final == pytest.approx(a0, rel=1e-12)  # held: log|1 − ηλ| = 0
    else:
        assert (final > 1.03 * a0) if edge > 1 else (final < 0.97 * a0)  # 0.999⁴⁰ = 0.961, 1.001⁴⁰ = 1.041


def test_on_a_softening_quartic_the_magnitude_settles_at_gd_s_period_two_orbit():
    """E = ½λx² − ¼βx⁴ + ½μy²: secant curvature λ − βa² = 2/η at a* = √((λ − 2/η)/β), GD's period-2 amplitude."""
    lam, beta, lr = 4.0, 1.0, 2.2 / 4.0
    obj = Objective.from_function(lambda th: 0.5 * lam * th[0] ** 2 - 0.25 * beta * th[0] ** 4 + 0.5 * th[1] ** 2, 2)
    theta0 = torch.tensor([0.05, 1.0], dtype=torch.float64)
    closed_form = math.sqrt((lam - 2 / lr) / beta)
    traj = symmetrized_flow(obj, theta0, lr, 300, substeps=2, states="full")
    assert traj.metric("magnitude")[-1] == pytest.approx(closed_form, rel=1e-9)
    assert lr * traj.metric("secant_curvature")[-1] == pytest.approx(2.0, rel=1e-9)
    assert np.abs(traj.state_matrix()[-1]).max() < 1e-12  # the center at the symmetric point
    gd = gradient_descent(obj, theta0, lr, 300, states="full").state_matrix()
    assert abs(gd[-1, 0]) == pytest.approx(closed_form, rel=1e-9) and gd[-1, 0] * gd[-2, 0] < 0


def test_as_the_rod_vanishes_the_field_is_the_gradient_flow_to_second_order():
    x, y = teacher_student(n=64, d_in=4, d_out=3, width=6)
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()
    obj = Objective.from_module(net, torch.nn.functional.mse_loss, (x, y))
    theta0 = obj.theta0
    model, g = SymmetrizedCenter(k=2), obj.grad(theta0)
    gaps = []
    for lr in (1e-2, 1e-3):  # the rod is at its floor (η/2)|Uᵀg|: the field is −g + O(a²) = −g + O(η²)
        rod = model.start(obj, theta0, lr)
        dead = Rod(theta0, rod.directions, torch.full((2,), -math.inf, dtype=torch.float64), rod.sign)
        floored, dc, _, _ = model.field(obj, dead, lr)
        torch.testing.assert_close(floored.magnitude.abs(), (0.5 * lr * rod.directions.T @ g).abs())
        gaps.append(float((dc + g).norm()))
    assert gaps[0] / gaps[1] == pytest.approx(100.0, rel=0.05)


def test_the_work_is_two_gradients_and_k_hvps_per_evaluation_and_a_diverging_run_keeps_its_rows():
    obj, theta0 = _quadratic((5.0, 1.0, 0.5)), torch.tensor([0.3, 1.0, -1.0], dtype=torch.float64)
    traj = symmetrized_flow(obj, theta0, 0.2, 10, k=2, substeps=3)
    evaluations = 3 * 10 + 1
    assert (traj.config["gradients"], traj.config["hvps"], traj.config["losses"]) == (2 * evaluations,
                                                                                      2 * evaluations, 11)
    with pytest.warns(RuntimeWarning, match="symmetrized-center flow stopped"):
        diverged = symmetrized_flow(obj, theta0, 0.6, 200)  # ηλ = 3: GD's rod grows by 2 per step
    assert diverged.status == "diverged" and len(diverged) > 20
    assert np.all(np.diff(np.log(diverged.metric("magnitude")))[:20] == pytest.approx(math.log(2.0), rel=1e-9))


@pytest.mark.parametrize("argument, value, message", [("base", "igr", "base must be one of"),
                                                       ("directions", "lanczos", "directions must be one of"),
                                                       ("k", 0, "k must be")])
def test_bad_choices_are_refused_by_name(argument, value, message):
    with pytest.raises(ValueError, match=message):
        symmetrized_flow(_quadratic((1.0,)), torch.ones(1, dtype=torch.float64), 0.1, 3, **{argument: value})


def test_on_a_quadratic_the_center_is_euler_on_the_gradient_flow_whatever_the_rod():
    """ḡ = ½[A(c + r) + A(c − r)] = Ac: the rod never moves the center; c_n = (I − (η/s)A)^{sn} θ₀ exactly."""
    a = np.diag([2.0, 0.5])
    obj, theta0 = _quadratic((2.0, 0.5)), torch.tensor([1.0, -1.0], dtype=torch.float64)
    traj = symmetrized_flow(obj, theta0, 1.1, 30, substeps=10, states="full")  # ηλ₁ = 2.2: the rod grows
    euler = np.eye(2) - 0.11 * a
    exact = np.array([np.linalg.matrix_power(euler, 10 * n) @ theta0.numpy() for n in range(31)])
    np.testing.assert_allclose(traj.state_matrix(), exact, rtol=1e-12, atol=1e-15)  # round-off of A(c ± r)
    assert traj.metric("magnitude")[-1] > 10 * traj.metric("magnitude")[0]
    gradient_flow = np.array([scipy.linalg.expm(-a * 1.1 * n) @ theta0.numpy() for n in range(31)])
    assert np.abs(traj.state_matrix() - gradient_flow).max() < 0.05
