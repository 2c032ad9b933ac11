"""Full-batch Adam, RMSProp and momentum SGD on an Objective, through ``gradient_descent``'s runner.

:class:`OptimizerController` wraps a ``torch.optim`` optimizer around one flat parameter θ ∈ Rᴰ: at each step the
runner's gradient becomes that parameter's ``.grad``, the optimizer steps, and its displacement Δ is applied
(θ ← θ − Δ exactly). Recording, callbacks, divergence handling and the Trajectory are ``gradient_descent``'s own::

    ctrl = OptimizerController(torch.optim.Adam, lr=1e-3, betas=(0.9, 0.999))
    traj = gradient_descent(obj, θ0, lr=1e-3, steps=500, controller=ctrl,
                            callbacks=[PreconditionedSharpness(ctrl, every=10)])

The preconditioners and stability thresholds of these optimizers: ``flows.curvature.precondition``.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from flows.curvature.precondition import SUPPORTED, preconditioner_from, stability_threshold
from flows.dynamics.gd import Controller, StepContext, StepDecision


class OptimizerController(Controller):
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
        """The optimizer's class name and keyword arguments (tuples as lists)."""
        return {"optimizer": self.optimizer_class.__name__,
                **{k: list(v) if isinstance(v, tuple) else v for k, v in self.hyperparameters_.items()}}

    def decide(self, ctx: StepContext) -> StepDecision:
        """Let the optimizer step one flat parameter from θₙ with gₙ as its gradient; the displacement it made."""
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


