"""The top-k principal flow certifies its eigen solves once per GD step of flow time (``verify_steps``), as the
central flow does: the solves between are warm, and a repeated eigenvalue found by the certified solve stays in
the set. Checked on a multi-output linear head (½-MSE), whose Hessian I_C ⊗ [X 1]ᵀ[X 1]/N repeats every
eigenvalue C times, an objective no experiment uses."""
import pytest
import torch
from torch import nn

from flows import EigenTracker, Objective, integrate

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
