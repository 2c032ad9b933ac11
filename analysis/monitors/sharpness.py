"""Sharpness measured along a run: the ``gradient_descent`` callbacks that record curvature metrics.

* :class:`Sharpness` — the one writer of ``sharpness`` (λ₁(H), with ``eigenvalue_i`` for the top k) and, given an
  optimizer, of ``preconditioned_sharpness`` (λ₁(P⁻¹H) with the P of each step) and its ``stability_threshold``;
  detectors and controllers that need the sharpness read it from one of these monitors;
* :class:`PreconditionedSharpness` — :class:`Sharpness` for an optimizer, kept under its 0.2 name;
* :class:`BatchSharpness` — mini-batch curvature estimates (``flows.curvature.stochastic``) with standard errors;
* :class:`StepBatchSharpness` — the batch sharpness of the very batch each SGD step uses;
* :class:`StochasticGap` — the pieces of the stochastic sharpness gap ΔS = ηβσ_u²/(4α) along the top eigenvector.
"""
from __future__ import annotations

import math

import numpy as np

from flows.curvature.spectrum import EigenTracker
from flows.curvature.stochastic import (
    MEASURES,
    MiniBatches,
    batch_sharpness,
    gradient_noise_scale,
    minibatch_sharpness,
    projected_noise_variance,
    self_stabilization,
    step_batch_sharpness,
    stochastic_sharpness_gap,
)
from flows.dynamics.gd import StepContext, StepDecision
from flows.records.trajectory import Recorder
from flows.validate import check_count, check_positive

from ..controllers.optimizers import OptimizerController
from ..controllers.stochastic import SGDController


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
    recorded as ``<measure>`` with its standard error as ``<measure>_se``; the batch sharpness also as
    ``batch_sharpness_ratio_of_means`` (E[gᵀHg]/E[‖g‖²] from the same batches); the full-batch λ_max is
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
                rec.log("batch_sharpness_ratio_of_means", est.extras["ratio_of_means"])
            elif name == "minibatch_sharpness":
                est = minibatch_sharpness(self.batches, ctx.theta, rel_error=self.rel_error,
                                          max_samples=min(self.max_samples, 64))
            else:
                est = gradient_noise_scale(self.batches, ctx.theta, ctx.grad, rel_error=self.rel_error,
                                           max_samples=self.max_samples)
            rec.log(name, est.mean)
            rec.log(f"{name}_se", est.standard_error)


class StepBatchSharpness:
    """Records ``step_batch_sharpness``, the batch sharpness of the batch each SGD step uses.

    That is g_Bₙᵀ H_Bₙ g_Bₙ / ‖g_Bₙ‖² for the batch Bₙ of step n, every ``every`` steps (one HVP each).
    :class:`BatchSharpness` averages over fresh batches at θₙ; this one measures the curvature the run's own step
    meets, whose mean over steps is the batch sharpness along the run.
    """

    def __init__(self, controller: SGDController, every: int = 1) -> None:
        if not isinstance(controller, SGDController):
            raise TypeError(f"controller must be an SGDController (the run's), got {type(controller).__name__}")
        self.controller = controller
        self.every = check_count("every", every, minimum=1)

    def __call__(self, ctx: StepContext, decision: StepDecision, rec: Recorder) -> None:
        """Runner callback: at due steps where a step is taken, the used batch's Rayleigh quotient."""
        if ctx.step % self.every or decision.direction is None:
            return
        objective, index = self.controller.current_batch()
        rec.log("step_batch_sharpness", step_batch_sharpness(objective, index, ctx.theta))


class StochasticGap:
    """Records the pieces of ΔS = ηβσ_u²/(4α) (arXiv 2604.21016) at θₙ every ``every`` steps.

    u is the top eigenvector that ``sharpness`` (a :class:`Sharpness` monitor placed before this callback, with
    the same ``every``) found at θₙ. Recorded: ``projected_noise_variance`` σ_u² = Var_B(uᵀg_B) over fresh
    batches of ``batches`` (with ``projected_noise_variance_se``), ``sharpening_rate`` α = −g_⊥ᵀ∇S (the
    gradient without its part along u, :func:`~flows.curvature.stochastic.self_stabilization`),
    ``self_stabilization`` β = ‖∇S‖² (∇S = ∇³E[u, u], Damian et al. 2023) and ``predicted_gap`` ΔS with η the
    step's rate (NaN where α ≤ 0). One third-derivative product and no HVPs beyond the monitor's.
    """

    def __init__(self, sharpness: Sharpness, batches: MiniBatches, every: int = 10, rel_error: float = 0.1,
                 max_samples: int = 256) -> None:
        if not isinstance(sharpness, Sharpness) or sharpness.optimizer is not None:
            raise TypeError("sharpness must be the run's plain Sharpness monitor (it supplies u₁)")
        self.sharpness = sharpness
        self.batches = batches
        self.every = check_count("every", every, minimum=1)
        if self.every % sharpness.every:
            raise ValueError(f"every={every} must be a multiple of the Sharpness monitor's every={sharpness.every}")
        self.rel_error = check_positive("rel_error", rel_error)
        self.max_samples = check_count("max_samples", max_samples, minimum=16)

    def __call__(self, ctx: StepContext, decision: StepDecision, rec: Recorder) -> None:
        """Runner callback: σ_u², α, β and ΔS at the due steps."""
        if ctx.step % self.every:
            return
        self.sharpness.observe(ctx)
        pairs = self.sharpness.tracker.last
        assert pairs is not None  # observe() at a due step has solved
        u = pairs.vectors[:, 0]
        noise = projected_noise_variance(self.batches, ctx.theta, u, ctx.grad, rel_error=self.rel_error,
                                         max_samples=self.max_samples)
        alpha, beta, _ = self_stabilization(ctx.objective, ctx.theta, u, ctx.grad)
        rec.log("projected_noise_variance", noise.mean)
        rec.log("projected_noise_variance_se", noise.standard_error)
        rec.log("sharpening_rate", alpha)
        rec.log("self_stabilization", beta)
        rec.log("predicted_gap", stochastic_sharpness_gap(decision.lr, alpha, beta, noise.mean))
