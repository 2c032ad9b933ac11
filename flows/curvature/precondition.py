"""Preconditioned curvature: the spectrum of P^{-1/2} H P^{-1/2} for a diagonal (or scalar) P ≻ 0.

An adaptive method steps θ ← θ − h P⁻¹ m with a diagonal preconditioner P (Adam and RMSProp:
P = diag(√v̂ + ε)). Its stability is governed by the eigenvalues of P⁻¹H, which are those of the symmetric
S = P^{-1/2} H P^{-1/2} (similar matrices: P⁻¹H = P^{-1/2} S P^{1/2}); Cohen et al. 2022 (arXiv 2207.14484) call
λ₁(P⁻¹H) the preconditioned sharpness. The eigenvectors returned are S's (orthonormal); those of P⁻¹H are
P^{-1/2} w.

The ``torch.optim`` optimizers this module reads (:func:`preconditioner_from`,
:func:`stability_threshold`): each one's step is θ ← θ − h P⁻¹ m with a diagonal P, and its stability threshold on
λ₁(P⁻¹H) (the
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
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from ..validate import check_positive

if TYPE_CHECKING:
    from ..objective.objective import Objective


def check_preconditioner(preconditioner: Tensor | float, dim: int, *, dtype: torch.dtype,
                         device: torch.device) -> Tensor:
    """P's diagonal as a (D,) tensor of θ's dtype and device.

    A positive finite scalar (P = pI) or a (D,) tensor of positive finite entries. Anything else is a ValueError naming
    ``preconditioner``.
    """
    if isinstance(preconditioner, bool):
        raise ValueError(f"preconditioner must be a positive number or a tensor of shape ({dim},), got a bool")
    if isinstance(preconditioner, (int, float)):
        if not (math.isfinite(preconditioner) and preconditioner > 0):
            raise ValueError(f"preconditioner must be positive and finite, got {preconditioner!r}")
        return torch.full((dim,), float(preconditioner), dtype=dtype, device=device)
    if not isinstance(preconditioner, Tensor):
        raise ValueError(f"preconditioner must be a positive number or a tensor of shape ({dim},), got "
                         f"{type(preconditioner).__name__}")
    if preconditioner.is_complex() or tuple(preconditioner.shape) != (dim,):
        raise ValueError(f"preconditioner must be a real tensor of shape ({dim},) (P's diagonal), got "
                         f"{'complex ' if preconditioner.is_complex() else ''}shape {tuple(preconditioner.shape)}")
    p = preconditioner.detach().to(dtype=dtype, device=device)
    if not bool(torch.isfinite(p).all()) or not bool((p > 0).all()):
        bad = int((~torch.isfinite(p) | (p <= 0)).sum())
        raise ValueError(f"preconditioner must have positive finite entries: {bad} of {dim} are not "
                         f"(smallest {float(p.min()):.3g})")
    return p


class PreconditionedOperator:
    """S = P^{-1/2} A P^{-1/2} for a symmetric operator A (``op @ v``) and P = diag(p).

    S @ v = s ⊙ (A @ (s ⊙ v)), s = p^{-1/2}. Shapes: v (D,) or (D, m). Counts the products of the wrapped operator.
    """

    def __init__(self, op, diagonal: Tensor) -> None:
        self.op = op
        self.scale = diagonal.rsqrt()
        self.shape = op.shape
        self.dtype = op.dtype
        self.device = op.device

    @property
    def matvecs(self) -> int:
        """Products of H applied so far."""
        return self.op.matvecs

    def __matmul__(self, v: Tensor) -> Tensor:
        s = self.scale if v.ndim == 1 else self.scale[:, None]
        return s * (self.op @ (s * v))

    def to_dense(self) -> Tensor:
        """The dense P^{-1/2} H P^{-1/2} (small D only)."""
        return self.scale[:, None] * self.op.to_dense() * self.scale[None, :]

    def release(self) -> None:
        """Free the Hessian operator's retained graph."""
        self.op.release()


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
    """P's diagonal (D,) from an optimizer's state, flattened in the order of ``parameters``.

    The default order is the optimizer's own, which is ``model.parameters()``'s for
    ``Optimizer(model.parameters())``.

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


def stability_threshold(rule: float | torch.optim.Optimizer, momentum: float = 0.0) -> float:
    """The largest stable curvature of an update rule: its edge of stability on λ₁(P⁻¹H) (P = I for SGD).

    ``rule`` is a learning rate h (GD with heavy-ball momentum β = ``momentum``: 2(1+β)/h, β = 0 gives 2/h) or a
    ``torch.optim`` optimizer, read from its first parameter group: SGD (momentum β, dampening 0) 2(1+β)/h,
    Nesterov 2(1+β)/((1+2β)h), Adam/AdamW (β₁) (2+2β₁)/((1−β₁)h), RMSprop 2/h.

    Args:
        rule: the learning rate h > 0, or the optimizer.
        momentum: β ∈ [0, 1) when ``rule`` is a rate (an optimizer carries its own).

    Returns:
        The threshold, a float > 0.
    """
    if isinstance(rule, torch.optim.Optimizer):
        if momentum:
            raise ValueError("momentum: an optimizer carries its own; pass momentum only with a learning rate")
        return _optimizer_threshold(rule)
    lr = check_positive("lr", rule)
    momentum = check_positive("momentum", momentum, allow_zero=True)
    if momentum >= 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    return 2 * (1 + momentum) / lr


BatchRegime = Literal["large", "small"]
BATCH_REGIMES: tuple[str, ...] = ("large", "small")


def batch_sharpness_threshold(lr: float, momentum: float = 0.0, batch: BatchRegime = "large") -> float:
    """Where the batch sharpness of SGD with heavy-ball momentum β (v ← βv + g_B, θ ← θ − hv) plateaus.

    Andreyev & Beneventano (arXiv 2604.14108): 2(1 − β)/h for small batches (momentum amplifies the batch noise),
    2(1 + β)/h for large ones (the full-batch edge). β = 0 gives 2/h for both, the edge of stochastic stability
    (arXiv 2412.20553).

    Args:
        lr: the rate h > 0.
        momentum: β ∈ [0, 1).
        batch: ``"large"`` or ``"small"``, the regime whose plateau is asked.
    """
    if batch not in BATCH_REGIMES:
        raise ValueError(f"batch must be one of {BATCH_REGIMES}, got {batch!r}")
    large = stability_threshold(lr, momentum)
    return large if batch == "large" else large * (1 - momentum) / (1 + momentum)


def _optimizer_threshold(optimizer: torch.optim.Optimizer) -> float:
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


def objective_preconditioner(objective: Objective, optimizer: torch.optim.Optimizer) -> Tensor:
    """P's diagonal in an objective's parameter order.

    The objective must be built by ``Objective.from_module`` from the module this optimizer trains; P follows its
    layout and is checked against its dimension.
    """
    model, layout = objective.model, objective.layout
    if model is None or layout is None:
        raise ValueError("objective must come from Objective.from_module to match an optimizer's parameters")
    named = dict(model.named_parameters())
    p = preconditioner_from(optimizer, [named[name] for name in layout.names])
    if p.numel() != objective.dim:
        raise ValueError(f"optimizer: its parameters have {p.numel()} entries, the objective {objective.dim}")
    return p
