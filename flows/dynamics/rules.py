"""Update rules w ← w − P(s)⁻¹ d with an optimizer state s: one record for the discrete method and its flows.

A rule (after the public code of Cohen, Damian et al.'s central flows, ``src/update_rules.py``, written anew) keeps
a state s = {t, ν, m} and a diagonal preconditioner P(s) = diag(p(s)):

=================  ===================================================  ================================
rule               state update (gradient g, step counter t)             p(s); direction d
=================  ===================================================  ================================
``GD``             t ← t + 1                                             1/η(t − 1); d = g
``ScalarRMSProp``  ν ← ν + (1 − β₂)(‖g‖² − ν)  (ν a scalar)              (√ν̂ + ε)/η(t − 1); d = g
``RMSProp``        ν ← ν + (1 − β₂)(g² − ν)   (per coordinate)           (√ν̂ + ε)/η(t − 1); d = g
``Adam``           m ← m + (1 − β₁)(g − m), ν as RMSProp                 (√ν̂ + ε)/η(t − 1); d = m̂
=================  ===================================================  ================================

with ν̂ = ν/(1 − β₂ᵗ), m̂ = m/(1 − β₁ᵗ) under bias correction (else ν̂ = ν, m̂ = m) and η a schedule of the
0-based step (:mod:`flows.dynamics.schedules`). A discrete step folds the gradient into the state first and then
moves w with the new state: s' = fold(s, g), w' = w − d(s', g)/p(s'), as RMSProp and Adam do.

**Continuous time.** The flows use ds/dt = rate(s, g) with the EMA rates c(g − m), c(g² − ν) at
c = (1 − β)/β, not (1 − β): the discrete update ν' = ν + (1 − β)(g² − ν) is *exactly* the backward-Euler step
ν' = ν + c(g² − ν') of dν/dt = c(g² − ν) (solve for ν': ν' = βν + (1 − β)g²). The step the preconditioner uses
already contains the new gradient, so the implicit step is the faithful one, and its rate is c = (1 − β)/β; this is
the division by β₂ of the public code ("see footnote"), and ``tests/flows/dynamics/test_rules.py`` checks the identity.
The flows start from s(0) = fold(s₀, g(w₀)) (t = 1), the state the discrete method's first step uses.

**Time averages.** The rates are linear in the first and second moments of g, so a rule gives them as
``rate(state, mean, square)`` with mean = E[g] and square = E[g ⊙ g] (D,): the stable flow passes g and g ⊙ g, the
central flow the averages over the oscillation (:mod:`flows.dynamics.adaptive`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..validate import check_positive
from .gd import Controller, StepContext, StepDecision
from .schedules import Schedule, as_schedule

RuleState = dict[str, Tensor]
"""An optimizer state: ``t`` (0-d: gradients folded in) and the rule's moments, ``nu`` (0-d or (D,)), ``m`` (D,)."""


def _check_beta(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1):
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return float(value)


def _schedule_rate(schedule: Schedule, step: float) -> float:
    """dη/ds: the schedule's own ``derivative`` if it has one, else a central difference (one-sided at 0)."""
    derivative = getattr(schedule, "derivative", None)
    if derivative is not None:
        return float(derivative(step))
    delta = 1e-4
    if step < delta:
        return (schedule(step + delta) - schedule(step)) / delta
    return (schedule(step + delta) - schedule(step - delta)) / (2 * delta)


@dataclass(frozen=True)
class GD:
    """Gradient descent at rate η (a number or a schedule): P = 1/η(t − 1), state {t}.

    Attributes:
        lr: η, a positive number or a schedule of the 0-based step.
    """

    lr: float | Schedule = 0.1
    name: ClassVar[str] = "gd"

    def __post_init__(self) -> None:
        if not callable(self.lr):
            check_positive("lr", self.lr)
        else:
            as_schedule(self.lr)

    @property
    def schedule(self) -> Schedule:
        """η as a schedule."""
        return as_schedule(self.lr)

    @property
    def threshold(self) -> float:
        """The stability threshold of λ(P⁻¹H): 2 (momentum-free rules)."""
        return 2.0

    def rate_at(self, state: RuleState) -> float:
        """η at the state's step (t − 1, the 0-based step of the gradient last folded in)."""
        return float(self.schedule(float(state["t"]) - 1.0))

    def initial_state(self, theta: Tensor) -> RuleState:
        """s₀, before any gradient: t = 0 and zero moments."""
        return {"t": torch.zeros((), dtype=theta.dtype, device=theta.device)}

    def fold(self, state: RuleState, grad: Tensor) -> RuleState:
        """The discrete state update with gradient g (t ← t + 1, the moments' EMAs)."""
        return {"t": state["t"] + 1.0}

    def rate(self, state: RuleState, mean: Tensor, square: Tensor) -> RuleState:
        """ds/dt given E[g] = ``mean`` and E[g ⊙ g] = ``square`` (dt/dt = 1)."""
        return {"t": torch.ones_like(state["t"])}

    def preconditioner(self, state: RuleState) -> Tensor:
        """p(s), P = diag(p): 0-d for GD and Scalar RMSProp, (D,) for RMSProp and Adam."""
        return torch.as_tensor(1.0 / self.rate_at(state), dtype=state["t"].dtype, device=state["t"].device)

    def preconditioner_rate(self, state: RuleState, rate: RuleState) -> Tensor:
        """dp/dt along ds/dt = ``rate`` (linear in ``rate``): for GD −η'(t)/η² · dt/dt."""
        step = float(state["t"]) - 1.0
        eta = float(self.schedule(step))
        return rate["t"] * (-_schedule_rate(self.schedule, step) / eta ** 2)

    def direction(self, state: RuleState, mean: Tensor) -> Tensor:
        """d, the vector P⁻¹ multiplies: the (time-averaged) gradient; Adam's m̂."""
        return mean

    def step(self, theta: Tensor, state: RuleState, grad: Tensor) -> tuple[Tensor, RuleState]:
        """One discrete step: s' = fold(s, g), w' = w − d(s', g)/p(s')."""
        new = self.fold(state, grad)
        return theta - self.direction(new, grad) / self.preconditioner(new), new

    def controller(self) -> RuleController:
        """The discrete method for ``gradient_descent(..., controller=rule.controller())``: a fresh state."""
        return RuleController(self)

    def settings(self) -> dict[str, Any]:
        """The rule's settings for a run's config (a schedule by its repr)."""
        return {"rule": self.name, "lr": self.lr if not callable(self.lr) else repr(self.lr)}

    def summary(self, state: RuleState) -> dict[str, float]:
        """Per-row metrics of the state: the rate η and the effective step 1/p (its harmonic mean per coordinate)."""
        p = self.preconditioner(state)
        return {"lr": self.rate_at(state), "effective_step": float(1.0 / p.mean()) if p.ndim else float(1.0 / p)}


@dataclass(frozen=True)
class ScalarRMSProp(GD):
    """Scalar RMSProp: one EMA ν of ‖g‖², effective step η/(√ν̂ + ε).

    Attributes:
        lr: η (number or schedule).
        beta2: β₂ ∈ (0, 1).
        eps: ε ≥ 0 added to √ν̂.
        bias_correction: use ν̂ = ν/(1 − β₂ᵗ).
    """

    beta2: float = 0.99
    eps: float = 0.0
    bias_correction: bool = False
    name: ClassVar[str] = "scalar_rmsprop"
    per_coordinate: ClassVar[bool] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_beta("beta2", self.beta2)
        check_positive("eps", self.eps, allow_zero=True)
        if not isinstance(self.bias_correction, bool):
            raise TypeError(f"bias_correction must be True or False, got {self.bias_correction!r}")

    @property
    def nu_rate(self) -> float:
        """c₂ = (1 − β₂)/β₂, the continuous EMA rate (module docstring)."""
        return (1.0 - self.beta2) / self.beta2

    def initial_state(self, theta: Tensor) -> RuleState:
        """The state before any gradient: t = 0, ν = 0 (a scalar, or per coordinate)."""
        nu = torch.zeros_like(theta) if self.per_coordinate else torch.zeros((), dtype=theta.dtype,
                                                                             device=theta.device)
        return {**super().initial_state(theta), "nu": nu}

    def _square(self, square: Tensor) -> Tensor:
        return square if self.per_coordinate else square.sum(dim=-1)  # a leading batch dimension is kept

    def fold(self, state: RuleState, grad: Tensor) -> RuleState:
        """The discrete update: t ← t + 1, ν ← ν + (1 − β₂)(g² − ν)."""
        nu = state["nu"] + (1.0 - self.beta2) * (self._square(grad * grad) - state["nu"])
        return {**super().fold(state, grad), "nu": nu}

    def rate(self, state: RuleState, mean: Tensor, square: Tensor) -> RuleState:
        """dν/dt = c₂(E[g²] − ν)."""
        return {**super().rate(state, mean, square), "nu": self.nu_rate * (self._square(square) - state["nu"])}

    def _correction(self, t: Tensor) -> Tensor:
        return 1.0 - self.beta2 ** t if self.bias_correction else torch.ones_like(t)

    def preconditioner(self, state: RuleState) -> Tensor:
        """The diagonal p = (√ν̂ + ε)/η(t − 1)."""
        nu_hat = state["nu"] / self._correction(state["t"])
        return (nu_hat.sqrt() + self.eps) / self.rate_at(state)

    def preconditioner_rate(self, state: RuleState, rate: RuleState) -> Tensor:
        """dp/dt by the chain rule through ν, the bias correction and η (all linear in ``rate``)."""
        t = state["t"]
        step = float(t) - 1.0
        eta = float(self.schedule(step))
        b = self._correction(t)
        db = -(self.beta2 ** t) * math.log(self.beta2) if self.bias_correction else torch.zeros_like(t)
        nu_hat = state["nu"] / b
        dnu_hat = rate["nu"] / b - state["nu"] * db * rate["t"] / b ** 2
        root = nu_hat.sqrt()
        droot = torch.where(root > 0, dnu_hat / (2 * root.clamp_min(torch.finfo(root.dtype).tiny)),
                            torch.zeros_like(root))
        return droot / eta - (root + self.eps) * _schedule_rate(self.schedule, step) * rate["t"] / eta ** 2

    def settings(self) -> dict[str, Any]:
        """The rule's settings."""
        return {**super().settings(), "beta2": self.beta2, "eps": self.eps, "bias_correction": self.bias_correction}

    def summary(self, state: RuleState) -> dict[str, float]:
        """η, the effective step, and ν (its mean per coordinate)."""
        return {**super().summary(state), "nu": float(state["nu"].mean())}


@dataclass(frozen=True)
class RMSProp(ScalarRMSProp):
    """RMSProp: ν per coordinate, P = diag(√ν̂ + ε)/η (the Scalar RMSProp record per coordinate)."""

    name: ClassVar[str] = "rmsprop"
    per_coordinate: ClassVar[bool] = True


@dataclass(frozen=True)
class Adam(RMSProp):
    """Adam: RMSProp's ν and a first moment m, w ← w − m̂/p; threshold 2(1 + β₁)/(1 − β₁) on λ(P⁻¹H).

    Attributes:
        beta1: β₁ ∈ (0, 1); the threshold is Cohen et al.'s (2022) preconditioned edge, 38/η at β₁ = 0.9.
    """

    beta1: float = 0.9
    name: ClassVar[str] = "adam"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_beta("beta1", self.beta1)

    @property
    def threshold(self) -> float:
        """2(1 + β₁)/(1 − β₁)."""
        return 2.0 * (1.0 + self.beta1) / (1.0 - self.beta1)

    @property
    def m_rate(self) -> float:
        """c₁ = (1 − β₁)/β₁."""
        return (1.0 - self.beta1) / self.beta1

    def initial_state(self, theta: Tensor) -> RuleState:
        """The state before any gradient: t = 0, ν = 0, m = 0."""
        return {**super().initial_state(theta), "m": torch.zeros_like(theta)}

    def fold(self, state: RuleState, grad: Tensor) -> RuleState:
        """RMSProp's update and m ← m + (1 − β₁)(g − m)."""
        return {**super().fold(state, grad), "m": state["m"] + (1.0 - self.beta1) * (grad - state["m"])}

    def rate(self, state: RuleState, mean: Tensor, square: Tensor) -> RuleState:
        """RMSProp's rates and dm/dt = c₁(E[g] − m)."""
        return {**super().rate(state, mean, square), "m": self.m_rate * (mean - state["m"])}

    def direction(self, state: RuleState, mean: Tensor) -> Tensor:
        """m̂ = m/(1 − β₁ᵗ) (bias-corrected) or m."""
        if not self.bias_correction:
            return state["m"]
        return state["m"] / (1.0 - self.beta1 ** state["t"])

    def settings(self) -> dict[str, Any]:
        """The rule's settings."""
        return {**super().settings(), "beta1": self.beta1}


class RuleController(Controller):
    """An update rule run by ``gradient_descent``: folds gₙ into its state, then moves θ by d(s)/p(s) exactly.

    Each step records the rule's :meth:`~GD.summary` (``lr``, ``effective_step``, ``nu``) as metrics. The runner's
    own ``lr`` and momentum are not used (momentum must be 0: Adam's is the rule's).
    """

    owns_momentum = True

    def __init__(self, rule: GD) -> None:
        self.rule = rule
        self.state: RuleState | None = None

    def decide(self, ctx: StepContext) -> StepDecision:
        """Step n: s ← fold(s, gₙ), Δ = d(s, gₙ)/p(s)."""
        if self.state is None:
            self.state = self.rule.initial_state(ctx.theta)
        self.state = self.rule.fold(self.state, ctx.grad)
        displacement = self.rule.direction(self.state, ctx.grad) / self.rule.preconditioner(self.state)
        info = self.rule.summary(self.state)
        return StepDecision(info.pop("lr"), displacement=displacement, info=info)

    def hyperparameters(self) -> dict[str, Any]:
        """The rule's settings."""
        return self.rule.settings()


UpdateRule = GD | ScalarRMSProp | RMSProp | Adam
RULES: dict[str, type[GD]] = {rule.name: rule for rule in (GD, ScalarRMSProp, RMSProp, Adam)}


def get_rule(name: str, **settings: Any) -> GD:
    """The rule registered under ``name`` built with ``settings`` (ValueError naming the valid choices)."""
    if name not in RULES:
        raise ValueError(f"unknown rule {name!r}; valid choices: {', '.join(RULES)}")
    return RULES[name](**settings)
