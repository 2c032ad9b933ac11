"""Full-batch Adam, RMSProp and momentum SGD on an Objective, through ``gradient_descent``'s runner.

:class:`OptimizerController` wraps a ``torch.optim`` optimizer around one flat parameter θ ∈ Rᴰ: at each step the
runner's gradient becomes that parameter's ``.grad``, the optimizer steps, and its displacement Δ is applied
(θ ← θ − Δ exactly). Recording, callbacks, divergence handling and the Trajectory are ``gradient_descent``'s own::

    ctrl = OptimizerController(torch.optim.Adam, lr=1e-3, betas=(0.9, 0.999))
    traj = gradient_descent(obj, θ0, lr=1e-3, steps=500, controller=ctrl,
                            callbacks=[PreconditionedSharpness(ctrl, every=10)])

Each optimizer's step is θ ← θ − h P⁻¹ m with a diagonal P, and its stability threshold on λ₁(P⁻¹H) (the
*preconditioned sharpness*, Cohen et al. 2022, arXiv 2207.14484) is, for base rate h:

=================================== ======================================= ===================================
optimizer (torch defaults noted)    P (diagonal)                            threshold on λ₁(P⁻¹H)
=================================== ======================================= ===================================
SGD, momentum μ (dampening 0)       I                                       2(1 + μ)/h
SGD, Nesterov momentum μ            I                                       2(1 + μ)/((1 + 2μ) h)
RMSprop (α, ε), momentum μ          √v + ε  (centered: √(v − ḡ²) + ε)        2(1 + μ)/h
Adam / AdamW (β₁, β₂, ε)            √(v/(1 − β₂ᵗ)) + ε (amsgrad: max v)      (2 + 2β₁)/((1 − β₁) h)
=================================== ======================================= ===================================

Adam's threshold is the paper's: its EMA of gradients with bias correction folded into the rate, as the paper
states it (38/h for β₁ = 0.9). AdamW's decoupled weight decay is not part of P; the threshold ignores it.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from .gd import StepContext, StepDecision
from .objective import Objective
from .spectrum import EigenTracker
from .trajectory import Recorder

SUPPORTED = ("SGD", "RMSprop", "Adam", "AdamW")


def _kind(optimizer: torch.optim.Optimizer) -> str:
    for name in SUPPORTED:
        if type(optimizer).__name__ == name:
            return name
    raise ValueError(f"optimizer must be one of torch.optim.{', torch.optim.'.join(SUPPORTED)}, got "
                     f"{type(optimizer).__name__}")


def _ordered(optimizer: torch.optim.Optimizer, parameters: Iterable[Tensor] | None) -> list[Tensor]:
    owned = [p for group in optimizer.param_groups for p in group["params"]]
    if parameters is None:
        return owned
    given = list(parameters)
    known = {id(p) for p in owned}
    missing = [i for i, p in enumerate(given) if id(p) not in known]
    if missing:
        raise ValueError(f"parameters: {len(missing)} of the {len(given)} given (positions {missing[:5]}) are not "
                         "optimised by this optimizer: its state belongs to another parameter set")
    return given


def _group(optimizer: torch.optim.Optimizer, param: Tensor) -> dict:
    return next(g for g in optimizer.param_groups if any(p is param for p in g["params"]))


def preconditioner_from(optimizer: torch.optim.Optimizer, parameters: Iterable[Tensor] | None = None) -> Tensor:
    """P's diagonal (D,) from an optimizer's state, flattened in the order of ``parameters`` (default: the
    optimizer's own order, which is ``model.parameters()``'s for ``Optimizer(model.parameters())``).

    SGD: ones. RMSprop: √v + ε (centered: √(v − ḡ²) + ε). Adam/AdamW: √(v/(1 − β₂ᵗ)) + ε (max v with amsgrad),
    exactly the denominators ``torch.optim`` divides by. A parameter without state (no step taken yet) is an error.
    """
    kind = _kind(optimizer)
    pieces = []
    for param in _ordered(optimizer, parameters):
        if kind == "SGD":
            pieces.append(torch.ones(param.numel(), dtype=param.dtype, device=param.device))
            continue
        state = optimizer.state.get(param, {})
        if not state:
            raise ValueError("optimizer: a parameter has no optimizer state yet (take one step first, or pass the "
                             "parameters this optimizer has stepped)")
        group = _group(optimizer, param)
        if kind == "RMSprop":
            v = state["square_avg"]
            if group["centered"]:
                v = v - state["grad_avg"] ** 2
            denom = v.sqrt() + group["eps"]
        else:
            v = state["max_exp_avg_sq"] if group["amsgrad"] else state["exp_avg_sq"]
            step = float(state["step"])
            denom = (v / (1 - group["betas"][1] ** step)).sqrt() + group["eps"]
        pieces.append(denom.detach().reshape(-1))
    return torch.cat(pieces)


def stability_threshold(optimizer: torch.optim.Optimizer) -> float:
    """The optimizer's threshold on λ₁(P⁻¹H) for its first group's rate and momentum (module table)."""
    kind = _kind(optimizer)
    group = optimizer.param_groups[0]
    h = float(group["lr"])
    if kind in ("Adam", "AdamW"):
        beta1 = float(group["betas"][0])
        return (2 + 2 * beta1) / ((1 - beta1) * h)
    mu = float(group.get("momentum", 0.0))
    if kind == "SGD" and group.get("nesterov", False):
        return 2 * (1 + mu) / ((1 + 2 * mu) * h)
    if kind == "SGD" and group.get("dampening", 0.0):
        raise ValueError("optimizer: SGD with dampening ≠ 0 has no threshold here (use dampening=0)")
    return 2 * (1 + mu) / h


class OptimizerController:
    """A ``torch.optim`` optimizer as a ``gradient_descent`` controller on the flat θ (module docstring).

    Args:
        optimizer_class: ``torch.optim.SGD``, ``RMSprop``, ``Adam`` or ``AdamW``.
        **hyperparameters: its keyword arguments (``lr`` required).

    Attributes:
        optimizer: the optimizer, over one flat parameter (created at the first step, on θ's device and dtype).
    """

    owns_momentum = True  # gradient_descent's own heavy-ball momentum must stay 0

    def __init__(self, optimizer_class: type[torch.optim.Optimizer], **hyperparameters: Any) -> None:
        name = getattr(optimizer_class, "__name__", repr(optimizer_class))
        if name not in SUPPORTED or not (isinstance(optimizer_class, type)
                                         and issubclass(optimizer_class, torch.optim.Optimizer)):
            raise ValueError(f"optimizer_class must be one of torch.optim.{', torch.optim.'.join(SUPPORTED)}, got "
                             f"{name}")
        lr = hyperparameters.get("lr")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"lr must be given as a positive number, got {lr!r}")
        probe = optimizer_class([nn.Parameter(torch.zeros(1))], **hyperparameters)  # torch checks the rest now
        stability_threshold(probe)
        self.optimizer_class, self.hyperparameters_ = optimizer_class, dict(hyperparameters)
        self.param: nn.Parameter | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.steps_taken = 0

    def hyperparameters(self) -> dict:
        return {"optimizer": self.optimizer_class.__name__,
                **{k: list(v) if isinstance(v, tuple) else v for k, v in self.hyperparameters_.items()}}

    def decide(self, ctx: StepContext) -> StepDecision:
        if self.param is None:
            self.param = nn.Parameter(ctx.theta.detach().clone())
            self.optimizer = self.optimizer_class([self.param], **self.hyperparameters_)
        assert self.optimizer is not None
        before = ctx.theta.detach()
        with torch.no_grad():
            self.param.copy_(before)
        self.param.grad = ctx.grad.detach().clone()
        self.optimizer.step()
        self.steps_taken += 1
        displacement = before - self.param.detach()
        return StepDecision(float(self.optimizer.param_groups[0]["lr"]), displacement=displacement)

    def preconditioner(self) -> Tensor:
        """P's diagonal after the latest step (the P that step divided by)."""
        if self.optimizer is None:
            raise RuntimeError("the optimizer has not taken a step yet: no preconditioner")
        return preconditioner_from(self.optimizer)

    def threshold(self) -> float:
        """The stability threshold on λ₁(P⁻¹H) (module table)."""
        probe = self.optimizer or self.optimizer_class([nn.Parameter(torch.zeros(1))], **self.hyperparameters_)
        return stability_threshold(probe)


class PreconditionedSharpness:
    """A ``gradient_descent`` callback recording, every ``every`` steps, ``preconditioned_sharpness`` = λ₁(P⁻¹H) at
    θₙ with the P step n divided by, and ``stability_threshold`` (its edge), from a warm-started tracker."""

    def __init__(self, controller: OptimizerController, every: int = 1, tol: float = 1e-3) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        self.controller, self.every = controller, every
        self.tracker = EigenTracker(k=1, tol=tol)

    def __call__(self, ctx: StepContext, rec: Recorder) -> None:
        if ctx.step % self.every or self.controller.optimizer is None:
            return
        if self.controller.steps_taken != ctx.step + 1:
            return  # the last row: no step was taken from it, so no P belongs to it
        row = len(rec.times) - 1
        pairs = self.tracker.update(ctx.objective, ctx.theta, self.controller.preconditioner())
        rec.set_metric("preconditioned_sharpness", row, float(pairs.values[0]))
        rec.set_metric("stability_threshold", row, self.controller.threshold())


def objective_preconditioner(objective: Objective, optimizer: torch.optim.Optimizer) -> Tensor:
    """P's diagonal for an objective built by ``Objective.from_module`` from the module this optimizer trains,
    in the objective's parameter order (its layout), checked against its dimension."""
    model, layout = objective.model, objective.layout
    if model is None or layout is None:
        raise ValueError("objective must come from Objective.from_module to match an optimizer's parameters")
    named = dict(model.named_parameters())
    p = preconditioner_from(optimizer, [named[name] for name in layout.names])
    if p.numel() != objective.dim:
        raise ValueError(f"optimizer: its parameters have {p.numel()} entries, the objective {objective.dim}")
    return p
