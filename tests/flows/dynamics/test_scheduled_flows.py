"""Learning-rate schedules in integrate, compare and central_flow: the grid is GD's, t_n = Σ_{m<n} η(m), and on
[t_n, t_{n+1}) the field is built for h = η(n). Oracles: gradient flow does not depend on h (the same path on the
cumulative grid), IGR on a quadratic is a product of matrix exponentials, a constant schedule is the number, and
the central flow's threshold follows η."""
import numpy as np
import pytest
import scipy.linalg
import torch

from flows import Constant, Objective, StepDecay, WarmupCosine, central_flow, compare, gradient_descent, integrate

A = np.array([[3.0, 0.5], [0.5, 1.0]])


def _quadratic() -> Objective:
    a = torch.tensor(A)
    return Objective.from_function(lambda th: 0.5 * th @ a @ th, 2)


def test_gradient_flow_on_a_schedule_is_gradient_flow_on_the_cumulative_grid():
    obj, theta0 = _quadratic(), torch.tensor([1.0, -1.0], dtype=torch.float64)
    schedule = WarmupCosine(peak=0.3, warmup=3, total=12, final=0.03)
    scheduled = integrate(obj, theta0, schedule, 12, flow="gf", method="dopri8", rtol=1e-12, atol=1e-14)
    grid = np.concatenate([[0.0], np.cumsum([schedule(float(n)) for n in range(12)])])
    np.testing.assert_allclose(scheduled.times, grid, rtol=0, atol=1e-15)
    exact = np.array([scipy.linalg.expm(-A * t) @ theta0.numpy() for t in grid])
    np.testing.assert_allclose(scheduled.state_matrix(), exact, atol=1e-11)
    assert scheduled.config["lr"] == repr(schedule)


@pytest.mark.parametrize("method", ["dopri8", "rk4"])
def test_igr_on_a_step_decay_is_the_product_of_the_per_step_matrix_exponentials(method):
    """IGR on E = ½θᵀAθ: θ' = −(A + (h/2)A²)θ with h = η(n) on step n's interval."""
    obj, theta0 = _quadratic(), torch.tensor([1.0, -1.0], dtype=torch.float64)
    schedule, steps = StepDecay(0.2, every=4, factor=0.5), 10
    options = {"rtol": 1e-12, "atol": 1e-14} if method == "dopri8" else {"step_size": 0.01}
    traj = integrate(obj, theta0, schedule, steps, flow="igr", method=method, **options)
    state, expected = theta0.numpy(), [theta0.numpy()]
    for n in range(steps):
        h = schedule(float(n))
        state = scipy.linalg.expm(-(A + 0.5 * h * A @ A) * h) @ state
        expected.append(state)
    np.testing.assert_allclose(traj.state_matrix(), np.array(expected), atol=1e-10 if method == "dopri8" else 1e-8)


def test_a_constant_schedule_is_the_number_and_a_schedule_needs_steps():
    obj, theta0 = _quadratic(), torch.tensor([1.0, -1.0], dtype=torch.float64)
    number = integrate(obj, theta0, 0.1, 8, flow="igr", method="rk4")
    scheduled = integrate(obj, theta0, Constant(0.1), 8, flow="igr", method="rk4")
    np.testing.assert_allclose(scheduled.state_matrix(), number.state_matrix(), rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="give steps, not times"):
        integrate(obj, theta0, Constant(0.1), times=[0.0, 0.1])
    with pytest.raises(ValueError, match="lr schedule at step 2 must be"):
        integrate(obj, theta0, lambda n: 0.1 if n < 2 else -0.1, 4)


def test_compare_puts_gd_and_the_flows_on_one_scheduled_grid():
    obj, theta0 = _quadratic(), torch.tensor([1.0, -1.0], dtype=torch.float64)
    schedule = StepDecay(0.2, every=3, factor=0.5)
    result = compare(obj, theta0, schedule, 9, flows=("gf", "igr"), method="dopri8", rtol=1e-12, atol=1e-14)
    for traj in result.flows.values():
        np.testing.assert_allclose(traj.times, result.gd.times, rtol=0, atol=1e-15)
    # IGR shadows GD to O(h³) per step, GF only to O(h²): the drift says which is the better model
    assert result.drift["igr"][-1] < 0.2 * result.drift["gf"][-1]


def test_the_central_flows_threshold_follows_a_step_decay():
    """The self-stabilisation toy at η = 0.1 holds S at 2/η = 20; after η halves at step 200, 2/η = 40 is far away:
    nothing is critical, X = 0, and the sharpness grows again as GD's does."""
    obj = Objective.from_function(lambda th: 0.5 * (19.0 + th[1]) * th[0] ** 2 - 0.1 * th[1], 2)
    theta0 = torch.tensor([0.01, 0.0], dtype=torch.float64)
    schedule = StepDecay(0.1, every=200, factor=0.5)
    flow = central_flow(obj, theta0, schedule, 300)
    assert flow.status == "complete"
    np.testing.assert_allclose(flow.metric("sharpness")[150:200], 20.0, rtol=2e-3)
    assert (flow.metric("critical")[205:] == 0).all()
    sharpness = flow.metric("sharpness")[205:]
    assert (np.diff(sharpness) > 0).all() and sharpness[-1] > 20.2
    gd = gradient_descent(obj, theta0, schedule, 300)
    np.testing.assert_allclose(flow.times, gd.times, rtol=0, atol=1e-13)


class _LastStepLSTM(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm, self.head = torch.nn.LSTM(3, 4, batch_first=True), torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(x)[0][:, -1])


@pytest.mark.parametrize("lr", [1e6, StepDecay(1e6, every=2, factor=0.5)])
def test_a_fixed_step_grid_finer_than_max_num_steps_is_refused_by_name_before_it_is_allocated(lr):
    """IGR on an LSTM at a rate 10¹⁸× its stable step once asked torch for a 7e18-element grid."""
    torch.manual_seed(0)
    obj = Objective.from_module(_LastStepLSTM(), torch.nn.functional.cross_entropy,
                                (torch.randn(16, 5, 3), torch.randint(0, 2, (16,))))
    with pytest.raises(ValueError, match=r"lr=1e\+06 .*max_num_steps=5000.*step_size"):
        integrate(obj, lr=lr, steps=4, flow="igr", method="rk4")


def test_a_step_size_function_too_fine_for_one_interval_fails_there_keeping_the_rows_before():
    obj, theta0 = _quadratic(), torch.tensor([1.0, -1.0], dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="failed after step 6"):
        traj = integrate(obj, theta0, 0.1, 10, flow="gf", method="rk4", chunk=3,
                         step_size=lambda n: 0.05 if n < 6 else 1e-9)
    assert traj.status == "failed" and len(traj.times) == 7
    assert "output interval 6" in traj.events[-1]["reason"] and "max_num_steps=5000" in traj.events[-1]["reason"]
    exact = np.array([scipy.linalg.expm(-A * 0.1 * n) @ theta0.numpy() for n in range(7)])
    np.testing.assert_allclose(traj.state_matrix(), exact, atol=1e-5)  # RK4 at h·λ_max = 0.17: 1.5e-6 measured
