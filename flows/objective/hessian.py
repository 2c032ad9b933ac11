"""The Hessian of an objective as a matrix-like operator (curvlinops style): ``H @ v``, ``H @ V``, ``to_scipy()``.

It lives beside the objective (``Objective.hessian_operator`` returns one) and reads only the structural
:class:`SecondOrderObjective` protocol, so that the objective package never imports the curvature package.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from .autodiff import vjp


class SecondOrderObjective(Protocol):
    """What :class:`HessianOperator` needs of an objective: E = reduce(Σ pieces(θ)) on θ ∈ Rᴰ, and its HVP."""

    @property
    def dim(self) -> int:
        """D, the length of θ."""
        ...

    @property
    def pieces(self) -> Sequence[Callable[[Tensor], Tensor]]:
        """The summands of E, each θ ↦ a 0-d tensor."""
        ...

    def batches_products(self, device: torch.device) -> bool:
        """Whether a block of products runs as one batched backward (else one backward per vector)."""
        ...

    def check_theta(self, theta: Tensor, argname: str = ...) -> Tensor:
        """θ checked for shape, device and dtype."""
        ...

    def check_second_order(self, theta: Tensor) -> None:
        """Refuse models whose second derivatives torch would drop silently."""
        ...

    def hvp(self, theta: Tensor, v: Tensor) -> Tensor:
        """H(θ)v for v of shape (D,) or (m, D)."""
        ...

    def _reduce(self, value: Tensor) -> Tensor: ...


class HessianOperator:
    """H = ∇²E(θ) at a fixed θ, shape (D, D), acting on (D,) vectors or (D, m) blocks.

    With ``retain_graph=True`` (default) the gradient graph ∇E(θ) is built
    once, here, and every product is one extra backward pass through it
    (cheaper per vector than a fresh HVP: the cost is in docs/benchmarks.md). Call
    :meth:`release` (or drop the operator) to free that graph. With
    ``retain_graph=False`` each product recomputes the graph (less memory).

    Attributes:
        theta: the point, (D,).
        gradient: ∇E(θ), (D,), a free by-product of building the graph.
        loss: E(θ), 0-d, another (None until the graph is built).
        matvecs: number of Hessian-vector products applied so far.
    """

    def __init__(self, objective: SecondOrderObjective, theta: Tensor, *, retain_graph: bool = True) -> None:
        self.objective = objective
        self.theta = objective.check_theta(theta).detach()
        objective.check_second_order(self.theta)
        self.shape = (objective.dim, objective.dim)
        self.dtype, self.device = self.theta.dtype, self.theta.device
        self.matvecs = 0
        self._retain = retain_graph
        self._leaf: Tensor | None = None
        self._grads: list[Tensor] = []
        self.gradient: Tensor | None = None
        self.loss: Tensor | None = None
        if retain_graph:
            self._build()

    def _build(self) -> None:
        leaf = self.theta.clone().requires_grad_(True)
        grads, total, loss = [], torch.zeros_like(leaf), torch.zeros((), dtype=leaf.dtype, device=leaf.device)
        with torch.enable_grad():
            for piece in self.objective.pieces:
                value = piece(leaf)
                loss = loss + value.detach()
                (g,) = torch.autograd.grad(value, leaf, grad_outputs=torch.ones_like(value),
                                           create_graph=True)
                if leaf.is_complex():
                    g = g.conj()
                grads.append(g)
                total = total + g.detach()
        self._leaf, self._grads = leaf, grads
        self.loss = self.objective._reduce(loss)
        self.gradient = self.objective._reduce(total)

    def release(self) -> None:
        """Free the retained gradient graph."""
        self._leaf, self._grads = None, []

    def _apply_rows(self, rows: Tensor) -> Tensor:
        """H applied to each row of ``rows`` ((D,) or (m, D))."""
        rows = rows.to(device=self.device, dtype=self.dtype)
        self.matvecs += 1 if rows.ndim == 1 else rows.shape[0]
        if not self._retain:
            return self.objective.hvp(self.theta, rows)
        if self._leaf is None:
            self._build()
        out: Tensor | None = None
        leaf = self._leaf
        assert leaf is not None  # built just above
        cplx = leaf.is_complex()
        for g in self._grads:
            batched = self.objective.batches_products(self.device)
            hv = vjp(g, leaf, rows.conj(), True, batched).conj() if cplx else vjp(g, leaf, rows, True, batched)
            out = hv if out is None else out + hv  # the first piece's product as it is: no zero buffer
        assert out is not None  # an objective has at least one piece
        return self.objective._reduce(out)

    def __matmul__(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"HessianOperator @ x needs a torch.Tensor, got {type(x).__name__}")
        if x.ndim == 1:
            if x.shape[0] != self.shape[1]:
                raise ValueError(f"x must have shape ({self.shape[1]},), got {tuple(x.shape)}")
            return self._apply_rows(x)
        if x.ndim == 2 and x.shape[0] == self.shape[1]:
            return self._apply_rows(x.T.contiguous()).T
        raise ValueError(f"x must have shape ({self.shape[1]},) or ({self.shape[1]}, m), got {tuple(x.shape)}")

    def to_dense(self) -> Tensor:
        """The dense (D, D) matrix (small D only)."""
        return self @ torch.eye(self.shape[0], dtype=self.dtype, device=self.device)

    def to_scipy(self):
        """A ``scipy.sparse.linalg.LinearOperator`` (numpy in, numpy out), e.g. for ``eigsh``."""
        from scipy.sparse.linalg import LinearOperator

        np_dtype = torch.empty((), dtype=self.dtype).numpy().dtype

        def matmat(x: np.ndarray) -> np.ndarray:
            t = torch.as_tensor(np.ascontiguousarray(x), device=self.device).to(self.dtype)
            return (self @ t).detach().cpu().numpy()

        def matvec(x: np.ndarray) -> np.ndarray:
            return matmat(np.asarray(x).reshape(-1))

        return LinearOperator(self.shape, matvec=matvec, rmatvec=matvec, matmat=matmat,
                              dtype=np_dtype)

    def __repr__(self) -> str:
        return f"HessianOperator(shape={self.shape}, dtype={self.dtype}, device={self.device})"


__all__ = ["HessianOperator", "SecondOrderObjective"]
