"""Learning-rate controllers: one interface for the corridor rate, SPS_max, ALI-G, DAL-p, WNGrad, PAL, Alice, GD.

Each controller works two ways:

* as ``controller=`` in :func:`flows.gradient_descent` on a flat θ — it sees
  the step context and returns (h, d, info); ``info`` is recorded per step;
* as a ``torch.optim.Optimizer`` (``CorridorLROptimizer``, ``PALOptimizer``, … in ``torch_optim``,
  or ``ControllerOptimizer(params, controller)``) in an ordinary training loop
  with the closure convention.

``CONTROLLERS`` maps names to classes; :func:`get_controller` builds one by name.
"""
from __future__ import annotations

from typing import Any

from .adaptive import PAL, Alice, WNGrad
from .base import ClosureObjective, Constant, ControllerOptimizer, StepController, optimizer_class
from .curvature import ALIG, CorridorLR, DriftAdjustedLR, SPSMax
from .optimizers import OptimizerController
from .stochastic import SGDController
from .torch_optim import (
    AliceOptimizer,
    ALIGOptimizer,
    ConstantOptimizer,
    CorridorLROptimizer,
    DriftAdjustedLROptimizer,
    PALOptimizer,
    SPSMaxOptimizer,
    WNGradOptimizer,
)

CONTROLLERS: dict[str, type[StepController]] = {
    "constant": Constant, "clr": CorridorLR, "dal": DriftAdjustedLR, "wngrad": WNGrad, "pal": PAL, "alice": Alice,
    "sps": SPSMax, "alig": ALIG,
}



def get_controller(name: str, **settings: Any) -> StepController:
    """``CONTROLLERS[name](**settings)``, with a clear error for an unknown name."""
    if name not in CONTROLLERS:
        raise ValueError(f"unknown controller {name!r}; choose one of {sorted(CONTROLLERS)}")
    return CONTROLLERS[name](**settings)


__all__ = [
    "CONTROLLERS", "get_controller", "StepController", "ControllerOptimizer", "ClosureObjective", "optimizer_class",
    "Constant", "CorridorLR", "DriftAdjustedLR", "WNGrad", "PAL", "Alice", "SPSMax", "ALIG",
    "ConstantOptimizer", "CorridorLROptimizer", "DriftAdjustedLROptimizer", "WNGradOptimizer", "PALOptimizer",
    "AliceOptimizer", "SPSMaxOptimizer", "ALIGOptimizer", "OptimizerController", "SGDController",
]
