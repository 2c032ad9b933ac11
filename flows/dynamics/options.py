"""The settings of the integrator, as frozen records.

How to solve (:class:`Solver`), which eigenpairs the top-k flows use (:class:`Spectrum`), and what to keep
(:class:`Recording`). Their fields are exactly the keywords of ``integrate``, ``compare`` and ``local_error``
(``method=``, ``rtol=``, ``step_size=``, ``k=``, ``eig_tol=``, ``states=`` …): the runners build and check
these records from the keywords, so a record a user holds passes on as ``integrate(..., **vars(solver))``.
``gradient_descent`` and ``central_flow`` take the :class:`Recording` keywords too.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
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
        step_size: fixed-step size, a number or a function of the output interval n (e.g. ``lambda n: η(n)/4``);
            None: min(h, 1/stiffness) (λ_max taken ≥ 2/h for networks).
        max_num_steps: solver steps allowed per chunk before it gives up.
        chunk: output times advanced per torchdiffeq call (the unit of progress, checks and interrupts).
    """

    method: str = "auto"
    rtol: float | None = None
    atol: float | None = None
    step_size: float | Callable[[int], float] | None = None
    max_num_steps: int = 5_000
    chunk: int = 16

    def __post_init__(self) -> None:
        for name in ("rtol", "atol", "step_size"):
            if getattr(self, name) is not None and not (name == "step_size" and callable(self.step_size)):
                check_positive(name, getattr(self, name))
        check_count("max_num_steps", self.max_num_steps, minimum=1)
        check_count("chunk", self.chunk, minimum=1)


@dataclass(frozen=True)
class Spectrum:
    """Top-k eigenpairs for ``pf_topk`` and ``pf_topk_igr``.

    Attributes:
        k: how many pairs.
        tracker: a warm-started :class:`~flows.EigenTracker` to use (and keep warm across calls).
        eig_tol: residual tolerance of the tracker integrate makes (‖Hu − λu‖ ≤ eig_tol·|λ|).
        eig_refresh: re-solve only after this much flow time (0: every evaluation; None: 0 for D ≤ 300, h otherwise).
    """

    k: int = 10
    tracker: EigenTracker | None = None
    eig_tol: float = 1e-3
    eig_refresh: float | None = None

    def __post_init__(self) -> None:
        check_count("k", self.k, minimum=1)
        check_positive("eig_tol", self.eig_tol)
        if self.eig_refresh is not None:
            check_positive("eig_refresh", self.eig_refresh, allow_zero=True)
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


OPTION_RECORDS = (Solver, Spectrum, Recording)
SOLVER_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Solver))
SPECTRUM_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Spectrum))
OPTION_NAMES: tuple[str, ...] = tuple(f.name for record in OPTION_RECORDS for f in fields(record))
"""Every keyword the three records take (``method`` … ``chunk``, ``k`` … ``eig_refresh``, ``states``, …)."""


def check_option_names(caller: str, given: dict[str, Any]) -> None:
    """A TypeError naming the valid keywords when ``given`` holds one that no option record has."""
    unknown = sorted(set(given) - set(OPTION_NAMES))
    if unknown:
        raise TypeError(f"{caller}() got unknown keyword argument(s) {unknown}; valid: {', '.join(OPTION_NAMES)}")
