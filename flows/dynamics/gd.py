"""Discrete gradient descent θₙ₊₁ = θₙ − hₙ dₙ on a flat θ, recorded as a Trajectory.

dₙ is the gradient (optionally with heavy-ball momentum, vₙ = β vₙ₋₁ + gₙ) or
whatever direction a controller returns. Time is t = Σ hᵢ (t = n·h for a
constant rate), so GD and the flows share one time axis.
"""
from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from time import monotonic
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from ..objective.hessian import HessianOperator
from ..objective.objective import Objective
from ..progress import Progress, progress_bar
from ..records.events import Event
from ..records.trajectory import Recorder, Trajectory, reserve_rows
from ..validate import check_count, check_positive, loss_bound
from .schedules import Schedule, as_schedule


@dataclass(frozen=True)
class StepContext:
    """What a controller or callback sees at step n: θₙ, E(θₙ), gₙ and the runner's rate, before the update.

    Frozen: the rate actually used at step n is the :class:`StepDecision`'s, which callbacks receive beside it.
    """

    step: int
    time: float
    theta: Tensor
    loss: Tensor
    grad: Tensor
    objective: Objective
    lr: float
    momentum: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    hessian: HessianOperator | None = None
    """H(θₙ) on the gradient graph the runner built for gₙ, when the controller ``wants_hessian`` (H @ v is then
    one backward pass, no new forward); None otherwise."""


@dataclass
class StepDecision:
    """A controller's answer: the rate h and optionally a direction d (default g): θ ← θ − h d.

    An optimizer that computes its own step (Adam, RMSProp, momentum SGD: :mod:`analysis.controllers.optimizers`) gives
    the whole ``displacement`` Δ instead, θ ← θ − Δ exactly; ``lr`` is then its base rate (recorded, and the h of its
    stability threshold).
    """

    lr: float
    direction: Tensor | None = None
    info: dict[str, float] = field(default_factory=dict)
    displacement: Tensor | None = None


@runtime_checkable
class Controller(Protocol):
    """What ``gradient_descent`` asks of a controller (``analysis.controllers`` has them all).

    ``decide(ctx)`` returns the step (a :class:`StepDecision`, or a bare rate h); ``owns_momentum`` says the
    controller applies its own momentum (then the runner's must be 0); ``evaluations`` counts the objective
    evaluations it made beyond the runner's one per step (recorded as the ``evaluations`` metric);
    ``hyperparameters()`` gives its settings for the run's config (None: nothing to record); ``wants_hessian``
    asks the runner for H(θₙ) on the graph of its own gradient (``ctx.hessian``). Subclass this protocol
    to inherit the defaults (False, 0, None) and write only ``decide``.
    """

    owns_momentum: bool = False
    evaluations: int = 0

    @property
    def wants_hessian(self) -> bool:
        """Whether ``decide`` multiplies by H(θₙ): the runner then keeps gₙ's graph and passes ``ctx.hessian``."""
        return False

    def decide(self, ctx: StepContext) -> StepDecision | float:
        """The step at ``ctx``: a :class:`StepDecision`, or a bare rate h."""
        ...

    def hyperparameters(self) -> dict[str, Any] | None:
        """The controller's settings, recorded in the run's config (None: none)."""
        return None


StepCallback = Callable[[StepContext, StepDecision, Recorder], None]
"""A ``gradient_descent`` callback: called at every row with the step's context, the decision taken from it (at the
last row, where no step is taken, the last rate used) and the recorder, whose :meth:`~Recorder.log` and
:meth:`~Recorder.event` write into the current row."""


def check_callbacks(callbacks: Sequence[StepCallback]) -> list[StepCallback]:
    """The callbacks as a list; a TypeError naming any that cannot take (ctx, decision, recorder)."""
    out = list(callbacks)
    for callback in out:
        if not callable(callback):
            raise TypeError(f"callbacks must be callables (ctx, decision, recorder), got {type(callback).__name__}")
        try:
            inspect.signature(callback).bind(None, None, None)
        except TypeError:
            raise TypeError(f"callback {getattr(callback, '__name__', type(callback).__name__)} must take (ctx, "
                            "decision, recorder); driftlab 0.3.0 added the decision (the rate used is decision.lr, "
                            "no longer ctx.lr)") from None
        except ValueError:  # no signature to inspect (a builtin): let the call decide
            pass
    return out


class Budget:
    """A wall-clock allowance in seconds (None: unlimited); :meth:`exceeded` is checked between evaluations."""

    def __init__(self, seconds: float | None) -> None:
        if seconds is not None:
            check_positive("time_budget", seconds)
        self.seconds = seconds
        self.start = monotonic()

    def remaining(self) -> float | None:
        """Seconds left (None: unlimited; never 0, so that it can be a solver's time limit)."""
        return None if self.seconds is None else max(self.seconds - (monotonic() - self.start), 1e-9)

    def exceeded(self) -> bool:
        """Whether the allowance is used up."""
        return self.seconds is not None and monotonic() - self.start > self.seconds


def gradient_descent(
    objective: Objective,
    theta0: Tensor | None = None,
    lr: float | Schedule = 0.1,
    steps: int = 100,
    controller: Controller | None = None,
    *,
    momentum: float = 0.0,
    states: str = "full",
    projection_size: int = 64,
    max_loss: float | None = None,
    callbacks: Sequence[StepCallback] = (),
    time_budget: float | None = None,
    progress: Progress = None,
) -> Trajectory:
    """Run GD for ``steps`` steps from ``theta0`` (default ``objective.theta0``).

    Records θₙ (per ``states``), loss, grad_norm and the rate used (``lr``); a
    controller's ``info`` entries are recorded as metrics too, and callbacks add
    their own (the sharpness: ``analysis.Sharpness`` or ``analysis.EoSDetector``).
    Divergence is an outcome: when the loss turns non-finite or exceeds
    ``max_loss`` (default 1e12·max(1, |E(θ₀)|)) the run stops, records a
    ``divergence`` event, and returns what it has (status ``"diverged"``). A
    non-finite step proposed by the controller is refused the same way (a
    ``refused_step`` event; θ stays at the last state).
    ``time_budget`` (wall-clock seconds) stops the run with status
    ``"stopped"`` and a ``time_budget`` event; ``progress`` shows a bar
    (``None``: only when the run takes more than 2 s). ``lr`` is a number or a schedule η(n) of the step
    (:mod:`flows.dynamics.schedules`); a controller decides its own rate from ``ctx.lr`` = η(n).

    Returns:
        a :class:`Trajectory` with times t = Σ hᵢ.
    """
    theta = _initial(_check_objective(objective), theta0, real=True)
    scheduled = callable(lr)
    rates = as_schedule(lr if callable(lr) else check_positive("lr", lr))
    steps = check_count("steps", steps)
    momentum = check_positive("momentum", momentum, allow_zero=True)
    if momentum >= 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if controller is not None and not isinstance(controller, Controller):
        missing = [name for name in ("decide", "owns_momentum", "evaluations", "hyperparameters", "wants_hessian")
                   if not hasattr(controller, name)]
        raise TypeError(f"controller must implement flows.Controller, {type(controller).__name__} lacks "
                        f"{', '.join(missing)} (subclass flows.Controller for the defaults)")
    if momentum and controller is not None and controller.owns_momentum:
        raise ValueError(f"momentum must be 0 with {type(controller).__name__}: the optimizer applies its own")
    if max_loss is not None and not (isinstance(max_loss, (int, float)) and max_loss > 0):
        raise ValueError(f"max_loss must be None or a positive number, got {max_loss!r}")
    reserve_rows(steps + 1, objective.dim, states, projection_size, theta.element_size())
    run = _GDRun(objective, rates, controller, momentum, max_loss, check_callbacks(callbacks),
                 Budget(time_budget), Recorder(objective.dim, states, projection_size))
    config = {"kind": "gd", "lr": repr(rates) if scheduled else rates(0.0), "steps": steps, "momentum": momentum,
              "objective": objective.name,
              "controller": type(controller).__name__ if controller is not None else None,
              "controller_settings": controller.hyperparameters() if controller is not None else None,
              "dtype": str(theta.dtype), "device": str(theta.device)}
    traj = run.rec.build(config, run.loop(theta, steps, progress))
    traj.error = run.error
    return traj


def keep_failure(rec: Recorder, err: BaseException, runner: str, time: float) -> None:
    """A run stopped by an exception after its first step.

    A ``failed`` event naming it and a warning; the rows recorded stay. (An exception before any step is the caller's to
    see, raised as it is.)
    """
    step = rec.row
    reason = f"{type(err).__name__}: {err}"
    rec.event(Event("failed", step, time, {"reason": reason}))
    warnings.warn(f"{runner} failed after step {step} ({reason}); the {step + 1} rows recorded are returned with "
                  "status 'failed' (the exception is the trajectory's .error)", RuntimeWarning, stacklevel=4)


def run_keeping_rows(rec: Recorder, runner: str, body: Callable[[], str]) -> tuple[str, BaseException | None]:
    """(status, error) of ``body()``, the loop of a runner that records into ``rec``, with the rows kept.

    Ctrl-C: ``interrupted``; an ArithmeticError (the run diverged, or its model stopped existing) after the first
    row: ``diverged`` with a warning; any other exception after the second row: ``failed`` (:func:`keep_failure`).
    Earlier, the exception itself is raised: nothing was computed.
    """
    try:
        return body(), None
    except KeyboardInterrupt:
        rec.event(Event("interrupted", rec.row, rec.times[-1] if rec.times else 0.0, {"reason": "KeyboardInterrupt"}))
        return "interrupted", None
    except ArithmeticError as err:
        if rec.row < 0:
            raise
        rec.event(Event("divergence", rec.row, rec.times[-1], {"reason": str(err)}))
        warnings.warn(f"{runner} stopped after {rec.row} steps: {err}", RuntimeWarning, stacklevel=3)
        return "diverged", None
    except Exception as err:  # noqa: BLE001 - keep the steps done
        if rec.row < 1:
            raise
        keep_failure(rec, err, runner, rec.times[-1])
        return "failed", err


def _check_objective(objective: Objective) -> Objective:
    if not isinstance(objective, Objective):
        raise TypeError(f"objective must be a flows.Objective, got {type(objective).__name__}")
    return objective


class _GDRun:
    """One GD run: the step with its checks, the callbacks, and the stop conditions."""

    def __init__(self, objective: Objective, rates: Schedule, controller: Controller | None, momentum: float,
                 max_loss: float | None,
                 callbacks: list[StepCallback], budget: Budget, rec: Recorder) -> None:
        self.objective = objective
        self.rates = rates
        lr = rates(0.0)
        self.controller = controller
        self.momentum = momentum
        self.max_loss = max_loss
        self.callbacks = callbacks
        self.budget = budget
        self.rec = rec
        self.time = 0.0
        self.last_lr = lr
        self.bound = math.inf
        self.velocity: Tensor | None = None
        self.error: BaseException | None = None

    def loop(self, theta: Tensor, steps: int, progress: Progress) -> str:
        """Steps 0..steps; the final status (``complete``, ``diverged``, ``stopped`` or ``interrupted``)."""
        bar = progress_bar(steps, progress, "GD")
        try:
            for n in range(steps + 1):
                theta, status = self.step(n, theta, last=n == steps)
                if status is not None:
                    return status
                if n < steps:  # row n took step n (the last row takes none)
                    bar.update(1)
                if n < steps and self.budget.exceeded():
                    self.rec.add(self.time, theta, **_measure(self.objective, theta, n + 1))
                    self.event("time_budget", n + 1, reason=f"wall-clock budget of {self.budget.seconds} s used up")
                    return "stopped"
            return "complete"
        except KeyboardInterrupt:
            self.event("interrupted", self.rec.row)
            return "interrupted"
        except Exception as err:  # noqa: BLE001 - the model (or a callback) failed: keep the steps done
            if len(self.rec.times) < 2:
                raise  # nothing computed beyond the caller's own θ₀: the error itself
            self.error = err
            keep_failure(self.rec, err, "GD", self.time)
            return "failed"
        finally:
            bar.close()

    def event(self, kind: str, step: int, **evidence: Any) -> None:
        self.rec.event(Event(kind, step, self.time, evidence))

    def step(self, n: int, theta: Tensor, last: bool) -> tuple[Tensor, str | None]:
        """Record row n and take step n (none at the last row); θₙ₊₁ and a status when the run ends here."""
        hessian = None
        if not last and self.controller is not None and self.controller.wants_hessian:
            hessian = self.objective.hessian_operator(theta)  # gₙ with its graph kept: H @ v without a new forward
            loss, grad = hessian.loss, hessian.gradient
        else:
            loss, grad = self.objective.loss_and_grad(theta)
        row: dict[str, float] = {"loss": float(loss), "grad_norm": float(torch.linalg.vector_norm(grad)), "step": n}
        if n == 0:
            self.bound = loss_bound(self.max_loss, row["loss"])
        if not (math.isfinite(row["loss"]) and math.isfinite(row["grad_norm"])) or row["loss"] > self.bound:
            self.rec.add(self.time, theta, **row)
            self.event("divergence", n, loss=row["loss"], last_finite_step=n - 1,
                       reason="non-finite" if not math.isfinite(row["loss"]) else f"loss > max_loss={self.bound}")
            return theta, "diverged"
        # the context carries the runner's rate; the rate used is the decision's (at the last row, where no step
        # is taken, callbacks get the last rate used: lr when no step was taken)
        ctx = StepContext(n, self.time, theta, loss, grad, self.objective, self.rates(n), self.momentum,
                          hessian=hessian)
        if last:
            self.rec.add(self.time, theta, **row)
            self.notify(ctx, StepDecision(self.last_lr))  # no step from the last row: the last rate used
            return theta, None
        decision = decide(self.controller, ctx)
        if hessian is not None:
            hessian.release()
        row.update(lr=decision.lr, **decision.info)
        # cumulative objective evaluations: the runner's one per step plus the controller's extra ones
        row["evaluations"] = float(n + 1 + (self.controller.evaluations if self.controller is not None else 0))
        if decision.displacement is not None:
            if self.momentum:
                raise ValueError("momentum must be 0 with a controller that gives its own displacement (an optimizer "
                                 "applies its own momentum)")
            new_theta = theta - decision.displacement
        else:
            direction = grad if decision.direction is None else decision.direction
            if self.momentum:
                self.velocity = direction if self.velocity is None else self.momentum * self.velocity + direction
                direction = self.velocity
            new_theta = theta - decision.lr * direction
        self.rec.add(self.time, theta, **row)
        if not (math.isfinite(decision.lr) and bool(torch.isfinite(new_theta).all())):
            self.event("refused_step", n, lr=decision.lr,  # θₙ stays the last recorded state
                       reason="non-finite rate or update proposed by the controller")
            return theta, "diverged"
        self.last_lr = decision.lr
        self.notify(ctx, decision)
        self.time += decision.lr
        return new_theta, None

    def notify(self, ctx: StepContext, decision: StepDecision) -> None:
        for callback in self.callbacks:
            callback(ctx, decision, self.rec)


def decide(controller: Controller | None, ctx: StepContext) -> StepDecision:
    """The controller's decision at ``ctx`` as a :class:`StepDecision` (a bare float is a rate; None: ``ctx.lr``).

    A negative rate is refused with a ValueError naming the controller.
    """
    if controller is None:
        return StepDecision(ctx.lr)
    out = controller.decide(ctx)
    if not isinstance(out, StepDecision):
        out = StepDecision(float(out))
    if out.lr < 0:
        raise ValueError(f"controller {type(controller).__name__} proposed a negative rate {out.lr!r}")
    return out


def _initial(objective: Objective, theta0: Tensor | None, *, real: bool = False) -> Tensor:
    if theta0 is None:
        if objective.theta0 is None:
            raise ValueError("theta0 is required: this objective has no default starting point")
        theta0 = objective.theta0
    theta = objective.check_theta(theta0, "theta0").detach().clone()
    if real and theta.is_complex():
        raise TypeError("theta0 is complex, but this runner steps a real θ (complex states belong to the exact "
                        "principal flow: integrate(..., flow='pf')); pass theta0.real")
    return theta


def _measure(objective: Objective, theta: Tensor, step: int) -> dict[str, float]:
    loss, grad = objective.loss_and_grad(theta)
    return {"loss": float(loss), "grad_norm": float(torch.linalg.vector_norm(grad)), "step": step}


