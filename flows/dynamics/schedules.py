"""Learning-rate schedules η(s): callables of the step s ≥ 0 (a float, so that flows can ask between steps).

A schedule is any callable ``float -> float`` returning a positive rate; :func:`as_schedule` turns a number into
:class:`Constant`. Provided: :class:`Constant`, :class:`WarmupCosine` (linear warm-up, then a half cosine down to a
floor) and :class:`StepDecay` (the rate times ``factor`` every ``every`` steps). Discrete runners evaluate η at the
integer step n; the flows of :mod:`flows.dynamics.adaptive` at their continuous time t (in steps).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ..validate import check_count, check_positive

Schedule = Callable[[float], float]


@dataclass(frozen=True)
class Constant:
    """η(s) = lr."""

    lr: float

    def __post_init__(self) -> None:
        check_positive("lr", self.lr)

    def __call__(self, step: float) -> float:
        """The rate at step ``step``."""
        return self.lr


@dataclass(frozen=True)
class WarmupCosine:
    """Linear warm-up to ``peak``, then a half cosine from ``peak`` down to ``final`` at step ``total``.

    η(s) = peak·(s + 1)/warmup for s < warmup − 1 (so η(0) = peak/warmup > 0, as torch's ``LinearLR`` starts above
    zero); η(s) = final + (peak − final)·½[1 + cos(π (s − warmup)/(total − warmup))] for warmup ≤ s ≤ total, with
    the two pieces joined at s ∈ [warmup − 1, warmup] at the peak; η(s) = final past ``total``.
    """

    peak: float
    warmup: int
    total: int
    final: float = 0.0

    def __post_init__(self) -> None:
        check_positive("peak", self.peak)
        check_count("warmup", self.warmup, minimum=1)
        check_count("total", self.total, minimum=self.warmup + 1)
        check_positive("final", self.final, allow_zero=True)
        if self.final > self.peak:
            raise ValueError(f"final must be at most peak = {self.peak}, got {self.final}")

    def __call__(self, step: float) -> float:
        """The rate at step ``step``."""
        if step < self.warmup:
            return self.peak * min(1.0, (step + 1.0) / self.warmup)
        if step >= self.total:
            return self.final
        phase = (step - self.warmup) / (self.total - self.warmup)
        return self.final + (self.peak - self.final) * 0.5 * (1.0 + math.cos(math.pi * phase))


@dataclass(frozen=True)
class StepDecay:
    """η(s) = lr · factor^⌊s / every⌋ (a piecewise-constant schedule: the flows see its jumps)."""

    lr: float
    every: int
    factor: float = 0.1

    def __post_init__(self) -> None:
        check_positive("lr", self.lr)
        check_count("every", self.every, minimum=1)
        if not (isinstance(self.factor, (int, float)) and 0 < self.factor <= 1):
            raise ValueError(f"factor must be in (0, 1], got {self.factor!r}")

    def __call__(self, step: float) -> float:
        """The rate at step ``step``."""
        return self.lr * self.factor ** math.floor(step / self.every)


def as_schedule(lr: float | Schedule) -> Schedule:
    """``lr`` as a schedule: a number becomes :class:`Constant`; a callable is kept (checked positive at step 0)."""
    if callable(lr):
        first = lr(0.0)
        if not (isinstance(first, (int, float)) and math.isfinite(first) and first > 0):
            raise ValueError(f"lr schedule must return a positive rate, got {first!r} at step 0")
        return lr
    return Constant(lr)
