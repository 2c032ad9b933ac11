"""Corridors: regions where H g = 0, so flow lines are straight, E falls linearly and GD = GF.

Inside a corridor the gradient flow moves at constant velocity −g₀, the loss
is E(t) = E₀ − t‖g₀‖², and one GD step of any size lands exactly on the flow
(Dherin & Rosca 2024). Three pieces of evidence are read off a path:

* the **corridor score** s = ‖Hg‖ / (|λ|_max ‖g‖) ∈ [0, 1], 0 inside a corridor;
* **straightness**: the cosine between successive steps θₙ₊₁ − θₙ and θₙ − θₙ₋₁ (1 on a straight line);
* **loss linearity** over a sliding window: the relative residual of a straight-line fit of E(t),
  and the fitted slope against −‖g‖².

A step is *in a corridor* when its score ≤ ``score_threshold`` (or, with no
score recorded, when straightness ≥ ``cos_threshold`` and the loss is linear);
maximal runs of such steps of length ≥ ``min_length`` become segments.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from flows import EigenTracker, Objective, Recorder, StepContext, StepDecision, Trajectory, top_eigenpairs
from flows.validate import check_count, check_positive

from ..events import Segment, segments_from_mask

SCORE_THRESHOLD = 1e-3  # ‖Hg‖ ≤ 0.1% of |λ|max‖g‖
COS_THRESHOLD = 1 - 1e-6  # successive steps aligned to ~0.08°
LINEARITY_THRESHOLD = 1e-3  # relative RMS residual of a linear fit of E(t)


def corridor_score(objective: Objective, theta: Tensor, lam_max: float | None = None) -> float:
    """s(θ) = ‖H g‖ / (|λ|_max ‖g‖): 0 inside a corridor, ≤ 1 always.

    ``lam_max`` (the largest |eigenvalue|) is computed when not given. H = 0
    (a linear loss) or g = 0 gives s = 0 when Hg = 0.
    """
    g, hg = objective.grad_and_hessian_grad(theta)
    g_norm, hg_norm = float(torch.linalg.vector_norm(g)), float(torch.linalg.vector_norm(hg))
    if hg_norm == 0.0:
        return 0.0
    if lam_max is None:
        lam_max = abs(float(top_eigenpairs(objective, theta.detach(), 1, "LM", tol=1e-4).values[0]))
    if g_norm == 0.0 or lam_max == 0.0:
        return math.inf
    return hg_norm / (abs(lam_max) * g_norm)


def straightness(states: np.ndarray) -> np.ndarray:
    """cos∠(θₙ₊₁ − θₙ, θₙ − θₙ₋₁) for n = 1..T−2, NaN at both ends (shape (T,))."""
    states = np.real(np.asarray(states, dtype=np.complex128 if np.iscomplexobj(states) else np.float64))
    out = np.full(len(states), np.nan)
    if len(states) < 3:
        return out
    steps = np.diff(states, axis=0)
    a, b = steps[:-1], steps[1:]
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[1:-1] = np.where((na > 0) & (nb > 0), (a * b).sum(1) / (na * nb), np.nan)
    return out


def loss_linearity(times: np.ndarray, losses: np.ndarray, window: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Sliding-window straight-line fits of E(t): (relative RMS residual, slope), each (T,), centred.

    The relative residual is RMS(E − fit) / (|slope|·span of t in the window + tiny):
    0 for an exactly linear loss.
    """
    times, losses = np.asarray(times, float), np.asarray(losses, float)
    n = len(times)
    resid, slope = np.full(n, np.nan), np.full(n, np.nan)
    if window < 3:
        raise ValueError(f"window must be ≥ 3, got {window}")
    half = window // 2
    for i in range(half, n - (window - half) + 1):
        t, e = times[i - half:i - half + window], losses[i - half:i - half + window]
        if not np.all(np.isfinite(e)):
            continue
        coef = np.polyfit(t - t[0], e, 1)
        fit = np.polyval(coef, t - t[0])
        scale = abs(coef[0]) * (t[-1] - t[0]) + 1e-300
        resid[i], slope[i] = math.sqrt(np.mean((e - fit) ** 2)) / scale, coef[0]
    return resid, slope


@dataclass
class CorridorDetector:
    """Finds corridor segments on a trajectory (offline) or step by step (online).

    Offline: :meth:`detect` on a :class:`~flows.Trajectory` uses the recorded
    ``corridor_score`` metric (recorded online by this detector), or computes it
    from ``objective`` at the saved states, or falls back to geometry
    (straightness + loss linearity from states and losses).

    Online: pass the detector in ``callbacks=`` of :func:`flows.gradient_descent`;
    each step it computes the score (one HVP; λ_max from a warm tracker every
    ``sharpness_every`` steps), records it, and exposes :attr:`in_corridor`
    and :attr:`score` (what ``CorridorLR`` reads).

    Attributes:
        score_threshold: a step is in a corridor when s ≤ this (default 1e-3).
        cos_threshold, linearity_threshold: geometric fallback thresholds.
        min_length: shortest segment, in steps (default 3).
        window: loss-linearity window, in steps (default 5).
    """

    score_threshold: float = SCORE_THRESHOLD
    cos_threshold: float = COS_THRESHOLD
    linearity_threshold: float = LINEARITY_THRESHOLD
    min_length: int = 3
    window: int = 5
    sharpness_every: int = 10

    def __post_init__(self) -> None:
        check_positive("score_threshold", self.score_threshold, allow_zero=True)
        check_positive("linearity_threshold", self.linearity_threshold, allow_zero=True)
        if isinstance(self.cos_threshold, bool) or not isinstance(self.cos_threshold, (int, float)) \
                or not -1 <= self.cos_threshold <= 1:
            raise ValueError(f"cos_threshold must be in [-1, 1], got {self.cos_threshold!r}")
        check_count("min_length", self.min_length, minimum=1)
        check_count("window", self.window, minimum=3)
        check_count("sharpness_every", self.sharpness_every, minimum=1)
        self.score = math.nan
        self.in_corridor = False
        self._tracker = EigenTracker(k=1, which="LM", tol=1e-3)
        self._lam: float | None = None
        self._seen: int | None = None

    # ------------------------------------------------------------------ online
    def observe(self, ctx: StepContext) -> float:
        """Score θₙ (once per step: a controller may call this before the runner's callback does)."""
        if self._seen != ctx.step:
            if self._lam is None or ctx.step % self.sharpness_every == 0:
                self._lam = abs(float(self._tracker.update(ctx.objective, ctx.theta).values[0]))
            self.score = corridor_score(ctx.objective, ctx.theta, self._lam)
            self.in_corridor = self.score <= self.score_threshold
            self._seen = ctx.step
        return self.score

    def __call__(self, ctx: StepContext, decision: StepDecision, recorder: Recorder) -> None:
        """Runner callback: record ``corridor_score`` at the current row."""
        recorder.log("corridor_score", self.observe(ctx))

    # ------------------------------------------------------------------ offline
    def detect(self, trajectory: Trajectory, objective: Objective | None = None) -> list[Segment]:
        """Corridor segments of ``trajectory`` (see the class docstring for the evidence used)."""
        times, losses = trajectory.times, trajectory.losses
        scores = trajectory.metrics.get("corridor_score")
        if (scores is None or np.all(np.isnan(scores))) and objective is not None:
            if trajectory.states is None or trajectory.state_mode != "full":
                raise ValueError("computing corridor scores needs full states; record them with "
                                 "states='full' or run CorridorDetector online as a callback")
            dtype = objective.theta0.dtype if objective.theta0 is not None else torch.float64
            scores = np.array([corridor_score(objective, torch.as_tensor(np.real(s), dtype=dtype))
                               for s in trajectory.states])
        cos = straightness(trajectory.states) if trajectory.states is not None else np.full(len(times), np.nan)
        lin, slope = loss_linearity(times, losses, self.window) if len(times) >= self.window else (
            np.full(len(times), np.nan), np.full(len(times), np.nan))
        if scores is not None and not np.all(np.isnan(scores)):
            mask = np.nan_to_num(scores, nan=np.inf) <= self.score_threshold
            basis = "score"
        elif trajectory.states is not None:
            mask = (np.nan_to_num(cos, nan=-1) >= self.cos_threshold) & \
                   (np.nan_to_num(lin, nan=np.inf) <= self.linearity_threshold)
            basis = "geometry"
        else:
            raise ValueError("corridor detection needs a recorded 'corridor_score' metric, an objective with "
                             "full states, or states for the geometric test; this trajectory has none")
        gn = trajectory.grad_norms
        out = []
        for a, b in segments_from_mask(mask, times, "corridor", self.min_length):
            sl = slice(a, b + 1)
            fit = np.polyfit(times[sl] - times[a], losses[sl], 1) if b > a else [math.nan, math.nan]
            evidence = {
                "basis": basis,
                "mean_score": float(np.nanmean(scores[sl])) if scores is not None else math.nan,
                "min_cos": float(np.nanmin(cos[sl])) if np.any(np.isfinite(cos[sl])) else math.nan,
                "loss_slope": float(fit[0]),
                "expected_slope": float(-gn[a] ** 2),  # E(t) = E₀ − t‖g₀‖² inside a corridor
                "max_linearity_residual": float(np.nanmax(lin[sl])) if np.any(np.isfinite(lin[sl])) else math.nan,
            }
            out.append(Segment("corridor", int(a), int(b), float(times[a]), float(times[b]), evidence))
        return out


def detect_corridors(trajectory: Trajectory, objective: Objective | None = None, **thresholds) -> list[Segment]:
    """Corridor segments of a trajectory: ``CorridorDetector(**thresholds).detect(trajectory, objective)``."""
    return CorridorDetector(**thresholds).detect(trajectory, objective)
