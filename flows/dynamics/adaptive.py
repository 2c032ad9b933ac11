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

* the **ablated flow** (ibid., §5.1, for Scalar RMSProp and GD): dw/dt = −(τ/S(w))∇L(w), S = λ₁(H): the effective
  step held at the central flow's equilibrium value 2/S, without the oscillation's implicit curvature penalty; its
  rows add ``sharpness`` (S) and ``effective_step`` is τ/S.

Each substep is semi-implicit Euler: the state moves first, then w with the moved state (:meth:`AdaptiveCentralState
.step`).

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
from .gd import Budget, _initial, run_keeping_rows
from .rules import GD, RuleState, ScalarRMSProp
from .sdcp import solve_sdcp

AdaptiveFlowKind = Literal["stable", "central", "ablated"]
FLOW_KINDS = ("stable", "central", "ablated")
AdamClosure = Literal["adiabatic", "none"]


def _weights(x: Tensor) -> Tensor:
    """Σᵢⱼ Xᵢⱼ tᵢⱼ as weights on the pairs i ≤ j (Xᵢᵢ; 2Xᵢⱼ off the diagonal); X of shape (..., k, k)."""
    k = x.shape[-1]
    rows, cols = (torch.tensor(index, device=x.device) for index in zip(*pair_indices(k)))
    return x[..., rows, cols] * torch.where(rows == cols, 1.0, 2.0).to(x)


def _bilinear(u: Tensor, diagonal: Tensor, per_coordinate: bool) -> Tensor:
    """Uᵀ diag(d) U for d of shape (D,) (per coordinate) or 0-d (scalar), or batches of them, (B, D) or (B,)."""
    if not per_coordinate:
        return diagonal[..., None, None] * (u.T @ u)
    return torch.einsum("dk,...d,dl->...kl", u, diagonal, u)


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
        """½ Σᵢⱼ Xᵢⱼ ∇(uᵢᵀHuⱼ): E[g] − g (X of shape (..., k, k) → (..., D))."""
        return 0.5 * _weights(x.to(self.pairs)) @ self.pairs

    def square_shift(self, x: Tensor) -> Tensor:
        """diag(HΣH) with HU = τPU: τ² p² ⊙ diag(UXUᵀ)."""
        diag = torch.einsum("di,...ij,dj->...d", self.u, x.to(self.u), self.u)
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
        """B[X] = dt·[τ Uᵀ(dP/dt)_X U − Uᵀ(dH/dt)_X U], for X of shape (..., k, k)."""
        velocity = self.velocity_part(x, closure=self.adiabatic)
        d_h = _unpack(velocity @ self.pairs.T, self.u.shape[1])
        rate = self.state_part(x)
        rate["t"] = torch.zeros_like(self.state["t"])
        d_p = _bilinear(self.u, self.rule.preconditioner_rate(self.state, rate), self.p.ndim > 0)
        return dt * (self.threshold * d_p - d_h)

    def operator(self, dt: float) -> Tensor:
        """B as a (k², k²) matrix on row-major vec(X), its columns B[½(Eᵢⱼ + Eⱼᵢ)] evaluated as one batch."""
        k = self.u.shape[1]
        eye = torch.eye(k * k, dtype=self.u.dtype, device=self.u.device).reshape(k * k, k, k)
        basis = 0.5 * (eye + eye.transpose(1, 2))
        return self.stability_part(basis, dt).reshape(k * k, k * k).T.double().cpu()


def _unpack(values: Tensor, k: int) -> Tensor:
    """Pair values (..., k(k+1)/2) (pairs i ≤ j) as symmetric (..., k, k) matrices."""
    rows, cols = (torch.tensor(index, device=values.device) for index in zip(*pair_indices(k)))
    out = values.new_empty(*values.shape[:-1], k, k)
    out[..., rows, cols] = values
    out[..., cols, rows] = values
    return out


class AdaptiveCentralState:
    """One path of an update rule's stable or central flow: the tracker, the last X and the last row.

    Args:
        rule: the update rule.
        kind: ``"stable"``, ``"central"`` or ``"ablated"`` (module docstring).
        substeps: Euler substeps per step; the stability is linearised over one (dt = 1/substeps).
        critical: λ(P⁻¹H) above ``critical``·τ is critical (0.975: 1.95 for τ = 2).
        track: the tracker follows every effective eigenvalue above track·τ.
        eig_tol: relative eigen-residual tolerance.
        max_k: most eigenpairs tracked.
        adam_closure: see the module docstring.
        eig_refresh: 0: an eigen solve at every substep; n ≥ 1: at the first substep of every n-th step, with
            Rayleigh–Ritz on the kept basis at the others (k HVPs each, :meth:`_eigenpairs`).
    """

    def __init__(self, rule: GD, kind: AdaptiveFlowKind = "central", substeps: int = 4, critical: float = 0.975,
                 track: float = 0.375, eig_tol: float = 1e-3, max_k: int = 16,
                 adam_closure: AdamClosure = "adiabatic", eig_refresh: int = 0) -> None:
        if not isinstance(rule, GD):
            raise TypeError(f"rule must be a flows update rule (GD, ScalarRMSProp, RMSProp, Adam), got "
                            f"{type(rule).__name__}")
        self.rule = rule
        self.kind = check_choice("flow", kind, FLOW_KINDS)
        if self.kind == "ablated" and type(rule) not in (GD, ScalarRMSProp):
            raise ValueError(f"flow='ablated' (dw/dt = −(τ/S)∇L) needs a scalar preconditioner: rule gd or "
                             f"scalar_rmsprop, got {rule.name}")
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
        self.eig_refresh = check_count("eig_refresh", eig_refresh, minimum=0)
        self.ritz_matvecs = 0
        self._basis: Tensor | None = None
        self._due = True

    def begin_step(self, step: int) -> None:
        """Called at the first substep of each step: an eigen solve is due every ``eig_refresh`` steps."""
        if self.eig_refresh and step % self.eig_refresh == 0:
            self._due = True

    def summary(self) -> dict[str, Any]:
        """The work and settings for a run's config."""
        return {"flow": self.kind, "substeps": self.substeps, "critical": self.critical, "track": self.track,
                "eig_tol": self.eig_tol, "max_k": self.max_k, "adam_closure": self.adam_closure,
                "eig_refresh": self.eig_refresh, "ritz_matvecs": self.ritz_matvecs,
                "threshold": self.rule.threshold, "evaluations": self.evaluations,
                "eigen_matvecs": 0 if self.tracker is None else self.tracker.total_matvecs,
                "third_products": self.third_products,
                "central_seconds": {key: round(value, 6) for key, value in self.seconds.items()}}

    def drift(self, objective: Objective, w: Tensor, state: RuleState) -> tuple[Tensor, RuleState]:
        """(dw/dt, ds/dt) at (w, s): dw/dt = −d(s, E[g])/p(s) (ablated: −(τ/S)g); measurements go to :attr:`report`."""
        mean, ds = self.field(objective, w, state)
        if self.kind == "ablated":
            return -self.report["effective_step"] * mean, ds
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
        if self.kind == "ablated":
            return w - dt * self.report["effective_step"] * mean, new
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
        if self.kind == "ablated":
            sharpness = float(self._eigenpairs(objective, w, torch.ones((), dtype=w.dtype, device=w.device))[0][0])
            if not sharpness > 0:
                raise ArithmeticError(f"the ablated flow needs a positive sharpness, got λ₁(H) = {sharpness:.4g}")
            report.update(sharpness=sharpness, effective_step=rule.threshold / sharpness)
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
        """Eigenpairs of P^{-1/2}HP^{-1/2}, values descending: a tracker solve when due, else Rayleigh–Ritz.

        A solve is due at the first substep of every ``eig_refresh``-th step; in between, Rayleigh–Ritz on the block
        Krylov space [V, MV] of the kept basis V (M = P^{-1/2}HP^{-1/2}; V the solve's vectors and the tracker's
        spare ones): 2·dim V HVPs, and the first-order turn of the eigenvectors within the step is in the space (on
        V alone the Ritz values missed it: 2.0 where the next solve found 2.7).
        """
        if self.eig_refresh and self._basis is not None and not self._due:
            clock = perf_counter()
            scale = p.expand(w.shape[0]).rsqrt()

            def apply(block: Tensor) -> Tensor:  # P^{-1/2}HP^{-1/2} on the columns of a (D, m) block
                self.ritz_matvecs += block.shape[1]
                return objective.hvp(w, (block * scale[:, None]).T.contiguous()).T * scale[:, None]

            basis = self._basis
            product = apply(basis)
            residual = product - basis @ (basis.T @ product)
            residual = residual - basis @ (basis.T @ residual)  # re-orthogonalised once
            extra, _ = torch.linalg.qr(residual)
            space = torch.cat([basis, extra], dim=1)
            image = torch.cat([product, apply(extra)], dim=1)
            values, rotation = torch.linalg.eigh(0.5 * (space.T @ image + image.T @ space))
            order = torch.argsort(values, descending=True)[: basis.shape[1]]
            self.seconds["eigen"] += perf_counter() - clock
            return values[order], space @ rotation[:, order]
        values, vectors = self._solve_eigenpairs(objective, w, p)
        assert self.tracker is not None
        spare = self.tracker.basis  # the pairs and the tracker's spare vectors: a direction rising within the step
        self._basis = vectors if spare is None or spare.shape[1] <= vectors.shape[1] else spare.to(vectors)
        self._due = False
        return values, vectors

    def _solve_eigenpairs(self, objective: Objective, w: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        if self.tracker is None:
            threshold = None if self.kind == "ablated" else self.track * self.rule.threshold  # ablated: λ₁ only
            self.tracker = EigenTracker(k=1, tol=self.eig_tol, threshold=threshold,
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
        d_h = _unpack(dw @ parts.pairs.T, k)
        d_p = _bilinear(parts.u, self.rule.preconditioner_rate(parts.state, ds), parts.p.ndim > 0)
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
                  adam_closure: AdamClosure = "adiabatic", eig_refresh: int = 0, states: States = "none",
                  projection_size: int = 64,
                  time_budget: float | None = None, progress: Progress = None) -> Trajectory:
    """The stable, central or ablated flow of an update rule over ``steps`` steps, substeps of dt = 1/substeps.

    Args:
        objective: L, real; float64 recommended.
        theta0: w(0) (default ``objective.theta0``).
        rule: a :mod:`~flows.dynamics.rules` record (``GD``, ``ScalarRMSProp``, ``RMSProp``, ``Adam``), its rate a
            number or a schedule.
        steps: steps of the discrete method to cover (flow time in steps).
        flow: ``"stable"``, ``"central"`` or ``"ablated"`` (module docstring; ablated: GD or Scalar RMSProp).
        substeps: Euler substeps per step.
        critical: the critical fraction of the rule's threshold τ (λ(P⁻¹H) > critical·τ).
        track: the tracker follows effective eigenvalues above track·τ.
        eig_tol: relative eigen-residual tolerance.
        max_k: most eigenpairs tracked.
        adam_closure: ``"adiabatic"`` or ``"none"`` (module docstring; Adam only).
        eig_refresh: steps between eigen solves (0: a solve at every substep; 1: one per step, Rayleigh–Ritz at
            the other substeps, as the authors' reference discretisation updates its eigenvectors).
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
    flow_state = AdaptiveCentralState(rule, flow, substeps, critical, track, eig_tol, max_k, adam_closure,
                                      eig_refresh)
    w = _initial(objective, theta0, real=True)
    steps = check_count("steps", steps)
    reserve_rows(steps + 1, objective.dim, states, projection_size, w.element_size())
    _, g0 = objective.loss_and_grad(w)
    state = rule.fold(rule.initial_state(w), g0)
    rec = Recorder(objective.dim, states, projection_size)
    budget = Budget(time_budget)
    bar = progress_bar(steps, progress, f"{rule.name} {flow} flow")
    try:
        status, error = run_keeping_rows(rec, f"{rule.name} {flow} flow", lambda: _run(
            objective, w, state, flow_state, steps, rec, budget, bar))
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
        flow_state.begin_step(step)
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
