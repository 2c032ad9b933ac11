"""Stable and central flows of an update rule (GD, Scalar RMSProp, RMSProp, Adam; :mod:`flows.dynamics.rules`).

The rule w ← w − P(s)⁻¹d with state s has, in time t counted in steps,

* the **stable flow**: dw/dt = −P(s)⁻¹ d(s, g), ds/dt = rate(s, g, g ⊙ g) (g = ∇L(w));
* the **central flow** (Cohen, Damian et al., ICLR 2025, §5; the authors' ``src/flows.py`` for RMSProp, rewritten
  here for driftlab's objects): GD-like oscillations δ ~ (0, Σ) along the critical generalized eigenvectors
  HU = PU diag(λ), UᵀPU = I (λ the eigenvalues of P^{-1/2}HP^{-1/2}, critical above ``critical``·τ with τ the
  rule's threshold, 2 for GD/RMSProp), Σ = UXUᵀ. The drifts are the stable ones at the time-averaged gradient
  statistics, to second order in δ:

      E[g] = g + ½ Σᵢⱼ Xᵢⱼ ∇(uᵢᵀHuⱼ),     E[g ⊙ g] = g ⊙ g + diag(HΣH),

  so dw/dt = −P⁻¹E[g] (Adam: −P⁻¹m̂, with dm/dt = c₁(E[g] − m)) and ν follows E[g ⊙ g] (its sum for Scalar
  RMSProp). X solves the SDCP 0 ⪯ X ⟂ A + B[X] ⪰ 0 (:func:`~flows.dynamics.sdcp.solve_sdcp`), the stability of
  Uᵀ(τP − H)U linearised over one Euler substep dt = 1/substeps:

      A + B[X] = diag(τ − λ) + dt·[τ Uᵀ(dP/dt)U − Uᵀ(dH/dt)U],   d(uₖᵀHuₗ)/dt = ⟨∇(uₖᵀHuₗ), dw/dt⟩,
      uₖᵀ(dP/dt)uₗ = Σ_d u_dk u_dl dp_d/dt (p through ν, the bias correction and η(t), the rule's
      ``preconditioner_rate``).

**Symmetrising B.** With the exact HU = PU diag(λ) the ν-path of B is Σ_d q_d p_d² u_dk u_dl u_di u_dj λᵢλⱼ
(q = ∂p/∂ν): not self-adjoint, since λᵢλⱼ ≠ λₖλₗ (the public code's TODO). driftlab uses HU = τPU, the value on
the stability boundary where X is non-zero (complementarity), in diag(HΣH) for both the SDCP and the drift it
takes, so that the step taken is the one the SDCP made stable and B is self-adjoint and PSD (checked on every
solve; ``tests/flows/dynamics/test_adaptive.py`` shows the exact form is not). The error is (λᵢλⱼ/τ² − 1) ≤ 5% at the
default ``critical`` = 0.975 in the ν drift of critical directions only.

**Adam.** X reaches w only through m (dw/dt = −P⁻¹m̂ has no X term at the current instant), so B's curvature path
is empty at first order in dt and the SDCP sees only ν's slow response: X then stabilises through ν, not through
the third derivative as GD does. ``adam_closure="adiabatic"`` (default) closes it by taking m at its quasi-steady
value m̂ ≈ E[g] in the SDCP's dH/dt (the first-moment EMA relaxes in 1/c₁ ≈ 9 steps at β₁ = 0.9, faster than the
sharpness moves at the edge); ``"none"`` keeps the literal first-order linearisation. The drift of m itself uses
E[g] exactly as above in both cases.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, Literal

import torch
from torch import Tensor

from ..curvature.spectrum import EigenTracker
from ..objective.autodiff import pair_indices
from ..objective.objective import Objective
from ..progress import Progress, progress_bar
from ..records.events import Event
from ..records.trajectory import Recorder, Trajectory, reserve_rows
from ..validate import States, check_choice, check_count, check_positive
from .gd import Budget, _initial, keep_failure
from .rules import GD, RuleState
from .sdcp import solve_sdcp

AdaptiveFlowKind = Literal["stable", "central"]
FLOW_KINDS = ("stable", "central")
AdamClosure = Literal["adiabatic", "none"]


def _weights(x: Tensor) -> Tensor:
    """Σᵢⱼ Xᵢⱼ tᵢⱼ as weights on the pairs i ≤ j (Xᵢᵢ; 2Xᵢⱼ off the diagonal)."""
    return torch.stack([x[i, j] * (1.0 if i == j else 2.0) for i, j in pair_indices(x.shape[0])])


def _bilinear(u: Tensor, diagonal: Tensor) -> Tensor:
    """Uᵀ diag(d) U for d of shape (D,) or 0-d."""
    return u.T @ (u * diagonal[:, None]) if diagonal.ndim else diagonal * (u.T @ u)


@dataclass
class _Linearised:
    """The parts of one central-flow substep: stable drifts and the maps X ↦ their X-parts."""

    rule: GD
    state: RuleState
    p: Tensor
    u: Tensor
    pairs: Tensor
    threshold: float
    adiabatic: bool
    zero: Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.zero = torch.zeros(self.u.shape[0], dtype=self.u.dtype, device=self.u.device)

    def mean_shift(self, x: Tensor) -> Tensor:
        """½ Σᵢⱼ Xᵢⱼ ∇(uᵢᵀHuⱼ): E[g] − g."""
        return 0.5 * _weights(x.to(self.pairs)) @ self.pairs

    def square_shift(self, x: Tensor) -> Tensor:
        """diag(HΣH) with HU = τPU: τ² p² ⊙ diag(UXUᵀ)."""
        diag = ((self.u @ x.to(self.u)) * self.u).sum(dim=1)
        return self.threshold ** 2 * self.p ** 2 * diag

    def state_part(self, x: Tensor) -> RuleState:
        """The X-part of ds/dt (rates are affine in the moments: rate(s, δg, δsq) − rate(s, 0, 0))."""
        shifted = self.rule.rate(self.state, self.mean_shift(x), self.square_shift(x))
        base = self.rule.rate(self.state, self.zero, self.zero)
        return {key: shifted[key] - base[key] for key in shifted}

    def velocity_part(self, x: Tensor, *, closure: bool = False) -> Tensor:
        """The X-part of dw/dt: −P⁻¹ (d(s, E[g]) − d(s, g)); with the Adam closure, −P⁻¹ × the mean shift."""
        shift = self.mean_shift(x)
        if closure:
            return -shift / self.p
        return -(self.rule.direction(self.state, shift) - self.rule.direction(self.state, self.zero)) / self.p

    def stability_part(self, x: Tensor, dt: float) -> Tensor:
        """B[X] = dt·[τ Uᵀ(dP/dt)_X U − Uᵀ(dH/dt)_X U]."""
        velocity = self.velocity_part(x, closure=self.adiabatic)
        d_h = _unpack(self.pairs @ velocity, self.u.shape[1])
        rate = self.state_part(x)
        rate["t"] = torch.zeros_like(self.state["t"])
        d_p = _bilinear(self.u, self.rule.preconditioner_rate(self.state, rate))
        return dt * (self.threshold * d_p - d_h)

    def operator(self, dt: float) -> Tensor:
        """B as a (k², k²) matrix on row-major vec(X), built column by column on the symmetric basis."""
        k = self.u.shape[1]
        columns = torch.empty(k * k, k * k, dtype=torch.float64)
        for i in range(k):
            for j in range(k):
                basis = torch.zeros(k, k, dtype=torch.float64)
                basis[i, j] += 0.5
                basis[j, i] += 0.5
                columns[:, i * k + j] = self.stability_part(basis, dt).double().reshape(-1).cpu()
        return columns


def _unpack(values: Tensor, k: int) -> Tensor:
    """Pair values (i ≤ j) as a symmetric (k, k) matrix."""
    out = torch.empty(k, k, dtype=values.dtype, device=values.device)
    for p, (i, j) in enumerate(pair_indices(k)):
        out[i, j] = out[j, i] = values[p]
    return out


class AdaptiveCentralState:
    """One path of an update rule's stable or central flow: the tracker, the last X and the last row.

    Args:
        rule: the update rule.
        kind: ``"stable"`` or ``"central"``.
        substeps: Euler substeps per step; the stability is linearised over one (dt = 1/substeps).
        critical: λ(P⁻¹H) above ``critical``·τ is critical (0.975: 1.95 for τ = 2).
        track: the tracker follows every effective eigenvalue above track·τ.
        eig_tol: relative eigen-residual tolerance.
        max_k: most eigenpairs tracked.
        adam_closure: see the module docstring.
    """

    def __init__(self, rule: GD, kind: AdaptiveFlowKind = "central", substeps: int = 4, critical: float = 0.975,
                 track: float = 0.375, eig_tol: float = 1e-3, max_k: int = 16,
                 adam_closure: AdamClosure = "adiabatic") -> None:
        if not isinstance(rule, GD):
            raise TypeError(f"rule must be a flows update rule (GD, ScalarRMSProp, RMSProp, Adam), got "
                            f"{type(rule).__name__}")
        self.rule = rule
        self.kind = check_choice("flow", kind, FLOW_KINDS)
        self.substeps = check_count("substeps", substeps, minimum=1)
        if not (isinstance(critical, (int, float)) and 0 < critical <= 1):
            raise ValueError(f"critical must be in (0, 1] (a fraction of the threshold), got {critical!r}")
        if not (isinstance(track, (int, float)) and 0 < track < critical):
            raise ValueError(f"track must be in (0, critical) = (0, {critical:g}), got {track!r}")
        self.critical = float(critical)
        self.track = float(track)
        self.eig_tol = check_positive("eig_tol", eig_tol)
        self.max_k = check_count("max_k", max_k, minimum=1)
        self.adam_closure = check_choice("adam_closure", adam_closure, ("adiabatic", "none"))
        self.tracker: EigenTracker | None = None
        self.x: Tensor | None = None
        self.report: dict[str, Any] = {}
        self.third_products = 0
        self.evaluations = 0
        self.seconds = {"gradient": 0.0, "eigen": 0.0, "third": 0.0, "sdcp": 0.0}

    def summary(self) -> dict[str, Any]:
        """The work and settings for a run's config."""
        return {"flow": self.kind, "substeps": self.substeps, "critical": self.critical, "track": self.track,
                "eig_tol": self.eig_tol, "max_k": self.max_k, "adam_closure": self.adam_closure,
                "threshold": self.rule.threshold, "evaluations": self.evaluations,
                "eigen_matvecs": 0 if self.tracker is None else self.tracker.total_matvecs,
                "third_products": self.third_products,
                "central_seconds": {key: round(value, 6) for key, value in self.seconds.items()}}

    def drift(self, objective: Objective, w: Tensor, state: RuleState) -> tuple[Tensor, RuleState]:
        """(dw/dt, ds/dt) at (w, s): dw/dt = −d(s, E[g])/p(s); the quantities measured are left in :attr:`report`."""
        mean, ds = self.field(objective, w, state)
        return -self.rule.direction(state, mean) / self.rule.preconditioner(state), ds

    def step(self, objective: Objective, w: Tensor, state: RuleState, dt: float) -> tuple[Tensor, RuleState]:
        """One semi-implicit Euler substep: s' = s + dt·ds/dt(w, s), then w' = w − dt·d(s', E[g])/p(s').

        The state moves first, as the discrete method folds g in before it steps. For Adam this is what keeps the
        (w, m) oscillator stable: explicit Euler on ẇ = −m̂/p, ṁ = c₁(g − m) grows unless dt < p/λ (1/38 of a step
        at the edge, where the frequency is √(c₁λ/p) ≈ 2 per step), while the semi-implicit step is stable up to
        dt·√(c₁λ/p) < 2, and symplectic for the undamped part.
        """
        mean, ds = self.field(objective, w, state)
        new = {key: state[key] + dt * ds[key] for key in state}
        return w - dt * self.rule.direction(new, mean) / self.rule.preconditioner(new), new

    def field(self, objective: Objective, w: Tensor, state: RuleState) -> tuple[Tensor, RuleState]:
        """(E[g], ds/dt) at (w, s): the time-averaged gradient the direction takes, and the state's rate."""
        self.evaluations += 1
        clock = perf_counter()
        loss, g = objective.loss_and_grad(w)
        self.seconds["gradient"] += perf_counter() - clock
        rule, p = self.rule, self.rule.preconditioner(state)
        dw = -rule.direction(state, g) / p
        ds = rule.rate(state, g, g * g)
        report: dict[str, Any] = {"loss": float(loss), "grad_norm": float(torch.linalg.vector_norm(g)),
                                  "predicted_loss": float(loss), "critical": 0, "k": 0, "sigma": [],
                                  "infeasibility": 0.0, "complementarity": 0.0, **rule.summary(state)}
        self.report = report
        if self.kind == "stable":
            return g, ds
        values, vectors = self._eigenpairs(objective, w, p)
        report.update(effective_sharpness=float(values[0]), k=int(values.numel()))
        crit = (values > self.critical * rule.threshold).nonzero().flatten()
        report["critical"] = int(crit.numel())
        if crit.numel() == 0:
            self.x = None
            return g, ds
        scale = p.expand(w.shape[0]).rsqrt()
        u = vectors[:, crit] * scale[:, None]  # generalized eigenvectors, UᵀPU = I
        clock = perf_counter()
        pairs = objective.third_derivatives(w, u)
        self.seconds["third"] += perf_counter() - clock
        self.third_products += pairs.shape[0]
        parts = _Linearised(rule, state, p, u, pairs, rule.threshold,
                            adiabatic=self.adam_closure == "adiabatic" and "m" in state)
        x = self._solve(parts, values[crit], dw, ds)
        lam = values[crit].to(w)
        report.update(predicted_loss=float(loss) + 0.5 * float((lam * torch.diagonal(x)).sum()),
                      sigma=torch.linalg.eigvalsh(x.double()).flip(0).tolist())
        shift = parts.state_part(x)
        return g + parts.mean_shift(x), {key: ds[key] + shift[key] for key in ds}

    def _eigenpairs(self, objective: Objective, w: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        if self.tracker is None:
            self.tracker = EigenTracker(k=1, tol=self.eig_tol, threshold=self.track * self.rule.threshold,
                                        max_k=max(1, min(self.max_k, objective.dim - 1)))
        clock = perf_counter()
        pairs = self.tracker.update(objective, w, preconditioner=p.expand(w.shape[0]).contiguous())
        self.seconds["eigen"] += perf_counter() - clock
        return pairs.values, pairs.vectors

    def _solve(self, parts: _Linearised, values: Tensor, dw: Tensor, ds: RuleState) -> Tensor:
        """X from the SDCP of this substep (warm-started); residuals into the report."""
        clock = perf_counter()
        dt = 1.0 / self.substeps
        k = values.numel()
        d_h = _unpack(parts.pairs @ dw, k)
        d_p = _bilinear(parts.u, self.rule.preconditioner_rate(parts.state, ds))
        a = torch.diag(self.rule.threshold - values) + dt * (self.rule.threshold * d_p - d_h)
        a = a.double().cpu()
        b = parts.operator(dt)
        asymmetry = float((b - b.T).abs().max()) / max(float(b.abs().max()), 1e-300)
        if asymmetry > 1e-8:
            raise ValueError(f"the SDCP's B is not self-adjoint (relative asymmetry {asymmetry:.2g})")
        warm = self.x if self.x is not None and self.x.shape == (k, k) else None
        try:
            sol = solve_sdcp(0.5 * (a + a.T), 0.5 * (b + b.T), x0=warm, tol=1e-9)
        except ValueError as err:
            if "unbounded" not in str(err):
                raise
            raise ArithmeticError(f"the central flow of {self.rule.name} does not exist here: λ(P⁻¹H) = "
                                  f"{float(values.max()):.4g} above τ = {self.rule.threshold:g} along a direction "
                                  "that nothing can stabilise") from err
        self.seconds["sdcp"] += perf_counter() - clock
        if not sol.converged:
            warnings.warn(f"{self.rule.name} central flow: the SDCP did not converge in {sol.iterations} iterations "
                          f"(infeasibility {sol.infeasibility:.2g}, complementarity {sol.complementarity:.2g})",
                          RuntimeWarning, stacklevel=4)
        self.x = sol.x
        self.report.update(infeasibility=sol.infeasibility, complementarity=sol.complementarity)
        return sol.x.to(device=parts.u.device)

    def row(self) -> dict[str, float]:
        """The last evaluation as a trajectory row (``sigma_i``: X's eigenvalues, descending)."""
        row = {key: float(value) for key, value in self.report.items() if key != "sigma"}
        row.update({f"sigma_{i}": float(v) for i, v in enumerate(self.report["sigma"])})
        return row


def adaptive_flow(objective: Objective, theta0: Tensor | None, rule: GD, steps: int, *,
                  flow: AdaptiveFlowKind = "central", substeps: int = 4, critical: float = 0.975,
                  track: float = 0.375, eig_tol: float = 1e-3, max_k: int = 16,
                  adam_closure: AdamClosure = "adiabatic", states: States = "none", projection_size: int = 64,
                  time_budget: float | None = None, progress: Progress = None) -> Trajectory:
    """The stable or central flow of an update rule over ``steps`` steps, Euler substeps of dt = 1/substeps.

    Args:
        objective: L, real; float64 recommended.
        theta0: w(0) (default ``objective.theta0``).
        rule: a :mod:`~flows.dynamics.rules` record (``GD``, ``ScalarRMSProp``, ``RMSProp``, ``Adam``), its rate a
            number or a schedule.
        steps: steps of the discrete method to cover (flow time in steps).
        flow: ``"stable"`` or ``"central"`` (module docstring).
        substeps: Euler substeps per step.
        critical: the critical fraction of the rule's threshold τ (λ(P⁻¹H) > critical·τ).
        track: the tracker follows effective eigenvalues above track·τ.
        eig_tol: relative eigen-residual tolerance.
        max_k: most eigenpairs tracked.
        adam_closure: ``"adiabatic"`` or ``"none"`` (module docstring; Adam only).
        states: what the trajectory keeps of w: ``"full"``, ``"projection"`` or ``"none"``.
        projection_size: directions of the random projection.
        time_budget: wall-clock seconds; then status ``"stopped"`` with the steps done.
        progress: a bar over steps (None: shown after 2 s).

    Returns:
        A :class:`Trajectory` with one row per step n at t = Σ_{m<n} η(m) (GD's time axis): ``loss``,
        ``grad_norm``, ``lr``, ``effective_step`` (1/p, its mean over coordinates for RMSProp/Adam), ``nu``; for the
        central flow also ``effective_sharpness`` (λ₁(P⁻¹H)), ``critical``, ``k``, ``predicted_loss``
        (L + ½⟨H, Σ⟩ = L + ½ Σᵢ Xᵢᵢλᵢ), ``infeasibility``, ``complementarity`` (worst over the step's substeps)
        and ``sigma_i``. Status ``complete``, ``diverged`` (non-finite, or the flow stopped existing), ``stopped``,
        ``interrupted`` or ``failed``, with the steps done kept.
    """
    flow_state = AdaptiveCentralState(rule, flow, substeps, critical, track, eig_tol, max_k, adam_closure)
    w = _initial(objective, theta0, real=True)
    steps = check_count("steps", steps)
    reserve_rows(steps + 1, objective.dim, states, projection_size, w.element_size())
    _, g0 = objective.loss_and_grad(w)
    state = rule.fold(rule.initial_state(w), g0)
    rec = Recorder(objective.dim, states, projection_size)
    budget = Budget(time_budget)
    bar = progress_bar(steps, progress, f"{rule.name} {flow} flow")
    status, error = "complete", None
    try:
        status = _run(objective, w, state, flow_state, steps, rec, budget, bar)
    except KeyboardInterrupt:
        status = "interrupted"
        rec.event(Event("interrupted", rec.row, rec.times[-1] if rec.times else 0.0, {"reason": "KeyboardInterrupt"}))
    except ArithmeticError as err:
        if rec.row < 0:
            raise
        status = "diverged"
        rec.event(Event("divergence", rec.row, rec.times[-1], {"reason": str(err)}))
        warnings.warn(f"{rule.name} {flow} flow stopped after {rec.row} steps: {err}", RuntimeWarning, stacklevel=2)
    except Exception as err:  # noqa: BLE001 - keep the steps done
        if rec.row < 1:
            raise
        status, error = "failed", err
        keep_failure(rec, err, f"{rule.name} {flow} flow", rec.times[-1])
    finally:
        bar.close()
    config = {"kind": "adaptive_flow", **rule.settings(), "steps": steps, "objective": objective.name,
              "dtype": str(w.dtype), "device": str(w.device), **flow_state.summary()}
    traj = rec.build(config, status)
    traj.error = error
    return traj


def _run(objective: Objective, w: Tensor, state: RuleState, flow_state: AdaptiveCentralState, steps: int,
         rec: Recorder, budget: Budget, bar: Any) -> str:
    """Euler substeps; a row at every whole step (the worst SDCP residuals of its substeps). The final status."""
    dt = 1.0 / flow_state.substeps
    schedule = flow_state.rule.schedule
    time, bound = 0.0, math.inf
    for step in range(steps + 1):
        for sub in range(flow_state.substeps):
            w_next, state_next = flow_state.step(objective, w, state, dt)
            row = flow_state.row()
            if sub == 0:
                rec.add(time, w, **row)
                if step == 0:
                    bound = 1e12 * max(1.0, abs(row["loss"]))
                if not math.isfinite(row["loss"]) or abs(row["loss"]) > bound:
                    raise ArithmeticError(f"the loss {row['loss']:.4g} at step {step} is not finite or beyond "
                                          f"±{bound:.3g} (10¹² × the first): the flow diverged")
            else:
                for name in ("infeasibility", "complementarity"):
                    rec.set_metric(name, step, max(rec.metrics[name][step], row[name]))
            if step == steps:
                return "complete"
            w, state = w_next, state_next
            if not bool(torch.isfinite(w).all()):
                raise ArithmeticError(f"the flow diverged at step {step} (non-finite w)")
        time += float(schedule(float(step)))
        bar.update(1)
        if budget.exceeded():
            rec.event(Event("time_budget", step, time, {"reason": f"wall-clock budget of {budget.seconds} s used up"}))
            return "stopped"
    return "complete"
