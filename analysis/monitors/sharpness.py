"""Sharpness measured along a run: the ``gradient_descent`` callbacks that record curvature metrics.

* :class:`Sharpness` — the one writer of ``sharpness`` (λ₁(H), with ``eigenvalue_i`` for the top k) and, given an
  optimizer, of ``preconditioned_sharpness`` (λ₁(P⁻¹H) with the P of each step) and its ``stability_threshold``;
  detectors and controllers that need the sharpness read it from one of these monitors;
* :class:`PreconditionedSharpness` — :class:`Sharpness` for an optimizer, kept under its 0.2 name;
* :class:`BatchSharpness` — mini-batch curvature estimates (``flows.curvature.stochastic``) with standard errors.
"""
from __future__ import annotations

import math

import numpy as np

from flows.curvature.spectrum import EigenTracker
from flows.curvature.stochastic import MEASURES, MiniBatches, batch_sharpness, gradient_noise_scale, minibatch_sharpness
from flows.dynamics.gd import StepContext, StepDecision
from flows.records.trajectory import Recorder
from flows.validate import check_count, check_positive

from ..controllers.optimizers import OptimizerController


class Sharpness:
    """Records the top of the Hessian spectrum every ``every`` steps, from a warm-started tracker.

    Without ``optimizer``: ``sharpness`` = λ₁(H(θₙ)) and the top k as ``eigenvalue_0`` … ``eigenvalue_{k−1}``.
    With ``optimizer`` (an :class:`~analysis.OptimizerController`): ``preconditioned_sharpness`` = λ₁(P⁻¹H) with
    the P that step n divided by (none at the last row, where no step is taken) and ``stability_threshold``, the
    optimizer's edge (Adam: (2 + 2β₁)/((1 − β₁)h)).

    Args:
        every: measure at the steps n with n % every == 0.
        k: eigenvalues tracked (the top k, algebraically largest).
        tol: relative eigen-residual tolerance of the tracker.
        optimizer: the optimizer whose preconditioner P the spectrum is taken under (None: P = I).

    Attributes:
        values: the latest eigenvalues (descending), empty before the first measurement.
        value: the latest λ₁ (NaN before the first measurement).
        metric: the name λ₁ is recorded under.
    """

    def __init__(self, every: int = 10, k: int = 1, tol: float = 1e-3,
                 optimizer: OptimizerController | None = None) -> None:
        self.every = check_count("every", every, minimum=1)
        self.k = check_count("k", k, minimum=1)
        self.tol = check_positive("tol", tol)
        self.optimizer = optimizer
        self.tracker = EigenTracker(k=self.k, tol=self.tol)
        self.values = np.array([])
        self.value = math.nan
        self.metric = "sharpness" if optimizer is None else "preconditioned_sharpness"
        self._seen: int | None = None

    def due(self, ctx: StepContext) -> bool:
        """Whether step n is measured: a multiple of ``every`` and, under an optimizer, a step it took."""
        if ctx.step % self.every:
            return False
        return self.optimizer is None or (self.optimizer.optimizer is not None
                                          and self.optimizer.steps_taken == ctx.step + 1)

    def observe(self, ctx: StepContext) -> float:
        """Measure at θₙ when the step is due (once per step); the latest λ₁."""
        if self.due(ctx) and self._seen != ctx.step:
            pre = self.optimizer.preconditioner() if self.optimizer is not None else None
            pairs = self.tracker.update(ctx.objective, ctx.theta, pre)
            self.values = pairs.values.detach().cpu().numpy()
            self.value = float(self.values[0])
            self._seen = ctx.step
        return self.value

    def __call__(self, ctx: StepContext, decision: StepDecision, rec: Recorder) -> None:
        """Runner callback: measure at due steps and record (see the class docstring)."""
        if not self.due(ctx):
            return
        self.observe(ctx)
        rec.log(self.metric, self.value)
        if self.optimizer is not None:
            rec.log("stability_threshold", self.optimizer.threshold())
        else:
            for i, value in enumerate(self.values):
                rec.log(f"eigenvalue_{i}", float(value))


class PreconditionedSharpness(Sharpness):
    """:class:`Sharpness` under an optimizer's preconditioner (its 0.2 name).

    Records ``preconditioned_sharpness`` = λ₁(P⁻¹H) and ``stability_threshold`` every ``every`` steps.
    """

    def __init__(self, controller: OptimizerController, every: int = 1, tol: float = 1e-3) -> None:
        super().__init__(every=every, k=1, tol=tol, optimizer=controller)
        self.controller = controller


class BatchSharpness:
    """A ``gradient_descent`` callback recording mini-batch curvature estimates every ``every`` steps at θₙ.

    Each of ``measures`` (:func:`batch_sharpness`, :func:`minibatch_sharpness`, :func:`gradient_noise_scale`) is
    recorded as ``<measure>`` with its standard error as ``<measure>_se``; the full-batch λ_max is
    :class:`Sharpness`'s.
    """

    def __init__(self, batches: MiniBatches, every: int = 10, rel_error: float = 0.05, max_samples: int = 256,
                 measures: tuple[str, ...] = ("batch_sharpness",)) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        unknown = sorted(set(measures) - set(MEASURES))
        if unknown or not measures:
            raise ValueError(f"measures must be a non-empty subset of {MEASURES}, got {measures!r}")
        self.batches = batches
        self.every = every
        self.rel_error = rel_error
        self.max_samples = max_samples
        self.measures = tuple(measures)

    def __call__(self, ctx: StepContext, decision: StepDecision, rec: Recorder) -> None:
        """Runner callback: estimate each measure at due steps and record it with its standard error."""
        if ctx.step % self.every:
            return
        for name in self.measures:
            if name == "batch_sharpness":
                est = batch_sharpness(self.batches, ctx.theta, rel_error=self.rel_error, max_samples=self.max_samples)
            elif name == "minibatch_sharpness":
                est = minibatch_sharpness(self.batches, ctx.theta, rel_error=self.rel_error,
                                          max_samples=min(self.max_samples, 64))
            else:
                est = gradient_noise_scale(self.batches, ctx.theta, ctx.grad, rel_error=self.rel_error,
                                           max_samples=self.max_samples)
            rec.log(name, est.mean)
            rec.log(f"{name}_se", est.standard_error)
