"""The central flow of gradient descent (Cohen, Damian, Talwalkar, Kolter, Lee, ICLR 2025, arXiv 2410.24206).

GD at rate η on E oscillates at the edge of stability; its *time average* follows

    dθ/dt = −η [∇E(θ) + ½ ∇⟨H(θ), Σ(t)⟩],     Σ = U X Uᵀ,  X ⪰ 0,

with t counted in GD steps, U the (orthonormal) eigenvectors of the critical eigenvalues (ηλᵢ above
``critical``, 1.95 by default) and X the oscillation covariance in that basis, chosen so that the critical
curvature stays stable: with M = UᵀHU and the paper's discretisation (Euler substeps of dt = 1/substeps,
default 4, the stability linearised over one substep),

    X ⪰ 0,   (2/η)I − M − dt·dM/dt ⪰ 0,   ⟨X, (2/η)I − M − dt·dM/dt⟩ = 0,

where dM_ij/dt = ⟨tᵢⱼ, dθ/dt⟩ and tᵢⱼ = ∇(uᵢᵀHuⱼ) (:meth:`Objective.third_derivatives`). Written out, that is
the SDCP of :func:`flows.dynamics.sdcp.solve_sdcp` with

    A = (2/η)I − M + dt·η·[⟨tᵢⱼ, ∇E⟩],    B[X]ᵢⱼ = dt·(η/2)·Σₗₘ ⟨tᵢⱼ, tₗₘ⟩ Xₗₘ.

Recorded per GD step (the paper's predictions, second-order averages over the oscillation δ ~ (0, Σ)):
the predicted time-averaged loss E(θ) + ½⟨H, Σ⟩ = E + ½ Σᵢⱼ Mᵢⱼ Xᵢⱼ (≈ E + tr Σ/η at the edge), the predicted
time-averaged ‖∇E‖² ≈ ‖∇E(θ)‖² + ⟨Σ, H²⟩, the eigenvalues of X (the oscillation variances), the number of
critical directions and the SDCP's KKT residuals.
"""
from __future__ import annotations

import math
import warnings
from time import perf_counter
from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor

from ..curvature.spectrum import EigenTracker
from ..objective.autodiff import pair_indices
from ..objective.objective import Objective
from ..records.trajectory import Trajectory
from .sdcp import solve_sdcp

Subcritical = Literal["bounded", "tight"]
SUBCRITICAL: tuple[str, ...] = get_args(Subcritical)


def _sdcp_terms(t: Tensor, g: Tensor, values: Tensor, lr: float, dt: float) -> tuple[Tensor, Tensor]:
    """(A (k, k), B (k², k²)) in float64 on the host, from the pair derivatives t (k(k+1)/2, D), pairs i ≤ j.

    Only the k(k+1)/2 distinct vectors are touched on the device (t_ji = t_ij): their Gram matrix and their
    products with g, expanded to all index pairs on the host.
    """
    k = values.numel()
    index = torch.empty(k, k, dtype=torch.long)
    for p, (i, j) in enumerate(pair_indices(k)):
        index[i, j] = index[j, i] = p
    flat = index.reshape(-1)
    t64 = t.double()  # float64 products: B must be symmetric to the SDCP's tolerance
    pair_gram, pair_tg = (t64 @ t64.T).cpu(), (t64 @ g.double()).cpu()
    gram = pair_gram[flat][:, flat]
    a = torch.diag(2.0 / lr - values.double().cpu()) + dt * lr * pair_tg[flat].reshape(k, k)
    return 0.5 * (a + a.T), dt * (lr / 2.0) * 0.5 * (gram + gram.T)


def _pair_weights(x: Tensor) -> Tensor:
    """Σᵢⱼ Xᵢⱼ tᵢⱼ over all (i, j) as weights on the pairs i ≤ j: Xᵢᵢ on the diagonal, 2Xᵢⱼ off it."""
    return torch.stack([x[i, j] * (1.0 if i == j else 2.0) for i, j in pair_indices(x.shape[0])])


class CentralState:
    """One path's state of the central flow.

    The threshold tracker (warm-started from call to call), the last X (the SDCP's warm start) and the quantities
    measured at the last evaluation.

    Args:
        substeps: the stability condition is linearised over a relaxation time τ = h/substeps of flow time (one
            Euler substep of the paper's discretisation, GD steps n = t/h).
        critical: hλ above which an eigen-direction is critical (1.95).
        track: the tracker follows every eigenvalue above track·2/h (0.75).
        eig_tol: relative eigen-residual tolerance of the tracker.
        max_k: most eigenpairs tracked.
        eig_refresh: flow time between eigen solves (0, the default: every evaluation, a smooth field; h: once per
            GD step). In between, the tracked subspace U is kept and rotated by Rayleigh–Ritz: UᵀHU = QΛQᵀ from k
            HVPs (one block call), values Λ and vectors UQ; the field then jumps at each solve, so adaptive
            solvers should keep 0. Calls without a time ``t`` solve every time.
        verify_steps: GD steps between *certified* solves (1, the default: once per GD step; 0: every solve).
            A certified solve follows the warm Lanczos solve with verification rounds from a fresh random start
            (:func:`~flows.curvature.spectrum.symmetric_eigenpairs`), which find a missed or repeated eigenvalue
            above the tracked set; the solves in between are warm Lanczos solves to ``eig_tol`` without them.
            Eigenvalues move continuously along the flow, so a value the last certified solve placed below the
            sentinel can only be missed until the next one. On the digits benchmark a round cost about 22 HVPs,
            a warm solve about 6.
        subcritical: how the tracked pairs below the critical boundary ηλ = ``critical`` are solved, after the
            first (the sharpness, always to ``eig_tol``): ``"bounded"`` (default) stops refining one once its
            residual interval λ ± ‖Hu − λu‖ lies below the boundary (it is known to be non-critical and enters
            neither the field nor the record); ``"tight"`` solves every tracked pair to ``eig_tol`` (before #34).
    """

    def __init__(self, substeps: int = 4, critical: float = 1.95, track: float = 0.75, eig_tol: float = 1e-3,
                 max_k: int = 16, eig_refresh: float = 0.0, verify_steps: float = 1.0,
                 subcritical: Subcritical = "bounded") -> None:
        if isinstance(substeps, bool) or not isinstance(substeps, int) or substeps < 1:
            raise ValueError(f"substeps must be a positive int, got {substeps!r}")
        if not (isinstance(critical, (int, float)) and 0 < critical <= 2):
            raise ValueError(f"critical must be in (0, 2], got {critical!r}")
        if not (isinstance(track, (int, float)) and 0 < track < critical / 2):
            raise ValueError(f"track must be in (0, critical/2) = (0, {critical / 2:g}), got {track!r}")
        if not (isinstance(eig_tol, (int, float)) and eig_tol > 0):
            raise ValueError(f"eig_tol must be positive, got {eig_tol!r}")
        if isinstance(max_k, bool) or not isinstance(max_k, int) or max_k < 1:
            raise ValueError(f"max_k must be a positive int, got {max_k!r}")
        if isinstance(eig_refresh, bool) or not (isinstance(eig_refresh, (int, float)) and math.isfinite(eig_refresh)
                                                 and eig_refresh >= 0):
            raise ValueError(f"eig_refresh must be a finite number ≥ 0, got {eig_refresh!r}")
        check_verify_steps(verify_steps)
        if subcritical not in SUBCRITICAL:
            raise ValueError(f"subcritical must be one of {SUBCRITICAL}, got {subcritical!r}")
        self.subcritical = subcritical
        self.eig_refresh = eig_refresh
        self.verify_steps = verify_steps
        self._certified = -math.inf  # flow time of the last certified solve
        self.ritz_matvecs = 0  # HVPs of the Rayleigh–Ritz updates between solves
        self._basis: Tensor | None = None
        self._stamp = -math.inf
        self.substeps = substeps
        self.critical = critical
        self.track = track
        self.eig_tol = eig_tol
        self.max_k = max_k
        self.tracker: EigenTracker | None = None
        self.x: Tensor | None = None
        self.report: dict = {}
        self.evaluations = 0
        self.third_products = 0  # pair vectors ∇(uᵢᵀHuⱼ) formed
        self.seconds = {"gradient": 0.0, "eigen": 0.0, "third": 0.0, "sdcp": 0.0}  # wall-clock per part, summed
        self._lr: float | None = None

    def summary(self) -> dict:
        """What a run's config records: eigen work and the settings."""
        tracker = self.tracker
        return {"central_substeps": self.substeps, "central_critical": self.critical, "central_track": self.track,
                "eigen_matvecs": (0 if tracker is None else tracker.total_matvecs) + self.ritz_matvecs,
                "eigen_solves": 0 if tracker is None else tracker.updates, "third_products": self.third_products,
                "central_seconds": {key: round(value, 6) for key, value in self.seconds.items()}}

    def metrics(self) -> dict[str, float]:
        """The row of the last evaluation.

        Its loss, grad_norm, predicted_loss, predicted_grad_norm2, sharpness, critical, k, infeasibility,
        complementarity and sigma_i (X's eigenvalues, descending).
        """
        report = self.report
        row = {name: float(report[name]) for name in ("loss", "predicted_loss", "predicted_grad_norm2", "sharpness",
                                                       "critical", "k", "infeasibility", "complementarity")}
        row["grad_norm"] = math.sqrt(report["grad_norm2"])
        row.update({f"sigma_{i}": float(value) for i, value in enumerate(sorted(report["sigma"], reverse=True))})
        return row

    def drift(self, objective: Objective, theta: Tensor, lr: float, t: float | None = None) -> Tensor:
        """The drift g + ½ Σᵢⱼ Xᵢⱼ ∇(uᵢᵀHuⱼ) at θ (the central flow is θ' = −drift in flow time t = n·h).

        The quantities at θ are left in :attr:`report`.
        """
        if self.tracker is None or self._lr != lr:  # the threshold is tied to the rate
            self.tracker = EigenTracker(k=1, tol=self.eig_tol, threshold=self.track * 2.0 / lr,
                                        max_k=max(1, min(self.max_k, objective.dim - 1)),
                                        ceiling=self.critical / lr if self.subcritical == "bounded" else None)
            self._lr = lr
            self.x = None
            self._basis = None
            self._certified = -math.inf
        self.evaluations += 1
        clock = perf_counter()
        loss, g = objective.loss_and_grad(theta)
        self.seconds["gradient"] += perf_counter() - clock
        clock, before = perf_counter(), self.tracker.total_matvecs + self.ritz_matvecs
        values, vectors = self._eigenpairs(objective, theta, lr, t)
        self.seconds["eigen"] += perf_counter() - clock
        crit = (lr * values > self.critical).nonzero().flatten()
        report = {"loss": float(loss), "grad_norm2": float(g @ g), "sharpness": float(values[0]),
                  "critical": int(crit.numel()), "k": int(values.numel()), "sigma": [],
                  "eigen_matvecs": self.tracker.total_matvecs + self.ritz_matvecs - before,
                  "infeasibility": 0.0, "complementarity": 0.0,
                  "predicted_loss": float(loss), "predicted_grad_norm2": float(g @ g)}
        self.report = report
        if crit.numel() == 0:
            self.x = None
            return g
        u, values = vectors[:, crit], values[crit]
        clock = perf_counter()
        pairs_t = objective.third_derivatives(theta, u)
        self.seconds["third"] += perf_counter() - clock
        self.third_products += pairs_t.shape[0]
        clock = perf_counter()
        a, b = _sdcp_terms(pairs_t, g, values, lr, 1.0 / self.substeps)
        warm = self.x if self.x is not None and self.x.shape == a.shape else None
        try:
            sol = solve_sdcp(a, b, x0=warm, tol=1e-9)
        except ValueError as err:
            if "unbounded" not in str(err):
                raise
            raise ArithmeticError(f"the central flow does not exist here: ηλ = {lr * float(values.max()):.4g} > 2 "
                                  "along a direction in which the curvature has no gradient (no third derivative, as "
                                  "on a quadratic), so no oscillation can stabilise GD; GD diverges") from err
        self.seconds["sdcp"] += perf_counter() - clock
        if not sol.converged:  # recorded per step as well; a warning so that it is never missed
            warnings.warn(f"central flow: the SDCP did not converge in {sol.iterations} iterations (infeasibility "
                          f"{sol.infeasibility:.2g}, complementarity {sol.complementarity:.2g}); X is the last "
                          "iterate", RuntimeWarning, stacklevel=3)
        self.x = sol.x
        x = sol.x.to(theta)
        m = values.to(theta)
        report.update(sigma=torch.linalg.eigvalsh(sol.x).tolist(), infeasibility=sol.infeasibility,
                      complementarity=sol.complementarity,
                      predicted_loss=float(loss) + 0.5 * float((m * torch.diagonal(x)).sum()),
                      predicted_grad_norm2=float(g @ g) + float((m ** 2 * torch.diagonal(x)).sum()))
        return g + 0.5 * _pair_weights(x) @ pairs_t

    def _eigenpairs(self, objective: Objective, theta: Tensor, lr: float, t: float | None) -> tuple[Tensor, Tensor]:
        """(values descending, vectors): a tracker solve when due, else Rayleigh–Ritz on the kept subspace."""
        assert self.tracker is not None
        refresh = self.eig_refresh
        due = self._basis is None or t is None or refresh <= 0 or t - self._stamp >= refresh * (1 - 1e-9)
        if due:
            certify = certification_due(t, self._certified, self.verify_steps, lr)
            pairs = self.tracker.update(objective, theta, verify=certify)
            if certify:
                self._certified = -math.inf if t is None else t
            self._basis, self._stamp = pairs.vectors, -math.inf if t is None else t
            return pairs.values, pairs.vectors
        basis = self._basis
        assert basis is not None
        hu = objective.hvp(theta, basis.T.contiguous()).T  # (D, k), one block call
        self.ritz_matvecs += basis.shape[1]
        small = basis.T @ hu
        values, rotation = torch.linalg.eigh(0.5 * (small + small.T))
        order = torch.argsort(values, descending=True)
        return values[order], basis @ rotation[:, order]


def check_verify_steps(verify_steps: object) -> float:
    """``verify_steps`` (GD steps between certified eigen solves) as a number, or a ValueError naming it."""
    if isinstance(verify_steps, bool) or not (isinstance(verify_steps, (int, float))
                                              and math.isfinite(verify_steps) and verify_steps >= 0):
        raise ValueError(f"verify_steps must be a finite number ≥ 0 (GD steps), got {verify_steps!r}")
    return float(verify_steps)


def certification_due(t: float | None, certified: float, verify_steps: float, lr: float) -> bool:
    """Whether the eigen solve at flow time ``t`` must be certified (verification rounds for missed eigenvalues).

    Always without a clock or with ``verify_steps`` = 0, else once the flow time has moved by ``verify_steps``·h
    (either way: an adaptive solver may step back) since the last certified solve at ``certified``.
    """
    return t is None or verify_steps <= 0 or abs(t - certified) >= verify_steps * lr * (1 - 1e-9)


def central(objective: Objective, theta: Tensor, lr: float, *, state: CentralState | None = None,
            t: float | None = None) -> Tensor:
    """The central flow's field in flow time t = n·h: θ' = −[∇E + ½ Σᵢⱼ Xᵢⱼ ∇(uᵢᵀHuⱼ)] (module docstring).

    X solves the stability SDCP linearised over τ = h/``state.substeps``; ``state`` (a :class:`CentralState`,
    one per path) keeps the tracker and X warm between calls; without it each call starts cold. With
    ``state.eig_refresh`` > 0 and the flow time ``t`` the eigenpairs are re-solved once per that much time and
    rotated by Rayleigh–Ritz in between.
    """
    if theta.is_complex():
        raise TypeError("the central flow is real: θ must be real")
    return -(state if state is not None else CentralState()).drift(objective, theta, lr, t)


def sigma_matrix(trajectory: Trajectory) -> np.ndarray:
    """The oscillation variances of a central-flow trajectory, (rows, most critical directions), NaN-padded."""
    columns = sorted((name for name in trajectory.metrics if name.startswith("sigma_")), key=lambda n: int(n[6:]))
    if not columns:
        return np.zeros((len(trajectory), 0))
    return np.stack([trajectory.metric(name) for name in columns], axis=1)
