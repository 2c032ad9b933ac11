"""Option objects of the integrator.

How to solve (:class:`Solver`), which eigenpairs the top-k flows use (:class:`Spectrum`), and what to keep
(:class:`Recording`).

``integrate``, ``compare`` and ``local_error`` take the same three objects::

    integrate(obj, θ0, "pf_topk", h, steps=n, solver=Solver("rk4", step_size=h / 4), spectrum=Spectrum(k=5))

Each field also has a keyword shorthand (``rtol=``, ``step_size=``, ``k=``, ``eig_tol=``, ``states=`` …, see
:data:`SHORTHANDS`); giving a setting both ways, or an unknown keyword, is a TypeError that names the valid ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..curvature.spectrum import EigenTracker
from ..records.trajectory import STATE_MODES
from ..validate import check_count, check_positive


@dataclass(frozen=True)
class Solver:
    """torchdiffeq settings.

    Attributes:
        method: ``"auto"`` (dopri5 for D ≤ 300, rk4 at the stiffness bound for networks) or a torchdiffeq method.
        rtol, atol: adaptive tolerances; None: by θ's precision (1e-7/1e-9 float64, 1e-4/1e-6 float32).
        step_size: fixed-step size; None: min(h, 1/stiffness) (λ_max taken ≥ 2/h for networks).
        max_num_steps: solver steps allowed per chunk before it gives up.
        chunk: output times advanced per torchdiffeq call (the unit of progress, checks and interrupts).
    """

    method: str = "auto"
    rtol: float | None = None
    atol: float | None = None
    step_size: float | None = None
    max_num_steps: int = 5_000
    chunk: int = 16

    def __post_init__(self) -> None:
        for name in ("rtol", "atol", "step_size"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name))
        check_count("max_num_steps", self.max_num_steps, minimum=1)
        check_count("chunk", self.chunk, minimum=1)


@dataclass(frozen=True)
class Spectrum:
    """Top-k eigenpairs for ``pf_topk`` and ``pf_topk_igr``.

    Attributes:
        k: how many pairs.
        tracker: a warm-started :class:`~flows.EigenTracker` to use (and keep warm across calls).
        tol: residual tolerance of the tracker integrate makes (‖Hu − λu‖ ≤ tol·|λ|).
        refresh: re-solve only after this much flow time (0: every evaluation; None: 0 for D ≤ 300, h otherwise).
    """

    k: int = 10
    tracker: EigenTracker | None = None
    tol: float = 1e-3
    refresh: float | None = None

    def __post_init__(self) -> None:
        check_count("k", self.k, minimum=1)
        check_positive("eig_tol", self.tol)
        if self.refresh is not None:
            check_positive("eig_refresh", self.refresh, allow_zero=True)
        if self.tracker is not None and not isinstance(self.tracker, EigenTracker):
            raise TypeError(f"tracker must be a flows.EigenTracker, got {type(self.tracker).__name__}")


@dataclass(frozen=True)
class Recording:
    """What a trajectory keeps of θ.

    ``states`` = ``full``, ``projection`` (onto ``projection_size`` random directions) or ``none`` (metrics only).
    """

    states: str = "full"
    projection_size: int = 64

    def __post_init__(self) -> None:
        if self.states not in STATE_MODES:
            raise ValueError(f"states must be one of {STATE_MODES}, got {self.states!r}")
        check_count("projection_size", self.projection_size, minimum=1)


# keyword shorthand → (option object, field)
SHORTHANDS: dict[str, tuple[str, str]] = {
    "method": ("solver", "method"), "rtol": ("solver", "rtol"), "atol": ("solver", "atol"),
    "step_size": ("solver", "step_size"), "max_num_steps": ("solver", "max_num_steps"), "chunk": ("solver", "chunk"),
    "k": ("spectrum", "k"), "tracker": ("spectrum", "tracker"), "eig_tol": ("spectrum", "tol"),
    "eig_refresh": ("spectrum", "refresh"),
    "states": ("recording", "states"), "projection_size": ("recording", "projection_size"),
}
_CLASSES = {"solver": Solver, "spectrum": Spectrum, "recording": Recording}


def resolve(caller: str, given: dict[str, Any], shorthands: dict[str, Any]) -> dict[str, Any]:
    """The three option objects from those ``given`` (None: defaults) and keyword shorthands.

    An unknown shorthand, or a setting given both in an object and as a keyword, raises a TypeError.
    """
    unknown = sorted(set(shorthands) - set(SHORTHANDS))
    if unknown:
        raise TypeError(f"{caller}() got unknown keyword argument(s) {unknown}; valid: solver=, spectrum=, "
                        f"recording=, {', '.join(SHORTHANDS)}")
    out = {}
    for name, cls in _CLASSES.items():
        obj = given.get(name)
        if obj is not None and not isinstance(obj, cls):
            raise TypeError(f"{name} must be a flows.{cls.__name__}, got {type(obj).__name__}")
        changes = {SHORTHANDS[key][1]: value for key, value in shorthands.items() if SHORTHANDS[key][0] == name}
        if obj is not None and changes:
            raise TypeError(f"{caller}(): give {', '.join(sorted(changes))} inside {name}= or as keywords, not both")
        out[name] = obj if obj is not None else cls(**changes)
    return out
