"""The symmetrized-center flow: GD as a rod whose center descends the symmetrized loss.

Exact identities of the GD map w_{t+1} = w_t − η∇L(w_t). With the rod center x_t = (w_t + w_{t+1})/2 and the half rod
r_t = (w_t − w_{t+1})/2, so that w_t = x_t + r_t and w_{t+1} = x_t − r_t:

    r_t = (η/2)∇L(x_t + r_t),
    x_{t+1} − x_t = (w_{t+2} − w_t)/2 = −(η/2)[∇L(x_t + r_t) + ∇L(x_t − r_t)],
    r_{t+1} = (η/2)∇L(x_t − r_t) = r_t − (η/2)[∇L(x_t + r_t) − ∇L(x_t − r_t)] = (I − ηH̃_t) r_t,

H̃_t = ∫₀¹ H(x_t + (2s − 1)r_t) ds the secant Hessian ([∇L(x + r) − ∇L(x − r)]/2 = H̃r). The center descends the
symmetrized loss ½[L(x + r) + L(x − r)] = L(x) + ½rᵀH(x)r + O(‖r‖⁴), which holds the central flow's implicit
sharpness penalty without an SDCP or third-derivative products. On E = ½λx² the half rod is multiplied by 1 − ηλ
per step: it flips sign and grows exactly when ηλ > 2.

The continuous model (driftlab's own; flow time t = n·η as for every driftlab flow): a center c, k orthonormal
directions U = [u₁ … u_k] and signed magnitudes aᵢ = sᵢ·exp(ℓᵢ), the rod r = Σᵢ aᵢuᵢ, with ḡ = ½[∇L(c + r) +
∇L(c − r)] and ρᵢ = uᵢᵀH(c)uᵢ:

    dc/dt = −ḡ                                                      (base ``"gf"``)
    dc/dt = −ḡ + Σᵢ (Re c_PF(ηρᵢ) + 1)(uᵢᵀḡ)uᵢ,  c_PF(x) = log(1 − x)/x   (base ``"pf"``: PF top-k, symmetrized center)
    dℓᵢ/dt = log|1 − ηλ̃ᵢ|/η,   λ̃ᵢ = uᵢᵀ[∇L(c + r) − ∇L(c − r)]/(2aᵢ)   (the secant curvature along uᵢ)
    U: Oja's subspace flow dU/dt = HU − U(UᵀHU), stepped as U ← orth((I + dt·H)U) (``directions="oja"``, k HVPs per
       evaluation), or a warm eigen solve at the first substep of each step (``directions="solve"``).

Over one step of constant λ̃ the magnitude is multiplied by |1 − ηλ̃| exactly (ℓ is integrated in log space): GD's
own factor, the principal flow's real coefficient along u (log|1 − x| = x·Re c_PF(x)). The magnitude shrinks below
the edge and the model is then the gradient flow (base gf) or PF top-k (base pf) of L; above it the magnitude grows
until the rod's secant curvature is 2/η, where ½rᵀHr pushes the center off the sharp direction. A step costs two
gradients (at c ± r) and k Hessian-vector products (at c, sharing their pass with ∇L(c)) per evaluation, plus one
loss at c per recorded step.

Decisions, where the identities leave a choice:

* c(0) = θ₀ (the model is of GD's time-averaged path, as the central flow's; below the edge it is the gradient flow
  from θ₀), a(0) = (η/2)Uᵀ∇L(θ₀): the rod's component along U at step 0.
* |aᵢ| is held at least (η/2)|uᵢᵀ∇L(c)| (and round-off, ε·(η/2)‖∇L(c)‖): by the first identity the half rod
  contains the center's own gradient step, so GD's oscillation along u never starts from less. Without this floor
  the magnitude and the sharpness cycle like predator and prey (a grows while ηλ̃ > 2, the penalty ½a²∇(uᵀHu) then
  pushes λ below 2/η, a decays): explicit Euler widens the cycles until a is 1e-14 and the model is the gradient
  flow for long stretches. Measured on the central-flows toy (h = 0.1, 1000 steps, k = 1): mean distance to GD's
  iterates 0.33 without the floor, 0.069 with it.
* Below aᵢ < ε^{1/3}·max(1, ‖c‖_∞) the secant quotient loses digits to cancellation; λ̃ᵢ is then ρᵢ, its a → 0 limit.
* For k > 1 the directions are Ritz vectors of UᵀHU (descending ρ) at every evaluation, the rod rotated with them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Literal

import torch
from torch import Tensor

from ..curvature.spectrum import EigenTracker, top_eigenpairs
from ..objective.objective import Objective
from ..progress import Progress, progress_bar
from ..records.events import Event
from ..records.trajectory import Recorder, Trajectory, reserve_rows
from ..validate import States, check_choice, check_count
from .gd import Budget, _initial, run_keeping_rows
from .schedules import Schedule, as_schedule

SymmetrizedBase = Literal["gf", "pf"]
BASES = ("gf", "pf")
DirectionTracking = Literal["oja", "solve"]
DIRECTION_TRACKING = ("oja", "solve")
GROWTH_FLOOR = 1e-12  # |1 − ηλ̃| is floored here (ηλ̃ = 1 kills the rod in one GD step: 1e-12 instead of 0)


@dataclass(frozen=True)
class Rod:
    """The model's state: center c (D,), directions U (D, k) orthonormal, log magnitudes ℓ (k,), signs s (k,)."""

    center: Tensor
    directions: Tensor
    log_magnitude: Tensor
    sign: Tensor

    @property
    def magnitude(self) -> Tensor:
        """aᵢ = sᵢ·exp(ℓᵢ), signed."""
        return self.sign * torch.exp(self.log_magnitude)

    @property
    def half_rod(self) -> Tensor:
        """The half rod r = U a, shape (D,)."""
        return self.directions @ self.magnitude


def _signed(values: Tensor, floor: float) -> tuple[Tensor, Tensor]:
    """(log max(|v|, floor), sign v with 0 → +1)."""
    sign = torch.where(values < 0, -torch.ones_like(values), torch.ones_like(values))
    return torch.log(values.abs().clamp(min=floor)), sign


def _orthonormal(u: Tensor) -> Tensor:
    """Q of the QR of u with diag(R) > 0 (so that a small turn of u keeps each column's orientation)."""
    q, r = torch.linalg.qr(u)
    return q * torch.where(torch.diagonal(r) < 0, -1.0, 1.0).to(q.dtype)


class SymmetrizedCenter:
    """The symmetrized-center flow's settings, field and work counters (module docstring).

    Args:
        k: directions in the rod.
        base: ``"gf"`` (the center descends ḡ) or ``"pf"`` (PF top-k with the symmetrized center).
        directions: ``"oja"`` (one batched HVP of U per evaluation) or ``"solve"`` (a warm eigen solve per step).
        eig_tol: relative residual tolerance of the eigen solves (the first one, and each with ``"solve"``).
    """

    def __init__(self, k: int = 1, base: SymmetrizedBase = "gf", directions: DirectionTracking = "oja",
                 eig_tol: float = 1e-3) -> None:
        self.k = check_count("k", k, minimum=1)
        self.base = check_choice("base", base, BASES)
        self.directions = check_choice("directions", directions, DIRECTION_TRACKING)
        if not (isinstance(eig_tol, (int, float)) and eig_tol > 0):
            raise ValueError(f"eig_tol must be positive, got {eig_tol!r}")
        self.eig_tol = eig_tol
        self.tracker: EigenTracker | None = None
        self.gradients = 0  # ∇L at c ± r
        self.hvps = 0  # H(c)U products (each with ∇L(c) from the same pass)
        self.eigen_matvecs = 0  # eigen solves (the first; every step with directions="solve")
        self.losses = 0  # L(c) for the recorded rows
        self.seconds = {"gradients": 0.0, "hvp": 0.0, "eigen": 0.0}
        self.report: dict[str, Any] = {}

    def start(self, objective: Objective, theta0: Tensor, lr: float) -> Rod:
        """The state at t = 0: c = θ₀, U the top-k eigenvectors at θ₀, a = (η/2)Uᵀ∇L(θ₀) floored at round-off."""
        k = min(self.k, objective.dim)
        clock = perf_counter()
        if self.directions == "solve":
            self.tracker = EigenTracker(k=k, tol=self.eig_tol)
            pairs = self.tracker.update(objective, theta0)
        else:
            pairs = top_eigenpairs(objective, theta0, k=k, tol=self.eig_tol)
        self.eigen_matvecs += pairs.matvecs
        self.seconds["eigen"] += perf_counter() - clock
        u = _orthonormal(pairs.vectors.to(theta0.dtype))
        g = objective.grad(theta0)
        eps = torch.finfo(theta0.dtype).eps
        log_a, sign = _signed(0.5 * lr * (u.T @ g), max(eps * 0.5 * lr * float(g.norm()), torch.finfo(g.dtype).tiny))
        return Rod(theta0, u, log_a, sign)

    def refresh(self, objective: Objective, rod: Rod) -> Rod:
        """With ``directions="solve"``: the tracker's eigenvectors at c, the rod projected onto them."""
        if self.directions != "solve":
            return rod
        assert self.tracker is not None
        clock, before = perf_counter(), self.tracker.total_matvecs
        u = _orthonormal(self.tracker.update(objective, rod.center).vectors.to(rod.center.dtype))
        self.eigen_matvecs += self.tracker.total_matvecs - before
        self.seconds["eigen"] += perf_counter() - clock
        log_a, sign = _signed(u.T @ rod.half_rod, torch.finfo(u.dtype).tiny)
        return Rod(rod.center, u, log_a, sign)

    def field(self, objective: Objective, rod: Rod, lr: float) -> tuple[Rod, Tensor, Tensor, Tensor]:
        """(the rod in Ritz order and floored, dc/dt, dℓ/dt, HU) at it; what it measured in :attr:`report`."""
        c, u = rod.center, rod.directions
        clock = perf_counter()
        g_c, hu = objective.grad_and_hvp(c, u.T.contiguous())
        hu = hu.T
        self.hvps += u.shape[1]
        self.seconds["hvp"] += perf_counter() - clock
        small = u.T @ hu
        rho, rotation = torch.linalg.eigh(0.5 * (small + small.T))
        order = torch.argsort(rho, descending=True)
        rho, rotation = rho[order], rotation[:, order]
        log_a, sign = rod.log_magnitude, rod.sign
        if u.shape[1] > 1:  # Ritz vectors, the rod expressed in them
            u, hu = u @ rotation, hu @ rotation
            log_a, sign = _signed(rotation.T @ rod.magnitude, torch.finfo(c.dtype).tiny)
        # the rod r = (η/2)∇L(c + r) has at least the center's own part along U, (η/2)Uᵀ∇L(c)
        floor = (0.5 * lr * (u.T @ g_c)).abs().clamp(min=torch.finfo(c.dtype).eps * 0.5 * lr * float(g_c.norm()))
        rod = Rod(c, u, torch.maximum(log_a, torch.log(floor.clamp(min=torch.finfo(c.dtype).tiny))), sign)
        r = rod.half_rod
        clock = perf_counter()
        loss_plus, g_plus = objective.loss_and_grad(c + r)
        loss_minus, g_minus = objective.loss_and_grad(c - r)
        self.gradients += 2
        self.seconds["gradients"] += perf_counter() - clock
        g_bar, half_difference = 0.5 * (g_plus + g_minus), 0.5 * (g_plus - g_minus)
        a = rod.magnitude
        reliable = a.abs() >= torch.finfo(c.dtype).eps ** (1 / 3) * max(1.0, float(c.abs().max()))
        secant = torch.where(reliable, (u.T @ half_difference) / torch.where(reliable, a, torch.ones_like(a)), rho)
        growth = torch.log((1.0 - lr * secant).abs().clamp(min=GROWTH_FLOOR)) / lr
        dc = -g_bar
        if self.base == "pf":
            x = (lr * rho).to(torch.float64)
            scale = torch.log((1.0 - x).abs().clamp(min=GROWTH_FLOOR)) / torch.where(x == 0, 1.0, x)
            scale = torch.where(x.abs() < 1e-8, -1.0 - x / 2, scale).to(c.dtype)  # Re c_PF(x), −1 at x = 0
            dc = dc + u @ ((scale + 1.0) * (u.T @ g_bar))
        self.report = {"predicted_loss": 0.5 * float(loss_plus + loss_minus), "grad_norm": float(g_c.norm()),
                       "magnitude": float(a.norm()), "secant_curvature": float(secant[0]), "sharpness": float(rho[0]),
                       "growth": float(growth[0] * lr), **(
                           {f"magnitude_{i}": float(v) for i, v in enumerate(a.abs())} if a.numel() > 1 else {})}
        return rod, dc, growth, hu

    def step(self, objective: Objective, rod: Rod, lr: float, dt: float) -> Rod:
        """One explicit Euler substep of flow time dt (U by one power step of I + dt·H, re-orthonormalised)."""
        rod, dc, growth, hu = self.field(objective, rod, lr)
        u = rod.directions if self.directions == "solve" else _orthonormal(rod.directions + dt * hu)
        return Rod(rod.center + dt * dc, u, rod.log_magnitude + dt * growth, rod.sign)

    def summary(self) -> dict[str, Any]:
        """The work and settings a run's config records."""
        return {"symmetrized_k": self.k, "symmetrized_base": self.base, "symmetrized_directions": self.directions,
                "gradients": self.gradients, "hvps": self.hvps, "eigen_matvecs": self.eigen_matvecs,
                "losses": self.losses, "symmetrized_seconds": {k: round(v, 6) for k, v in self.seconds.items()}}


def symmetrized_flow(objective: Objective, theta0: Tensor | None = None, lr: float | Schedule = 0.1,
                     steps: int = 100, *, k: int = 1, substeps: int = 2, base: SymmetrizedBase = "gf",
                     directions: DirectionTracking = "oja", eig_tol: float = 1e-3, states: States = "none",
                     projection_size: int = 64, max_loss: float | None = None, time_budget: float | None = None,
                     progress: Progress = None) -> Trajectory:
    """Integrate the symmetrized-center flow of GD at rate ``lr`` over ``steps`` GD steps (module docstring).

    Explicit Euler, ``substeps`` substeps of dt = η(n)/substeps per GD step n (ℓ in log space).

    Args:
        objective: L, real; float64 recommended.
        theta0: c(0) (default ``objective.theta0``).
        lr: GD's rate η > 0, or a schedule η(n) (step n is built for η(n)).
        steps: GD steps to cover.
        k: directions in the rod.
        substeps: Euler substeps per GD step (1: the discrete center map with the rod restricted to U).
        base: ``"gf"`` or ``"pf"`` (the center's motion along U with the principal flow's coefficient).
        directions: ``"oja"`` or ``"solve"``.
        eig_tol: relative residual tolerance of the eigen solves.
        states: what the trajectory keeps of c: ``"full"``, ``"projection"`` or ``"none"``.
        projection_size: directions of the random projection (``states="projection"``).
        max_loss: stop (status ``diverged``) past this predicted loss; None: 1e12·max(1, |L(θ₀)|).
        time_budget: wall-clock seconds; then status ``"stopped"``, a ``time_budget`` event, the steps done kept.
        progress: a bar over steps (None: shown after 2 s).

    Returns:
        A :class:`Trajectory` with one row per GD step n at t = Σ_{m<n} η(m), the state c: ``loss`` (L(c)),
        ``grad_norm`` (‖∇L(c)‖), ``predicted_loss`` (½[L(c + r) + L(c − r)], GD's loss averaged over two steps),
        ``magnitude`` (‖a‖, the half rod's length; ``magnitude_i`` per direction when k > 1), ``secant_curvature``
        (λ̃ of u₁), ``sharpness`` (ρ₁ = u₁ᵀH(c)u₁), ``growth`` (log|1 − ηλ̃₁|, the magnitude's log-growth per step)
        and ``lr``. Its config holds the work (``gradients``, ``hvps``, ``eigen_matvecs``, ``losses``). Status
        ``complete``, ``diverged``, ``stopped``, ``interrupted`` or ``failed``, the steps done kept.
    """
    model = SymmetrizedCenter(k, base, directions, eig_tol)
    steps = check_count("steps", steps)
    substeps = check_count("substeps", substeps, minimum=1)
    schedule = as_schedule(lr)
    theta = _initial(objective, theta0, real=True)
    reserve_rows(steps + 1, objective.dim, states, projection_size, theta.element_size())
    rec = Recorder(objective.dim, states, projection_size)
    budget = Budget(time_budget)
    bar = progress_bar(steps, progress, f"symmetrized-center flow (k={k}, {base})")
    try:
        status, error = run_keeping_rows(rec, "symmetrized-center flow", lambda: _run(
            objective, theta, schedule, steps, substeps, model, rec, budget, bar, max_loss))
    finally:
        bar.close()
    config = {"kind": "symmetrized", "lr": repr(lr) if callable(lr) else float(lr), "steps": steps,
              "substeps": substeps, "objective": objective.name, "dtype": str(theta.dtype),
              "device": str(theta.device), **model.summary()}
    traj = rec.build(config, status)
    traj.error = error
    return traj


def _run(objective: Objective, theta: Tensor, schedule: Schedule, steps: int, substeps: int,
         model: SymmetrizedCenter, rec: Recorder, budget: Budget, bar: Any, max_loss: float | None) -> str:
    """Euler substeps; a row at every whole step from its first substep's evaluation. The final status."""
    time = 0.0
    rod = model.start(objective, theta, float(schedule(0.0)))
    bound = max_loss
    for step in range(steps + 1):
        lr = float(schedule(float(step)))
        if step > 0:
            rod = model.refresh(objective, rod)
        for sub in range(substeps):
            moved = model.step(objective, rod, lr, lr / substeps)
            if sub == 0:
                model.losses += 1
                row = {"loss": float(objective.loss(rod.center)), **model.report, "lr": lr}
                rec.add(time, rod.center, **row)
                if bound is None:
                    bound = 1e12 * max(1.0, abs(row["loss"]))
                worst = max(abs(row["loss"]), abs(row["predicted_loss"]))
                if not math.isfinite(worst) or worst > bound:
                    raise ArithmeticError(f"the loss at step {step} ({row['loss']:.4g}, predicted "
                                          f"{row['predicted_loss']:.4g}) is not finite or beyond ±{bound:.3g}: the "
                                          "flow diverged")
                if step == steps:
                    return "complete"
            rod = moved
            if not (bool(torch.isfinite(rod.center).all()) and bool(torch.isfinite(rod.log_magnitude).all())):
                raise ArithmeticError(f"the flow diverged at step {step} (non-finite center or magnitude)")
        time += lr
        bar.update(1)
        if budget.exceeded():
            rec.event(Event("time_budget", step, time, {"reason": f"wall-clock budget of {budget.seconds} s used up"}))
            return "stopped"
    return "complete"
