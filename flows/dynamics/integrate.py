"""Integrate a flow with torchdiffeq on an output grid, and run GD beside it.

``integrate(objective, θ0, lr, steps, flow="gf")`` solves θ' = F(θ) from
:data:`flows.dynamics.fields.FLOWS`; ``compare(objective, θ0, lr, steps, flows=...)``
runs GD and each flow on the grid t = n·h and measures their drift
‖θ_GD(n) − θ_flow(n·h)‖ and loss gaps per step.

The ODE state is always real: a complex PF state θ ∈ Cᴰ is integrated as
(Re θ, Im θ) ∈ R²ᴰ. The solver runs under ``torch.no_grad``; gradients are
switched on only inside the fields. It advances ``chunk`` output times per
torchdiffeq call, so a long run records, checks for divergence and can be
interrupted between chunks without losing what it computed.
"""
from __future__ import annotations

import bisect
import functools
import math
import warnings
from collections.abc import Callable, Sequence
from time import monotonic
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchdiffeq import odeint

from ..curvature.spectrum import DENSE_MAX_DIM, EigenTracker, NonFiniteSpectrumError, top_eigenpairs
from ..objective.objective import Objective
from ..progress import Progress, progress_bar
from ..records.comparison import Comparison
from ..records.events import Event
from ..records.trajectory import Recorder, Trajectory, reserve_rows
from ..validate import States, check_count, check_positive, loss_bound
from .fields import FLOWS, Flow, LogBranch, get_flow
from .gd import Budget, _initial, gradient_descent, keep_failure
from .options import SOLVER_NAMES, SPECTRUM_NAMES, Recording, Solver, Spectrum, check_option_names
from .schedules import Schedule, as_schedule

ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "adaptive_heun", "fehlberg2")
FIXED_METHODS = ("rk4", "euler", "midpoint", "explicit_adams", "implicit_adams")
METHODS = ADAPTIVE_METHODS + FIXED_METHODS


class _DivergedError(Exception):
    pass


class StepRates:
    """GD's rate per step, a number or a schedule η(n), and the time grid t_n = Σ_{m<n} η(m) it makes.

    On [t_n, t_{n+1}) a flow is built for h = η(n): the modified flow of the step GD takes there. With a
    number the grid is t = n·h and ``times`` may replace ``steps``; a schedule needs ``steps``.
    """

    def __init__(self, lr: float | Schedule, steps: int | None, times: Sequence[float] | Tensor | None) -> None:
        self.schedule = callable(lr)
        self._steps, self._times = steps, times
        if self.schedule:
            if times is not None:
                raise ValueError("a schedule lr sets the output grid t_n = Σ_{m<n} η(m): give steps, not times")
            if steps is None:
                raise ValueError("a schedule lr needs steps (the grid is t_n = Σ_{m<n} η(m))")
            check_count("steps", steps, minimum=1)
            self._rate = as_schedule(lr)
            self.setting: float | str = repr(lr)
        else:
            self.setting = check_positive("lr", lr)  # type: ignore[arg-type]

    @functools.cached_property
    def values(self) -> list[float]:
        """η(n) per step (one value for a number); made on first use, after the caller's memory check."""
        if not self.schedule:
            return [float(self.setting)]
        assert self._steps is not None
        return [check_positive(f"lr schedule at step {n}", float(self._rate(float(n)))) for n in range(self._steps)]

    @functools.cached_property
    def grid(self) -> Tensor:
        """The output times; made on first use, after the caller's memory check."""
        return self._grid(self._steps, self._times)

    @functools.cached_property
    def _starts(self) -> list[float]:
        return self.grid[:-1].tolist()

    def _grid(self, steps: int | None, times: Sequence[float] | Tensor | None) -> Tensor:
        if self.schedule:
            return torch.cat([torch.zeros(1, dtype=torch.float64),
                              torch.cumsum(torch.tensor(self.values, dtype=torch.float64), 0)])
        if times is None:
            if steps is None:
                raise ValueError("give either times (increasing output times) or steps (grid t = n·lr)")
            steps = check_count("steps", steps, minimum=1)
            return torch.arange(steps + 1, dtype=torch.float64) * self.values[0]
        t = torch.as_tensor(times, dtype=torch.float64).reshape(-1)
        if t.numel() < 2:
            raise ValueError(f"times must hold at least two output times, got {t.numel()}")
        if not bool(torch.isfinite(t).all()) or not bool((t[1:] > t[:-1]).all()):
            raise ValueError("times must be finite and strictly increasing")
        return t

    @property
    def peak(self) -> float:
        """The largest rate."""
        return max(self.values)

    @property
    def smallest(self) -> float:
        """The smallest rate."""
        return min(self.values)

    def at(self, t: float) -> float:
        """The rate at flow time t: η(n) for t ∈ [t_n, t_{n+1}) (the last step's rate past the grid)."""
        if not self.schedule:
            return self.values[0]
        n = min(max(bisect.bisect_right(self._starts, t) - 1, 0), len(self.values) - 1)
        return self.values[n]

    def step(self, n: int) -> float:
        """η(n) of output interval n."""
        return self.values[min(n, len(self.values) - 1)] if self.schedule else self.values[0]


def stiffness(objective: Objective, theta: Tensor, flow: str | Flow, lr: float, *, floor: float = 0.0) -> float:
    """An estimate of the largest rate |∂F/∂θ| of the flow at θ (for explicit step-size bounds).

    :meth:`Flow.rate` of |λ|max (GF: |λ|max; IGR: |λ|max(1 + h|λ|max/2 + (h|λ|max)²/3); PF: max |c(hλ)λ|
    over the extreme pair); |λ|max is taken as at least ``floor`` (e.g. 2/h, which the sharpness reaches
    at the edge of stability).
    """
    record = flow if isinstance(flow, Flow) else get_flow(flow)
    theta_r = theta.real if theta.is_complex() else theta
    lam = float(top_eigenpairs(objective, theta_r.detach(), 1, "LM", tol=1e-2).values[0])
    if abs(lam) < floor:
        lam = math.copysign(floor, lam) if lam else floor
    return record.rate(lam, lr)


def default_tolerances(dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol) for adaptive methods by precision: 1e-7/1e-9 in float64, 1e-4/1e-6 in float32.

    Tighter than ~100·eps cannot be met and makes adaptive solvers crawl.
    """
    real = torch.empty(0, dtype=dtype).real.dtype
    return (1e-7, 1e-9) if real == torch.float64 else (1e-4, 1e-6)


def default_method(objective: Objective) -> str:
    """``"dopri5"`` for small objectives (D ≤ 300: toys, dense spectra), ``"rk4"`` for networks.

    On a network an adaptive solver at tight tolerances spends hundreds of field
    evaluations per GD step; fixed-step RK4 at the stiffness bound needs 4 per
    substep and its cost is known before the run.
    """
    return "dopri5" if objective.dim <= DENSE_MAX_DIM else "rk4"


def _flow_options(record: Flow, flow_options: dict | None) -> dict:
    """The caller's ``flow_options``, checked against the flow's record and prepared for its field."""
    options = dict(flow_options or {})
    unknown = sorted(set(options) - set(record.options))
    if unknown:
        raise ValueError(f"unknown flow_options {unknown} for flow {record.name!r}; valid choices: "
                         f"{', '.join(record.options) if record.options else 'none'}")
    return record.prepare(options)


def _start(objective: Objective, theta0: Tensor | None, record: Flow, rates: StepRates, times, steps: int | None,
           recording: Recording) -> tuple[Tensor, Tensor]:
    """θ0 in the flow's state space (complex for a complex flow) and the output grid, memory checked first."""
    theta = _initial(objective, theta0)
    if theta.is_complex() and not record.complex_state:
        complex_flows = sorted(name for name, f in FLOWS.items() if f.complex_state)
        raise TypeError(f"flow {record.name!r} needs a real θ0 (only {complex_flows} run in Cᴰ)")
    itemsize = theta.element_size() * (2 if record.complex_state and not theta.is_complex() else 1)
    rows = len(times) if times is not None else steps + 1 if isinstance(steps, int) and steps > 0 else 0
    # before the grid is allocated
    reserve_rows(rows, objective.dim, recording.states, recording.projection_size, itemsize)
    grid = rates.grid
    if record.complex_state and not theta.is_complex():
        theta = theta.to(torch.complex128 if theta.dtype == torch.float64 else torch.complex64)
    return theta, grid


def _eigen_options(objective: Objective, rates: StepRates, spectrum: Spectrum) -> dict:
    """The eigenpair keywords of a top-k flow: k, a (warm-started) tracker and its refresh interval."""
    refresh = spectrum.eig_refresh
    if refresh is None:
        refresh = 0.0 if objective.dim <= DENSE_MAX_DIM else rates.smallest
    tracker = spectrum.tracker or EigenTracker(k=min(spectrum.k, objective.dim), tol=spectrum.eig_tol,
                                               method="dense" if objective.dim <= DENSE_MAX_DIM else "auto")
    return {"k": spectrum.k, "tracker": tracker, "refresh": refresh}


def _solver_options(objective: Objective, theta: Tensor, record: Flow, rates: StepRates, method: str,
                    solver: Solver) -> tuple[dict, Any]:
    """The torchdiffeq options: a fixed-step grid (default step: the stiffness bound) or the adaptive step limit."""
    if method not in FIXED_METHODS:  # a schedule's step boundaries are jumps of the field: the solver steps to them
        jumps = {"jump_t": rates.grid[1:-1]} if rates.schedule else {}
        return {"max_num_steps": solver.max_num_steps, **jumps}, solver.step_size
    step_size: Any = solver.step_size
    if step_size is None:
        lr = rates.peak
        floor = 2.0 / lr if objective.dim > DENSE_MAX_DIM else 0.0
        stiff = stiffness(objective, theta, record, lr, floor=floor)
        bound = 1.0 / max(stiff, 1e-12)
        if lr / bound > solver.max_num_steps:
            raise ValueError(
                f"lr={lr:.6g} is {lr * stiff:.3g}× the stable step 1/stiffness={bound:.3g} of the {record.name} flow "
                f"here: a fixed-step {method} grid would need that many solver steps per GD step, more than "
                f"max_num_steps={solver.max_num_steps}; lower lr, pass step_size (the most one solver step may "
                f"span), raise max_num_steps, or use an adaptive method (e.g. method='dopri5')")
        step_size = min(lr, bound) if not rates.schedule else (lambda n: min(rates.step(n), bound))
    # perturb: a stage at a step boundary is evaluated just inside its own step (h of that step, not the next)
    return {"grid_constructor": _SubdividedGrid(step_size, solver.max_num_steps), "perturb": rates.schedule}, step_size


class _SubdividedGrid:
    """A torchdiffeq grid constructor: each output interval cut into the fewest equal steps ≤ ``step_size``.

    So every output time is a solver time (no interpolation: torchdiffeq's own step grid steps past output times
    that are not multiples of the step and interpolates linearly). ``step_size`` may be a function of the output
    interval n; a chunk's intervals are numbered from :attr:`offset`, which the caller sets before each chunk.
    An interval that would need more than ``limit`` steps is refused (ValueError) before its grid is allocated.
    """

    def __init__(self, step_size: float | Callable[[int], float], limit: int = 5_000) -> None:
        self.step_size = step_size
        self.limit = limit
        self.offset = 0

    def __call__(self, func: Any, y0: Tensor, t: Tensor) -> Tensor:
        widths = t[1:] - t[:-1]
        slack = 1 - 64 * torch.finfo(t.dtype).eps  # a width that is a multiple of the step up to round-off
        step_size = self.step_size
        if callable(step_size):
            steps = torch.tensor([float(step_size(self.offset + i)) for i in range(len(widths))], dtype=t.dtype,
                                 device=t.device)
        else:
            steps = torch.full_like(widths, float(step_size))
        ratio = torch.ceil(widths / steps * slack).clamp(min=1)
        worst = int(torch.argmax(ratio))
        if not float(ratio[worst]) <= self.limit:  # also refuses NaN
            raise ValueError(
                f"the fixed-step grid needs {float(ratio[worst]):.3g} solver steps of step_size="
                f"{float(steps[worst]):.3g} in output interval {self.offset + worst} (width "
                f"{float(widths[worst]):.3g}), more than max_num_steps={self.limit}; pass a larger step_size, "
                f"raise max_num_steps, use an adaptive method (e.g. method='dopri5'), or lower lr")
        pieces = ratio.to(torch.long)
        points = [t[:1]] + [t[i] + widths[i] * torch.arange(1, int(n) + 1, dtype=t.dtype, device=t.device) / n
                            for i, n in enumerate(pieces.tolist())]
        out = torch.cat(points)
        ends = torch.cumsum(pieces, 0)
        out[ends] = t[1:]  # the output times exactly, not t_i + w_i·n/n
        return out


def integrate(
    objective: Objective,
    theta0: Tensor | None = None,
    lr: float | Schedule = 0.1,
    steps: int | None = None,
    *,
    flow: str = "gf",
    times: Sequence[float] | Tensor | None = None,
    method: str = "auto",
    rtol: float | None = None,
    atol: float | None = None,
    step_size: float | Callable[[int], float] | None = None,
    max_num_steps: int = 5_000,
    chunk: int = 16,
    k: int = 10,
    tracker: EigenTracker | None = None,
    eig_tol: float = 1e-3,
    eig_refresh: float | None = None,
    states: States = "full",
    projection_size: int = 64,
    flow_options: dict | None = None,
    max_loss: float | None = None,
    time_budget: float | None = None,
    progress: Progress = None,
) -> Trajectory:
    """Solve θ' = F_flow(θ; h=lr) from θ0 and record θ at t = n·lr, n ≤ ``steps`` (or at ``times``).

    Args:
        objective: E.
        theta0: θ(0), shape (D,) (default ``objective.theta0``).
        lr: the learning rate h the field is built for (t = n·h is GD's time); or a schedule η(n) of the step
            (:mod:`flows.dynamics.schedules`): then the grid is GD's, t_n = Σ_{m<n} η(m), and on [t_n, t_{n+1})
            the field is built for h = η(n) (the central flow's threshold 2/η follows it). Needs ``steps``.
        steps: output at t = n·h for n = 0 … steps (or give ``times``).
        flow: a name in :data:`~flows.dynamics.fields.FLOWS`: ``gf``, ``igr``, ``third_order``, ``pf``, ``pf_topk``,
            ``pf_topk_igr``, ``central``, ….
        times: output times (a sequence or a 1-D tensor, increasing, from 0) instead of ``steps``.
        method: ``"auto"`` (dopri5 for D ≤ 300, rk4 at the stiffness bound for networks, :func:`default_method`) or a
            torchdiffeq method.
        rtol: adaptive relative tolerance; None: by θ's precision (:func:`default_tolerances`).
        atol: adaptive absolute tolerance; None: by θ's precision.
        step_size: the most a fixed-step method steps, a number or a function of the output interval n; None:
            min(lr, 1/:func:`stiffness`) (with a schedule: min(η(n), 1/stiffness at the peak rate)), with λ_max
            taken ≥ 2/lr for networks (D > 300). Each interval between output times is cut into equal steps no
            longer than this, so the solver steps onto every output time.
        max_num_steps: adaptive solver steps allowed per chunk before it gives up; for a fixed-step method, the
            most solver steps one output interval may be cut into (more is refused before anything is allocated).
        chunk: output times advanced per torchdiffeq call (the unit of progress, checks and interrupts).
        k: eigenpairs of the top-k flows (``pf_topk``, ``pf_topk_igr``).
        tracker: a warm-started :class:`~flows.EigenTracker` for them (kept warm across calls).
        eig_tol: residual tolerance of the tracker integrate makes (‖Hu − λu‖ ≤ eig_tol·|λ|).
        eig_refresh: flow time between eigen solves (0: every evaluation; None: 0 for D ≤ 300, h otherwise).
        states: what the trajectory keeps of θ: ``"full"``, ``"projection"`` or ``"none"`` (:class:`Recording`).
        projection_size: directions of the random projection (``states="projection"``).
        flow_options: options of the field, checked against its record: for ``pf``, ``branch`` =
            ``"principal"`` (default) or ``"continued"`` (:class:`~flows.dynamics.fields.LogBranch`); for
            ``pf_topk``, ``rest`` and ``verify_steps`` (GD steps of flow time between certified eigen solves, 1 by
            default; 0: every solve), for ``pf_topk_igr`` ``verify_steps``; for ``central``, ``substeps`` (the
            SDCP's relaxation time h/substeps), ``critical``, ``track``, ``eig_tol``, ``max_k``, ``eig_refresh``,
            ``verify_steps``, ``subcritical`` (:class:`~flows.dynamics.central.CentralState`).
        max_loss: stop (status ``diverged``) past this loss; None: 1e12·max(1, |E(θ₀)|).
        time_budget: wall-clock seconds; then status ``"stopped"``, a ``time_budget`` event, work kept.
        progress: a bar over flow time (None: shown once the call has run for 2 s).

    Returns:
        a :class:`Trajectory` (``pf`` states complex; metrics: loss of the real part, ``imag_norm`` = ‖Im θ‖; a
        flow with its own measurements, as ``central``, records its row instead). A solver failure returns the work
        done, status ``"failed"`` and a ``solver_failure`` event saying what to try; ``pf`` branch-cut crossings are
        counted in ``config["pf_branch_crossings"]`` and the first is a ``pf_branch_cut`` event.
    """
    if not isinstance(objective, Objective):
        raise TypeError(f"objective must be a flows.Objective, got {type(objective).__name__}")
    if isinstance(lr, str):
        raise TypeError(f"lr must be a number or a schedule, got {lr!r}: the flow is a keyword since driftlab "
                        f"0.3.0, integrate(objective, theta0, lr, steps, flow={lr!r})")
    solver = Solver(method, rtol, atol, step_size, max_num_steps, chunk)
    spectrum = Spectrum(k, tracker, eig_tol, eig_refresh)
    recording = Recording(states, projection_size)
    return _integrate(objective, theta0, lr, steps, times, get_flow(flow), solver, spectrum, recording, flow_options,
                      max_loss, time_budget, progress)


def _integrate(objective: Objective, theta0: Tensor | None, lr: float | Schedule, steps: int | None,
               times: Sequence[float] | Tensor | None, record: Flow, solver: Solver, spectrum: Spectrum,
               recording: Recording, flow_options: dict | None, max_loss: float | None, time_budget: float | None,
               progress: Progress) -> Trajectory:
    """:func:`integrate` with its settings checked into records."""
    flow = record.name
    method = _method(objective, solver)
    rates = StepRates(lr, steps, times)
    budget = Budget(time_budget)
    flow_settings = _flow_options(record, flow_options)
    theta, grid = _start(objective, theta0, record, rates, times, steps, recording)
    options = {**flow_settings, **(_eigen_options(objective, rates, spectrum) if record.eigenpairs else {})}
    rtol, atol = _tolerances(solver, theta.dtype)
    solver_options, step_size = _solver_options(objective, theta, record, rates, method, solver)
    config = {"kind": "flow", "flow": flow, "lr": rates.setting, "method": method, "rtol": rtol, "atol": atol,
              "step_size": step_size if not callable(step_size) else "per step",
              "k": options.get("k"), "eig_refresh": options.get("refresh"),
              "objective": objective.name, "dtype": str(theta.dtype), "device": str(theta.device),
              "time_budget": time_budget}
    branch = options.get("branch")
    run = _FlowRun(objective, record, rates, options, budget,
                   Recorder(objective.dim, recording.states, recording.projection_size))
    status = run.solve(theta, grid, method, rtol, atol, solver_options, solver.chunk, max_loss, progress, flow)
    config.update(_work(record, options, run.evals))
    if isinstance(branch, LogBranch):
        config["pf_branch"] = branch.mode
        _report_branch(branch, config, run.rec)
    return run.result(config, status)


def _tolerances(solver: Solver, dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol): the solver's, or by precision (:func:`default_tolerances`)."""
    default_rtol, default_atol = default_tolerances(dtype)
    return (default_rtol if solver.rtol is None else solver.rtol,
            default_atol if solver.atol is None else solver.atol)


def _method(objective: Objective, solver: Solver) -> str:
    """The solver's method, "auto" resolved (:func:`default_method`); a ValueError naming the valid choices."""
    method = default_method(objective) if solver.method == "auto" else solver.method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid choices: auto, {', '.join(METHODS)}")
    return method


def _work(record: Flow, options: dict, evaluations: int) -> dict:
    """What a path cost: field evaluations and, for eigenpair flows, the tracker's HVPs and solves."""
    work = {"field_evaluations": evaluations}
    if record.eigenpairs:
        work.update(eigen_matvecs=options["tracker"].total_matvecs, eigen_solves=options["tracker"].updates)
    return {**work, **record.summary(options)}


def _report_branch(branch: LogBranch, config: dict, rec: Recorder) -> None:
    """Record the PF's crossings of the logarithm's cut: a config count, a ``pf_branch_cut`` event, a warning."""
    config["pf_branch_crossings"] = branch.crossings
    if branch.first_crossing is None:
        return
    t_first, x_cross = branch.first_crossing
    t_cross = rec.times[-1] if t_first is None else t_first  # None only for a call without t
    step = int(np.searchsorted(np.asarray(rec.times), t_cross))  # the first output row at or after the crossing
    rec.events.append(Event("pf_branch_cut", step, t_cross, {
        "x": [x_cross.real, x_cross.imag], "crossings": branch.crossings, "branch": branch.mode,
        "reason": "a complex eigenvalue hλ crossed Re hλ = 1 with Im hλ > 0, where log(1 − hλ) has its cut: past "
                  "this time the exact PF depends on the branch (flow_options={'branch': ...}); many crossings "
                  "mean the state chatters across the cut, where an adaptive solver stalls: try the other branch"}
    ).to_dict())
    warnings.warn(f"pf: hλ = {x_cross:.4g} crossed the logarithm's branch cut at t ≈ {t_cross:.4g} "
                  f"({branch.crossings} crossing(s), branch {branch.mode!r}); the complex PF is branch-dependent "
                  "from there (see the pf_branch_cut event)", RuntimeWarning, stacklevel=4)


class _OutOfTimeError(Exception):
    pass


class _FlowRun:
    """One integration: the right-hand side, recording, and the chunked solve with its stop conditions."""

    def __init__(self, objective: Objective, record: Flow, rates: StepRates, options: dict, budget: Budget,
                 rec: Recorder) -> None:
        self.objective = objective
        self.flow = record
        self.rates = rates
        self.options = options
        self.is_complex = record.complex_state
        self.budget = budget
        self.rec = rec
        self.evals, self.t = 0, 0.0
        self.error: BaseException | None = None
        self.bar: Any = None
        self._shown = 0.0
        self.output_index: dict[float, int] = {}  # output time → row, for flows that measure their own rows
        self.output_times: list[float] = []
        self.measured: dict[int, tuple[Tensor, dict[str, float]]] = {}  # row → (state, row) of an evaluation there
        self.worst: dict[int, dict[str, float]] = {}  # row → worst values of the evaluations since the last row

    def result(self, config: dict, status: str) -> Trajectory:
        """The trajectory recorded, with the exception that stopped the run (if any) as ``.error``."""
        traj = self.rec.build(config, status)
        traj.error = self.error
        return traj

    def pack(self, z: Tensor) -> Tensor:
        return torch.view_as_real(z).reshape(-1) if self.is_complex else z

    def unpack(self, y: Tensor) -> Tensor:
        return torch.view_as_complex(y.reshape(self.objective.dim, 2)) if self.is_complex else y

    def rhs(self, t: Tensor, y: Tensor) -> Tensor:
        if self.budget.exceeded():
            raise _OutOfTimeError()
        self.evals += 1
        self.t = float(t)
        now = monotonic()
        if self.bar is not None and now - self._shown > 1.0:  # visible progress inside a long chunk too
            self._shown = now
            self.bar.set_postfix(t=f"{self.t:.4g}", evals=self.evals, refresh=now - self.budget.start > 2.0)
        return self.pack(self.field(self.t, self.unpack(y)))

    def field(self, t: float, z: Tensor) -> Tensor:
        """F(z) at flow time t; a flow that measures its rows keeps the evaluation's row (:meth:`_observe`)."""
        try:
            timed = {"t": t} if self.flow.timed else {}
            out = self.flow(self.objective, z, self.rates.at(t), **timed, **self.options)
        except (NonFiniteSpectrumError, torch.linalg.LinAlgError) as err:  # the state has blown up
            raise _DivergedError(f"eigendecomposition failed at t={t:.6g}: {err}") from err
        except ArithmeticError as err:  # the field stopped existing (the central flow over a quadratic direction)
            raise _DivergedError(f"{err} (t={t:.6g})") from err
        if self.flow.metrics is not None:
            self._observe(t, z)
        if not bool(torch.isfinite(out).all()):
            raise _DivergedError(f"non-finite vector field at t={t:.6g}")
        return out

    def _observe(self, t: float, z: Tensor) -> None:
        """Keep an evaluation's row if it is at an output time; fold its ``worst`` values into the next row's."""
        assert self.flow.metrics is not None
        row = self.flow.metrics(self.options)
        at = self.output_index.get(self._snapped(t))
        if at is not None:
            self.measured[at] = (z.detach().clone(), row)
        following = bisect.bisect_right(self.output_times, t)  # t in [t_{j-1}, t_j) counts towards row j
        worst = self.worst.setdefault(following, {})
        for name in self.flow.worst:
            worst[name] = max(worst.get(name, -math.inf), row[name])

    def _snapped(self, t: float) -> float:
        """The output time t is, up to the ulps by which a scheduled run's solver nudges its times (perturb)."""
        if not self.rates.schedule:
            return t
        j = bisect.bisect_left(self.output_times, t)
        for near in self.output_times[max(j - 1, 0):j + 1]:
            if abs(near - t) <= 8 * math.ulp(max(abs(near), 1.0)):
                return near
        return t

    def _measured_row(self, index: int, t: float, z: Tensor) -> dict[str, float]:
        """The row of the evaluation made at this very state during the solve, or of a fresh one."""
        assert self.flow.metrics is not None
        hit = self.measured.pop(index, None)
        if hit is not None and torch.equal(hit[0], z):
            row = dict(hit[1])
        else:  # the last point of a chunk, or an output time the solver did not step onto
            self.evals += 1
            self.field(t, z)
            row = dict(self.flow.metrics(self.options))
        for name, value in self.worst.pop(index, {}).items():
            row[name] = max(row[name], value)
        for stale in [key for key in self.measured if key <= index]:
            del self.measured[stale]
        return row

    def record(self, index: int, t: float, z: Tensor) -> float:
        """Add output row ``index`` at time t; its loss."""
        if self.flow.metrics is not None:
            row = self._measured_row(index, t, z)
        else:
            real = z.real.contiguous() if z.is_complex() else z
            loss, grad = self.objective.loss_and_grad(real)
            row = {"loss": float(loss), "grad_norm": float(torch.linalg.vector_norm(grad))}
            if self.is_complex:
                row["imag_norm"] = float(torch.linalg.vector_norm(z.imag))
        self.rec.add(t, z, **row, evals=self.evals)
        return row["loss"]

    def solve(self, theta: Tensor, grid: Tensor, method: str, rtol: float, atol: float, solver_options: dict,
              chunk: int, max_loss: float | None, progress: Progress, flow: str) -> str:
        """Advance ``chunk`` grid intervals per torchdiffeq call; the final status."""
        rec, status = self.rec, "complete"
        y = self.pack(theta)
        tgrid = grid.to(dtype=theta.real.dtype, device=y.device)
        self.output_times = tgrid.tolist()
        self.output_index = {t: i for i, t in enumerate(self.output_times)}
        try:
            first = self.record(0, self.output_times[0], theta)
        except _DivergedError as err:  # nothing computed yet: the field's own error
            raise (err.__cause__ or err) from None
        max_loss = loss_bound(max_loss, first)
        self.bar = progress_bar(float(grid[-1] - grid[0]), progress, flow)
        i, step_chunk = 0, chunk
        try:
            with torch.no_grad():
                while i < len(grid) - 1:
                    seg = tgrid[i:i + step_chunk + 1]
                    constructor = solver_options.get("grid_constructor")
                    if constructor is not None:
                        constructor.offset = i  # the chunk's first interval on the run's grid
                    try:
                        sol = odeint(self.rhs, y, seg, method=method, rtol=rtol, atol=atol, options=solver_options)
                    except _OutOfTimeError:
                        rec.events.append(Event("time_budget", i, rec.times[-1], {
                                           "reached_time": self.t,
                                           "reason": f"wall-clock budget of {self.budget.seconds} s used up at flow "
                                                     f"time {self.t:.6g}, inside a chunk of output times: states "
                                                     "are kept up to the last output time"}).to_dict())
                        status = "stopped"
                        break
                    except (_DivergedError, AssertionError) as err:
                        if len(seg) > 2:  # redo this chunk one grid interval at a time, keeping what can be reached
                            step_chunk = 1
                            self.measured.clear()
                            self.worst.clear()
                            continue
                        status = self._failure(err, i, flow)
                        break
                    except Exception:  # noqa: BLE001 - the model failed: redo the chunk point by point, then fail
                        if len(seg) > 2:
                            step_chunk = 1
                            self.measured.clear()
                            self.worst.clear()
                            continue
                        raise
                    n_ok = self._record_chunk(i, seg, sol, max_loss)
                    if n_ok < len(seg) - 1:
                        status = "diverged"
                        break
                    y = sol[-1]
                    done = float(seg[-1] - tgrid[0])  # flow time reached, clamped against round-off
                    total = getattr(self.bar, "total", None) or math.inf
                    self.bar.update(max(0.0, min(done, total) - getattr(self.bar, "n", 0.0)))
                    i += len(seg) - 1
        except KeyboardInterrupt:
            status = "interrupted"
            rec.events.append(Event("interrupted", len(rec.times) - 1, rec.times[-1]).to_dict())
        except Exception as err:  # noqa: BLE001 - the model failed mid-run: keep the points reached
            if len(rec.times) < 2:
                raise  # nothing computed beyond θ₀ (e.g. a refusal at the first field evaluation): the error itself
            self.error = err
            keep_failure(rec, err, flow, rec.times[-1])
            status = "failed"
        finally:
            self.bar.close()
        return status

    def _record_chunk(self, start: int, seg: Tensor, sol: Tensor, max_loss: float) -> int:
        """Record the chunk's points (rows start+1 …) up to a divergence; how many were fine."""
        for j, (t, yy) in enumerate(zip(seg[1:], sol[1:])):
            try:
                loss = self.record(start + j + 1, float(t), self.unpack(yy))
            except _DivergedError as err:  # measuring the row's state needed the field, and it stopped existing
                self.rec.events.append(Event("divergence", len(self.rec.times) - 1, float(t), {
                    "reason": str(err)}).to_dict())
                return j
            if not math.isfinite(loss) or loss > max_loss:
                self.rec.events.append(Event("divergence", len(self.rec.times) - 1, float(t), {
                    "loss": loss, "last_finite_step": len(self.rec.times) - 2,
                    "reason": "loss non-finite or above max_loss"}).to_dict())
                return j
        return len(seg) - 1

    def _failure(self, err: Exception, step: int, flow: str) -> str:
        if isinstance(err, _DivergedError):
            self.rec.events.append(Event("divergence", step, self.t, {"reason": str(err)}).to_dict())
            return "diverged"
        # torchdiffeq asserts on 'underflow in dt' and 'max_num_steps exceeded'
        hint = ("the flow is stiff here: try method='rk4' with a smaller step_size, "
                "looser rtol/atol, or a smaller lr" if "underflow" in str(err)
                else "raise max_num_steps, loosen rtol/atol, or use a fixed-step method")
        self.rec.events.append(Event("solver_failure", step, self.t, {"reason": str(err), "suggestion": hint}
                                     ).to_dict())
        warnings.warn(f"{flow} integration stopped at t={self.t:.6g}: {err}; {hint}", RuntimeWarning, stacklevel=5)
        return "failed"


def compare(
    objective: Objective,
    theta0: Tensor | None = None,
    lr: float | Schedule = 0.1,
    steps: int = 50,
    *,
    flows: Sequence[str] | str = ("gf", "igr", "pf_topk"),
    flow_options: dict | None = None,
    time_budget: float | None = None,
    progress: Progress = None,
    **options: Any,
) -> Comparison:
    """GD and each flow on the grid t = n·lr, n = 0..steps, with drift and loss gaps per step.

    Args:
        objective: E.
        theta0: θ(0) (default ``objective.theta0``).
        lr: GD's rate h, the flows' h; or a schedule η(n) (both follow it, on GD's grid t_n = Σ_{m<n} η(m)).
        steps: GD steps; the flows are recorded at GD's times (t = n·h).
        flows: a flow name or a sequence of names.
        flow_options: given to every flow (see :func:`integrate`).
        time_budget: seconds for the whole call: each flow gets what GD and the earlier flows left.
        progress: as in :func:`integrate`.
        **options: :func:`integrate`'s solver, spectrum and recording keywords (:data:`OPTION_NAMES`), given to
            every flow. The drift needs full states, so they are recorded in full and dropped afterwards when
            ``states`` asks for less.

    Returns:
        the :class:`Comparison`. When GD diverges at step m the flows are integrated only to t = m·lr (the drift is
        undefined past it; ``config["horizon"]`` of each flow says so). Everything is checked before GD runs. A
        Ctrl-C ends the whole call: the part it interrupted is kept as it stood (status ``interrupted``) and the
        flows not yet started are left out of ``flows``.
    """
    if isinstance(flows, str):
        flows = (flows,)
    for name in flows:
        get_flow(name)  # a ValueError naming the valid choices
    check_option_names("compare", options)
    recording = Recording(options.pop("states", "full"), options.get("projection_size", 64))
    Solver(**{f: options[f] for f in SOLVER_NAMES if f in options})  # checked before GD runs
    Spectrum(**{f: options[f] for f in SPECTRUM_NAMES if f in options})
    budget = Budget(time_budget)
    theta = _initial(objective, theta0)
    gd = gradient_descent(objective, theta, lr, steps, states="full", progress=progress,
                          time_budget=budget.remaining())
    result = Comparison(gd, {})
    horizon = len(gd) - 1
    for name in flows:
        if horizon < 1 or budget.exceeded() or _interrupted(result):
            break  # one Ctrl-C ends the whole call: the parts done are kept as they stood
        traj = integrate(objective, theta, lr, horizon, flow=name, flow_options=flow_options, progress=progress,
                         time_budget=budget.remaining(), **options)
        traj.config["horizon"] = horizon
        if horizon < steps:
            traj.config["horizon_reason"] = f"GD {gd.status} at step {horizon}"
        n = min(len(traj), len(gd))
        states = traj.state_matrix()
        result.drift[name] = np.linalg.norm(np.real(states[:n]) - gd.state_matrix()[:n], axis=1)
        result.loss_gap[name] = traj.losses[:n] - gd.losses[:n]
        if recording.states != "full":
            traj.states, traj.state_mode = None, "none"
        result.flows[name] = traj
    return result


def central_flow(objective: Objective, theta0: Tensor | None, lr: float | Schedule, steps: int, *, substeps: int = 4,
                 critical: float = 1.95, track: float = 0.75, eig_tol: float = 1e-3, max_k: int = 16,
                 eig_refresh: float = 0.0, verify_steps: float = 1.0, subcritical: str = "bounded",
                 states: States = "none",
                 projection_size: int = 64, max_loss: float | None = None, time_budget: float | None = None,
                 progress: Progress = None) -> Trajectory:
    """Integrate the central flow of GD at rate ``lr`` for ``steps`` GD steps in the paper's discretisation.

    That is Euler substeps of dt = 1/substeps GD steps (module docstring): exactly
    ``integrate(objective, theta0, lr, steps, flow="central", method="euler", step_size=lr / substeps,
    flow_options=...)``, which this calls; other torchdiffeq methods integrate the same field.

    Args:
        objective: E, real; float64 recommended.
        theta0: θ(0), shape (D,), real (default ``objective.theta0``).
        lr: GD's rate η > 0, or a schedule η(n) (the threshold 2/η(n) follows it; step n is ``substeps`` Euler
            substeps of η(n)/substeps).
        steps: GD steps to cover; each is ``substeps`` Euler substeps of dt = 1/substeps.
        substeps: Euler substeps per GD step (the stability is linearised over one).
        critical: ηλ above which an eigen-direction is critical (1.95).
        track: the tracker follows every eigenvalue above track·2/η (0.75, :class:`EigenTracker` threshold mode).
        eig_tol: relative eigen-residual tolerance of the tracker.
        max_k: most eigenpairs tracked.
        eig_refresh: flow time between eigen solves (0: every substep; η: once per GD step, with Rayleigh–Ritz
            on the kept subspace in between, :class:`CentralState`).
        verify_steps: GD steps between certified eigen solves (with verification rounds that find a missed or
            repeated eigenvalue); the solves in between are warm Lanczos solves to ``eig_tol`` (1; 0: certify
            every solve, as before #34).
        subcritical: ``"bounded"`` (default): a tracked pair below the critical boundary, after the first, is
            refined only until its residual interval lies below it; ``"tight"``: every pair to ``eig_tol``.
        states: what the trajectory keeps of θ at each GD step: ``"full"``, ``"projection"`` or ``"none"``.
        projection_size: directions of the random projection (``states="projection"``).
        max_loss: stop (status ``diverged``) past this loss; None: 1e12·max(1, |E(θ₀)|).
        time_budget: wall-clock seconds; then status ``"stopped"``, a ``time_budget`` event, work kept.
        progress: a progress bar over flow time (None: shown once the run has taken 2 s).

    Returns:
        A :class:`Trajectory` with one row per GD step n = 0 … steps at t = n·η: ``loss``, ``grad_norm``,
        ``predicted_loss`` (E + ½⟨H, Σ⟩, the predicted time average of GD's loss), ``predicted_grad_norm2``
        (‖∇E‖² + ⟨Σ, H²⟩), ``sharpness``, ``critical`` (directions with ηλ > ``critical``), ``k`` (pairs
        tracked), ``infeasibility`` and ``complementarity`` (the worst SDCP residuals of the substeps that led to
        the step and of the step's own) and ``sigma_i`` (the eigenvalues of X, the oscillation variances, NaN
        beyond the step's critical count). Its config holds the settings and the work (``eigen_matvecs``,
        ``third_products``, ``evaluations``, ``central_seconds`` per part). Status ``complete``; ``diverged`` (the
        loss turned non-finite, or the flow stopped existing: a critical direction without third derivative, with
        a warning), ``interrupted`` (Ctrl-C), ``stopped`` (time budget) or ``failed`` (the model raised: the
        exception in ``.error``), each with the steps done kept and an event saying why. A flow that does not exist
        at θ0 raises the ArithmeticError.
    """
    if theta0 is not None and torch.is_tensor(theta0) and theta0.is_complex():
        raise TypeError("theta0 is complex, but the central flow is a flow of a real θ; pass theta0.real")
    steps = check_count("steps", steps)
    check_count("substeps", substeps, minimum=1)
    rates = StepRates(lr, steps, None)
    options = {"substeps": substeps, "critical": critical, "track": track, "eig_tol": eig_tol, "max_k": max_k,
               "eig_refresh": eig_refresh, "verify_steps": verify_steps,
               "subcritical": subcritical}
    step_size: float | Callable[[int], float] = (rates.peak / substeps if not rates.schedule
                                                 else (lambda n: rates.step(n) / substeps))
    traj = integrate(objective, theta0, lr, steps, flow="central", method="euler", step_size=step_size,
                     flow_options=options, states=states, projection_size=projection_size, max_loss=max_loss,
                     time_budget=time_budget, progress=progress)
    traj.config.update(kind="central", steps=steps, central_tol=eig_tol, central_max_k=max_k, eig_refresh=eig_refresh,
                       verify_steps=verify_steps, subcritical=subcritical, evaluations=traj.config["field_evaluations"])
    if traj.status == "diverged":
        warnings.warn(f"central flow stopped after {len(traj) - 1} GD steps: {traj.events[-1].get('reason')}; the "
                      "steps done are returned (status 'diverged')", RuntimeWarning, stacklevel=2)
    return traj


CentralFlowResult = Trajectory
"""What :func:`central_flow` returns: a :class:`Trajectory` since driftlab 0.3.0 (the name is kept for imports)."""


def _interrupted(result: Comparison) -> bool:
    return result.gd.status == "interrupted" or any(t.status == "interrupted" for t in result.flows.values())


def local_error(
    objective: Objective,
    theta: Tensor | None = None,
    lr: float = 0.1,
    *,
    flow: str = "gf",
    flow_options: dict | None = None,
    **options: Any,
) -> float:
    """‖θ_flow(h) − (θ − h∇E(θ))‖: how far one GD step lands from the flow after time h.

    Backward error analysis predicts O(h²) for GF, O(h³) for IGR and O(h⁴) for the third-order flow; on a quadratic
    the PF error is zero. ``options`` are :func:`integrate`'s solver and spectrum keywords; the default solver is
    dopri8 at rtol 1e-13, atol 1e-15 (float64): looser tolerances hide the O(h⁴) terms.
    """
    lr = check_positive("lr", lr)
    check_option_names("local_error", options)
    options = {"method": "dopri8", "rtol": 1e-13, "atol": 1e-15, **options}  # the caller's keywords win
    theta = _initial(objective, theta)
    gd_step = theta - lr * objective.grad(theta)
    traj = integrate(objective, theta, lr, flow=flow, times=[0.0, lr], flow_options=flow_options, **options)
    if traj.status == "interrupted":  # Ctrl-C reached the integrator: the caller asked to stop, so stop
        raise KeyboardInterrupt
    if traj.status != "complete":
        raise RuntimeError(f"the {flow} flow did not reach t = h = {lr}: status {traj.status}")
    return float(np.linalg.norm(np.real(traj.state_matrix()[-1]) - gd_step.detach().cpu().numpy()))


def _flow_map(objective: Objective, theta: Tensor, flow: str, lr: float, duration: float, options: dict) -> Tensor:
    """φ_duration(θ) of a flow (negative duration: backwards), dopri8 at rtol 1e-12, atol 1e-14."""
    record = get_flow(flow)
    prepared = _flow_options(record, options)
    sign = 1.0 if duration >= 0 else -1.0  # backwards: the reversed field forwards

    def rhs(t: Tensor, y: Tensor) -> Tensor:
        return sign * record(objective, y, lr, **prepared)

    with torch.no_grad():
        times = torch.tensor([0.0, abs(duration)], dtype=theta.dtype, device=theta.device)
        return odeint(rhs, theta, times, method="dopri8", rtol=1e-12, atol=1e-14)[-1]


def heavy_ball_local_error(objective: Objective, theta: Tensor, lr: float, momentum: float,
                           flow: str = "heavy_ball") -> float:
    """The local error ‖θ₁ − φ_h(θ₀)‖ of one heavy-ball step started on the flow's own path.

    The step is θ₁ = θ₀ − h∇E(θ₀) + β(θ₀ − θ₋₁) with θ₋₁ = φ_{−h}(θ₀), so the momentum carries the flow's velocity
    (a start on the invariant manifold to the flow's order). ``flow`` takes ``momentum`` (``heavy_ball``: O(h³);
    ``heavy_ball_gf``: O(h²)). float64 recommended.
    """
    lr = check_positive("lr", lr)
    theta = _initial(objective, theta)
    options = {"momentum": momentum}
    before = _flow_map(objective, theta, flow, lr, -lr, options)
    step = theta - lr * objective.grad(theta) + momentum * (theta - before)
    return float(torch.linalg.vector_norm(step - _flow_map(objective, theta, flow, lr, lr, options)))


def sgd_epoch_local_error(epoch: Objective, theta: Tensor, lr: float, flow: str = "sgd_modified") -> float:
    """‖E_order[θ after one SGD epoch] − φ_{mh}(θ)‖.

    The SGD endpoint averaged exactly over all m! orders of the epoch's m batches (m ≤ 6), against the flow after the
    epoch's time m·h. ``flow``: ``sgd_modified`` (the batches passed as its ``epoch``; O(h³)) or ``gf`` on the epoch's
    mean loss (O(h²)).
    """
    import itertools

    from ..curvature.stochastic import piece_grad

    m = len(epoch.pieces)
    if m > 6:
        raise ValueError(f"epoch has {m} batches: the exact average over m! orders needs m ≤ 6")
    lr = check_positive("lr", lr)
    theta = epoch.check_theta(theta).detach()
    ends = []
    for order in itertools.permutations(range(m)):
        state = theta.clone()
        for k in order:
            state = state - lr * piece_grad(epoch, k, state)
        ends.append(state)
    mean_end = torch.stack(ends).mean(dim=0)
    options = {"epoch": epoch} if flow == "sgd_modified" else {}
    return float(torch.linalg.vector_norm(mean_end - _flow_map(epoch, theta, flow, lr, m * lr, options)))
