"""Rates read off the local geometry: the corridor rate (a Polyak step) and the drift-adjusted rate DAL-p."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from flows import StepContext, StepDecision
from flows.validate import check_choice, check_count, check_positive

from .base import StepController, companion

OUTSIDE = ("polyak", "fallback")
HVP = ("exact", "finite_difference")


def check_finite(name: str, value: float) -> float:
    """A finite real number, else a ValueError naming ``name``."""
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def polyak_rate(ctx: StepContext, e_star: float, scale: float, max_lr: float | None) -> tuple[float, dict[str, float]]:
    """The Polyak rate scale·(E(θ) − E*)/‖g‖², capped at ``max_lr``, and the info recorded with it.

    The rate is 0 when E ≤ E* or g = 0 (``clr_clipped``); ``clr`` is the uncapped rate.
    """
    gap = float(ctx.loss) - e_star
    g2 = float(torch.linalg.vector_norm(ctx.grad)) ** 2
    raw = scale * gap / g2 if g2 > 0 else 0.0
    lr, clipped = (raw, 0.0) if raw > 0 else (0.0, 1.0)
    if max_lr is not None and lr > max_lr:
        lr = max_lr
    return lr, {"clr": raw, "clr_clipped": clipped}


@dataclass(eq=False, repr=False)
class CorridorLR(StepController):
    """Corridor learning rate (CLR): h = scale · (E(θ) − E*) / ‖g‖², capped at ``max_lr``.

    Inside a corridor (Hg = 0) the loss falls linearly along the flow,
    E(θ − hg) = E(θ) − h‖g‖², so this h lands exactly on E = E* in one step:
    on a linear loss CLR reaches E* in a single step. E* = 0 by default
    (Polyak's step with the optimal value 0, right for non-negative losses).

    ``detector`` (a :class:`analysis.CorridorDetector`) is optional; with it
    each step records ``in_corridor`` and ``corridor_score`` (one HVP per
    step), and ``outside`` decides what happens off corridors: ``"polyak"``
    (default) keeps the Polyak step, ``"fallback"`` uses ``fallback_lr``.
    When E ≤ E* or g = 0 the rate is 0 (no step), reported as ``clr_clipped``.

    Records per step: ``clr`` (the uncapped rate), ``lr``, ``in_corridor``.
    """

    name: ClassVar[str] = "clr"
    e_star: float = 0.0
    scale: float = field(default=1.0, kw_only=True)
    max_lr: float | None = field(default=None, kw_only=True)
    outside: str = field(default="polyak", kw_only=True)
    fallback_lr: float | None = field(default=None, kw_only=True)
    detector: Any | None = companion()

    def __post_init__(self) -> None:
        self.e_star = check_finite("e_star", self.e_star)
        self.scale = check_positive("scale", self.scale)
        self.max_lr = None if self.max_lr is None else check_positive("max_lr", self.max_lr)
        check_choice("outside", self.outside, OUTSIDE)
        if self.outside == "fallback" and (self.detector is None or self.fallback_lr is None):
            raise ValueError("outside='fallback' needs a detector= (CorridorDetector) and a fallback_lr=")
        self.fallback_lr = None if self.fallback_lr is None else check_positive("fallback_lr", self.fallback_lr)

    def decide(self, ctx: StepContext) -> StepDecision:
        """The Polyak/corridor step at θₙ, with the corridor evidence and fallback when a detector is attached."""
        lr, info = polyak_rate(ctx, self.e_star, self.scale, self.max_lr)
        if self.detector is not None:
            self.detector.observe(ctx)
            info["in_corridor"] = float(self.detector.in_corridor)
            info["corridor_score"] = self.detector.score
            if self.outside == "fallback" and not self.detector.in_corridor and self.fallback_lr is not None:
                lr = self.fallback_lr
        return StepDecision(lr, None, info)


@dataclass(eq=False, repr=False)
class SPSMax(StepController):
    """SPS_max, the stochastic Polyak step of Loizou, Vaswani, Laradji & Lacoste-Julien (2021, eq. (5)).

    h = min((E(θ) − E*)/(c·‖g‖²), ``max_lr``) with E* the optimal value of the loss being stepped on (0 for
    non-negative losses that interpolate), c = 1/2 by default (their theory's choice), max_lr = γ_b.

    With c = 1 and no cap this is CLR, the corridor rate; c = 1/2 takes twice CLR's step. In a mini-batch loop
    E and g are the batch's, as in the paper. Records ``clr`` (the uncapped step) and ``lr``.
    """

    name: ClassVar[str] = "sps"
    c: float = 0.5
    max_lr: float = 1.0
    e_star: float = 0.0

    def __post_init__(self) -> None:
        self.c = check_positive("c", self.c)
        self.max_lr = check_positive("max_lr", self.max_lr)
        self.e_star = check_finite("e_star", self.e_star)

    def decide(self, ctx: StepContext) -> StepDecision:
        """SPS_max's step at θₙ: min((E − E*)/(c‖g‖²), max_lr)."""
        lr, info = polyak_rate(ctx, self.e_star, 1.0 / self.c, self.max_lr)
        return StepDecision(lr, None, info)


@dataclass(eq=False, repr=False)
class ALIG(StepController):
    """ALI-G (Berrada, Zisserman & Kumar 2020, eq. (5), without momentum).

    h = min((E(θ) − E*)/(‖g‖² + δ), ``max_lr``) with E* = 0 by default (ALI-G assumes interpolation), δ > 0 a
    small constant keeping the step finite where g → 0, and max_lr = η the maximal rate. In a mini-batch loop E
    and g are the batch's. When E ≤ E* the step is 0. Records ``lr``.
    """

    name: ClassVar[str] = "alig"
    max_lr: float = 1.0
    delta: float = 1e-5
    e_star: float = 0.0

    def __post_init__(self) -> None:
        self.max_lr = check_positive("max_lr", self.max_lr)
        self.delta = check_positive("delta", self.delta)
        self.e_star = check_finite("e_star", self.e_star)

    def decide(self, ctx: StepContext) -> StepDecision:
        """ALI-G's step at θₙ: min((E − E*)/(‖g‖² + δ), max_lr), 0 when E ≤ E*."""
        gap = float(ctx.loss) - self.e_star
        g2 = float(torch.linalg.vector_norm(ctx.grad)) ** 2
        return StepDecision(min(max(gap, 0.0) / (g2 + self.delta), self.max_lr))


@dataclass(eq=False, repr=False)
class DriftAdjustedLR(StepController):
    """DAL-p: h = min(2 / vᵖ, max_lr) with v = ‖Hg‖/‖g‖, the curvature along the gradient.

    v is the Rayleigh-like ratio that sets the drift between GD and the flow;
    for g along an eigenvector uᵢ, v = |λᵢ| and DAL-1 gives h = 2/|λᵢ| (the
    edge of stability of that direction). p sweeps the stability/performance
    trade-off: larger p means smaller steps where curvature is high; p = 0
    gives the constant rate min(2, max_lr).

    Hg is exact (one HVP, ``hvp="exact"``) or the finite difference
    (∇E(θ + εg) − g)/ε with ε = 0.01/‖g‖ (one extra gradient). Outside the
    window ``start ≤ n < stop`` the rate is ``base_lr`` (default: the runner's ``lr``).
    (The sharpness beside v is a monitor's to record: ``analysis.Sharpness`` or an ``EoSDetector`` callback.)

    Records per step: ``v``, ``dal`` (the rate before the window) and ``lr``.
    """

    name: ClassVar[str] = "dal"
    p: float = 1.0
    max_lr: float = field(default=5.0, kw_only=True)
    hvp: str = field(default="exact", kw_only=True)
    start: int = field(default=0, kw_only=True)
    stop: int | None = field(default=None, kw_only=True)
    base_lr: float | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        self.p = check_positive("p", self.p, allow_zero=True)
        self.max_lr = check_positive("max_lr", self.max_lr)
        check_choice("hvp", self.hvp, HVP)
        self.start = check_count("start", self.start)
        if self.stop is not None and (isinstance(self.stop, bool) or not isinstance(self.stop, int)
                                      or self.stop <= self.start):
            raise ValueError(f"stop must be None or an int > start={self.start}, got {self.stop!r}")
        self.base_lr = None if self.base_lr is None else check_positive("base_lr", self.base_lr)

    def check_standalone(self) -> None:
        """In the torch.optim form there is no runner rate: a window needs ``base_lr``."""
        if (self.start > 0 or self.stop is not None) and self.base_lr is None:
            raise ValueError("DriftAdjustedLR with a start/stop window needs base_lr= in the torch.optim form")

    @property
    def wants_hessian(self) -> bool:
        """The exact Hg is one backward pass through the graph of the runner's own gradient."""
        return self.hvp == "exact"

    def hessian_gradient(self, ctx: StepContext) -> torch.Tensor:
        """Hg at θₙ, exact or by the finite difference of the gradient.

        The exact product goes through ``ctx.hessian`` when the runner kept gₙ's graph, else a fresh graph.
        """
        g = ctx.grad
        if self.hvp == "exact":
            self.evaluations += 1
            if ctx.hessian is not None:
                return ctx.hessian @ g
            return ctx.objective.grad_and_hessian_grad(ctx.theta)[1]
        gnorm = torch.linalg.vector_norm(g)
        eps = 0.01 / gnorm
        self.evaluations += 1
        return (ctx.objective.grad(ctx.theta + eps * g) - g) / eps

    def decide(self, ctx: StepContext) -> StepDecision:
        """DAL-p's step at θₙ: 2/vᵖ capped at ``max_lr`` inside the window, ``base_lr`` (or the runner's) outside."""
        active = ctx.step >= self.start and (self.stop is None or ctx.step < self.stop)
        info: dict[str, float] = {}
        if not active:
            return StepDecision(self.base_lr if self.base_lr is not None else ctx.lr, None,
                                {**info, "v": math.nan, "dal": math.nan})
        gnorm = float(torch.linalg.vector_norm(ctx.grad))
        if gnorm == 0.0:
            return StepDecision(0.0, None, {**info, "v": math.nan, "dal": 0.0})
        v = float(torch.linalg.vector_norm(self.hessian_gradient(ctx))) / gnorm
        dal = 2.0 / v ** self.p if v > 0 else math.inf
        return StepDecision(min(dal, self.max_lr), None, {**info, "v": v, "dal": dal})
