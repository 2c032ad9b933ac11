"""Argument checks shared by every public entry point, and the ``Literal`` types of the choices.

Every check raises early, with a ``ValueError`` that names the argument and, for a choice, the valid values.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal, TypeVar

Which = Literal["LA", "SA", "LM"]
"""Which end of the spectrum: largest algebraic, smallest algebraic, largest magnitude."""
States = Literal["full", "projection", "none"]
"""How a trajectory keeps its states: all of θ, a fixed random projection, or not at all."""

_T = TypeVar("_T")


def check_choice(name: str, value: _T, choices: Iterable[_T]) -> _T:
    """``value`` when it is one of ``choices``, else a ValueError naming ``name`` and the valid choices."""
    options = tuple(choices)
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    """A finite real number > 0 (≥ 0 with ``allow_zero``), else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not allow_zero):
        bound = "≥ 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


def loss_bound(max_loss: float | None, initial_loss: float) -> float:
    """The divergence bound: ``max_loss``, or 1e12·max(1, |E(θ₀)|) when it is None."""
    if max_loss is not None:
        return float(max_loss)
    return 1e12 * max(1.0, abs(initial_loss)) if math.isfinite(initial_loss) else math.inf


def check_count(name: str, value: int, *, minimum: int = 0) -> int:
    """An int ≥ ``minimum`` (bools refused), else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int ≥ {minimum}, got {value!r}")
    return value
