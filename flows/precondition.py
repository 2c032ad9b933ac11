"""Preconditioned curvature: the spectrum of P^{-1/2} H P^{-1/2} for a diagonal (or scalar) P ≻ 0.

An adaptive method steps θ ← θ − h P⁻¹ m with a diagonal preconditioner P (Adam and RMSProp:
P = diag(√v̂ + ε)). Its stability is governed by the eigenvalues of P⁻¹H, which are those of the symmetric
S = P^{-1/2} H P^{-1/2} (similar matrices: P⁻¹H = P^{-1/2} S P^{1/2}); Cohen et al. 2022 (arXiv 2207.14484) call
λ₁(P⁻¹H) the preconditioned sharpness. The eigenvectors returned are S's (orthonormal); those of P⁻¹H are
P^{-1/2} w.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def check_preconditioner(preconditioner: Tensor | float, dim: int, *, dtype: torch.dtype,
                         device: torch.device) -> Tensor:
    """P's diagonal as a (D,) tensor of θ's dtype and device: a positive finite scalar (P = pI) or a (D,) tensor
    of positive finite entries. Anything else is a ValueError naming ``preconditioner``."""
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
    """S = P^{-1/2} A P^{-1/2} for a symmetric operator A (``op @ v``) and P = diag(p): S @ v = s ⊙ (A @ (s ⊙ v)),
    s = p^{-1/2}. Shapes: v (D,) or (D, m). Counts the products of the wrapped operator."""

    def __init__(self, op, diagonal: Tensor) -> None:
        self.op = op
        self.scale = diagonal.rsqrt()
        self.shape, self.dtype, self.device = op.shape, op.dtype, op.device

    @property
    def matvecs(self) -> int:
        return self.op.matvecs

    def __matmul__(self, v: Tensor) -> Tensor:
        s = self.scale if v.ndim == 1 else self.scale[:, None]
        return s * (self.op @ (s * v))

    def to_dense(self) -> Tensor:
        return self.scale[:, None] * self.op.to_dense() * self.scale[None, :]

    def release(self) -> None:
        self.op.release()
