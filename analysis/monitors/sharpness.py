"""Sharpness measured along a run: ``gradient_descent`` callbacks that record curvature metrics.

* :class:`PreconditionedSharpness` — λ₁(P⁻¹H) of an adaptive optimizer and its threshold;
* :class:`BatchSharpness` — mini-batch curvature estimates (``flows.curvature.stochastic``) with standard errors.
"""
from __future__ import annotations

from flows.curvature.spectrum import EigenTracker
from flows.curvature.stochastic import MEASURES, MiniBatches, batch_sharpness, gradient_noise_scale, minibatch_sharpness
from flows.dynamics.gd import StepContext, StepDecision
from flows.records.trajectory import Recorder

from ..controllers.optimizers import OptimizerController


class PreconditionedSharpness:
    """A ``gradient_descent`` callback recording, every ``every`` steps, ``preconditioned_sharpness`` = λ₁(P⁻¹H) at
    θₙ with the P step n divided by, and ``stability_threshold`` (its edge), from a warm-started tracker."""

    def __init__(self, controller: OptimizerController, every: int = 1, tol: float = 1e-3) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        self.controller, self.every = controller, every
        self.tracker = EigenTracker(k=1, tol=tol)

    def __call__(self, ctx: StepContext, decision: StepDecision, rec: Recorder) -> None:
        if ctx.step % self.every or self.controller.optimizer is None:
            return
        if self.controller.steps_taken != ctx.step + 1:
            return  # the last row: no step was taken from it, so no P belongs to it
        pairs = self.tracker.update(ctx.objective, ctx.theta, self.controller.preconditioner())
        rec.log("preconditioned_sharpness", float(pairs.values[0]))
        rec.log("stability_threshold", self.controller.threshold())


class BatchSharpness:
    """A ``gradient_descent`` callback recording, every ``every`` steps at θₙ, each of ``measures`` and its standard
    error as ``<measure>`` and ``<measure>_se`` (:func:`batch_sharpness`, :func:`minibatch_sharpness`,
    :func:`gradient_noise_scale`; the full-batch λ_max is ``gradient_descent(sharpness_every=...)``'s)."""

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
