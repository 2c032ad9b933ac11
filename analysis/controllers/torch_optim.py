"""The ``torch.optim`` forms of the step controllers: ``XOptimizer(model.parameters(), **settings)``.

Each class takes exactly its controller's settings, as keyword arguments with the same defaults (a test keeps the
two signatures equal), builds the controller and runs it through :class:`~analysis.controllers.base.ControllerOptimizer`
(the closure convention; parameter groups, ``lr`` as a schedule factor, decoupled ``weight_decay``).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor

from .adaptive import PAL, Alice, WNGrad
from .base import Constant, ControllerOptimizer
from .curvature import ALIG, CorridorLR, DriftAdjustedLR, SPSMax

Params = Iterable[Tensor] | Iterable[dict]


class ConstantOptimizer(ControllerOptimizer):
    """``torch.optim`` form of :class:`~analysis.controllers.base.Constant` (its settings, same defaults)."""

    def __init__(self, params: Params, lr: float = 0.1, momentum: float = 0.0) -> None:
        super().__init__(params, Constant(lr=lr, momentum=momentum))


class CorridorLROptimizer(ControllerOptimizer):
    """``torch.optim`` form of :class:`~analysis.controllers.curvature.CorridorLR` (its settings, same defaults)."""

    def __init__(self, params: Params, e_star: float = 0.0, *, scale: float = 1.0, max_lr: float | None = None,
                 outside: str = "polyak", fallback_lr: float | None = None, detector: Any | None = None) -> None:
        controller = CorridorLR(
            e_star=e_star, scale=scale, max_lr=max_lr, outside=outside, fallback_lr=fallback_lr, detector=detector)
        super().__init__(params, controller)


class DriftAdjustedLROptimizer(ControllerOptimizer):
    """``torch.optim`` form of :class:`~analysis.controllers.curvature.DriftAdjustedLR`.

    Its settings, with the same defaults.
    """

    def __init__(self, params: Params, p: float = 1.0, *, max_lr: float = 5.0, hvp: str = "exact", start: int = 0,
                 stop: int | None = None, base_lr: float | None = None) -> None:
        super().__init__(params, DriftAdjustedLR(p=p, max_lr=max_lr, hvp=hvp, start=start, stop=stop, base_lr=base_lr))


class WNGradOptimizer(ControllerOptimizer):
    """``torch.optim`` form of :class:`~analysis.controllers.adaptive.WNGrad` (its settings, same defaults)."""

    def __init__(self, params: Params, lr: float = 0.1, *, per_row: bool = False,
                 shapes: list[tuple[int, ...]] | None = None) -> None:
        super().__init__(params, WNGrad(lr=lr, per_row=per_row, shapes=shapes))


class PALOptimizer(ControllerOptimizer):
    """``torch.optim`` form of :class:`~analysis.controllers.adaptive.PAL` (its settings, same defaults)."""

    def __init__(self, params: Params, mu: float = 1.0, s_max: float = 3.16, beta: float = 0.4,
                 alpha: float = 1 / 0.6, epsilon: float = 1e-10) -> None:
        super().__init__(params, PAL(mu=mu, s_max=s_max, beta=beta, alpha=alpha, epsilon=epsilon))


class AliceOptimizer(ControllerOptimizer):
    """``torch.optim`` form of :class:`~analysis.controllers.adaptive.Alice` (its settings, same defaults)."""

    def __init__(self, params: Params, lr: float = 0.001, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-08, w1: float = 0.0, w2: float = 0.0, phi: float | None = None, omega: float = 1.0,
                 limit_method: str = "adam", lr_min: float = 0.0, lr_max: float | None = None, hess_comp: str = "abs",
                 grad_glass: bool = True, quick_steps: int = 3, seed: int = 0) -> None:
        controller = Alice(
            lr=lr, betas=betas, eps=eps, w1=w1, w2=w2, phi=phi, omega=omega, limit_method=limit_method,
            lr_min=lr_min, lr_max=lr_max, hess_comp=hess_comp, grad_glass=grad_glass, quick_steps=quick_steps,
            seed=seed)
        super().__init__(params, controller)


class SPSMaxOptimizer(ControllerOptimizer):
    """``torch.optim`` form of :class:`~analysis.controllers.curvature.SPSMax` (its settings, same defaults)."""

    def __init__(self, params: Params, c: float = 0.5, max_lr: float = 1.0, e_star: float = 0.0) -> None:
        super().__init__(params, SPSMax(c=c, max_lr=max_lr, e_star=e_star))


class ALIGOptimizer(ControllerOptimizer):
    """``torch.optim`` form of :class:`~analysis.controllers.curvature.ALIG` (its settings, same defaults)."""

    def __init__(self, params: Params, max_lr: float = 1.0, delta: float = 1e-05, e_star: float = 0.0) -> None:
        super().__init__(params, ALIG(max_lr=max_lr, delta=delta, e_star=e_star))
