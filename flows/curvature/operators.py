"""Matrix-like curvature operators (curvlinops style): ``A @ v``, ``A @ V``, a ``matvecs`` counter.

The Hessian itself is ``flows.objective.hessian.HessianOperator``; here are the operators built on it or
beside it: dense matrices, blocks of parameters, deflation, the Gauss-Newton matrix.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..objective.objective import Objective


class MatrixOperator:
    """A dense symmetric matrix A (D, D) as an operator: ``A @ v``, ``A @ V``, a ``matvecs`` counter.

    For testing eigensolvers against matrices with constructed spectra, and for
    curvature matrices small enough to hold (D ≲ 10⁴).
    """

    def __init__(self, matrix: Tensor) -> None:
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"matrix must be square, got shape {tuple(matrix.shape)}")
        self.matrix = matrix
        self.shape = tuple(matrix.shape)
        self.dtype, self.device = matrix.dtype, matrix.device
        self.matvecs = 0

    def __matmul__(self, x: Tensor) -> Tensor:
        self.matvecs += 1 if x.ndim == 1 else x.shape[1]
        return self.matrix @ x

    def to_dense(self) -> Tensor:
        """The dense (D, D) matrix."""
        return self.matrix

    def release(self) -> None:
        """Nothing to free (the matrix is the caller's)."""


class SubsetOperator:
    """The block H_SS = Eₛᵀ H Eₛ of an operator for a subset S of the coordinates of θ (|S| × |S|).

    ``SubsetOperator.of_parameters(H, layout, names)`` takes S = the coordinates of the named parameters (a
    layer's weights and biases, say), so any estimator (top eigenpairs, trace) gives that layer's curvature.
    A product pads v_S with zeros to (D,), applies the full operator and keeps the S rows: one full HVP each,
    and the model is never copied.
    """

    def __init__(self, op, index: Tensor) -> None:
        self.op, self.index = op, index.to(op.device)
        self.shape = (int(index.numel()), int(index.numel()))
        self.dtype, self.device = op.dtype, op.device

    @classmethod
    def of_parameters(cls, op, layout, names) -> SubsetOperator:
        """The coordinates of the parameters ``names`` (exact names, or prefixes such as ``"0."`` for a module)."""
        offsets, start = {}, 0
        for name, size in zip(layout.names, layout.sizes):
            offsets[name] = (start, start + size)
            start += size
        chosen = [n for n in layout.names if any(n == want or n.startswith(want) for want in names)]
        unknown = [want for want in names if not any(n == want or n.startswith(want) for n in layout.names)]
        if unknown or not chosen:
            raise ValueError(f"no parameter matches {unknown or list(names)}; parameters: {', '.join(layout.names)}")
        index = torch.cat([torch.arange(*offsets[n]) for n in chosen])
        return cls(op, index)

    @property
    def matvecs(self) -> int:
        """Products applied so far (the full operator's count)."""
        return self.op.matvecs

    def __matmul__(self, v: Tensor) -> Tensor:
        full = torch.zeros((self.op.shape[0],) + tuple(v.shape[1:]), dtype=v.dtype, device=v.device)
        full[self.index] = v
        return (self.op @ full)[self.index]

    def release(self) -> None:
        """Free the full operator's retained graph, if it holds one."""
        release = getattr(self.op, "release", None)
        if release is not None:
            release()


class GGNOperator:
    """The generalised Gauss–Newton matrix G = Σᵢ Jᵢᵀ Hᵢ Jᵢ at θ, shape (D, D), acting on (D,) or (D, m).

    Jᵢ = ∂ model_θ(xᵢ)/∂θ is the Jacobian of micro-batch i's outputs and Hᵢ = ∂² wᵢ·loss_fn(out, yᵢ)/∂out²
    the Hessian of its loss in the outputs (for ½‖f − y‖² the identity over examples; for cross-entropy
    diag(p) − ppᵀ per example). G is positive semi-definite for convex losses, and equals the Hessian when the
    model is linear in θ. Each product is a forward-mode Jv, an output-space HVP and a backward Jᵀ(·):
    ``torch.func.jvp`` and ``torch.func.vjp`` of the outputs, no second derivatives of the network.
    Needs an objective built by ``Objective.from_module`` (it knows where the outputs are).
    """

    def __init__(self, objective: Objective, theta: Tensor) -> None:
        parts = getattr(objective, "module_parts", None)
        if parts is None:
            raise ValueError("a Gauss–Newton product needs the model's outputs: build the objective with "
                             "Objective.from_module")
        self.objective, self.parts = objective, parts
        self.theta = objective.check_theta(theta).detach()
        self.shape = (objective.dim, objective.dim)
        self.dtype, self.device = self.theta.dtype, self.theta.device
        self.matvecs = 0

    def _apply(self, v: Tensor) -> Tensor:
        total = torch.zeros_like(v)
        for i in range(len(self.parts.batches)):
            out, jv = torch.func.jvp(  # type: ignore[misc]  # torch stubs: has_aux
                lambda t, i=i: self.parts.outputs(t, i), (self.theta,), (v,))
            loss_grad = torch.func.grad(lambda o, i=i: self.parts.loss(o, i, self.theta))
            _, hjv = torch.func.jvp(loss_grad, (out.detach(),), (jv,))  # type: ignore[misc]
            _, pullback = torch.func.vjp(  # type: ignore[misc]
                lambda t, i=i: self.parts.outputs(t, i), self.theta)
            total = total + pullback(hjv)[0]
        return self.objective._reduce(total)

    def __matmul__(self, x: Tensor) -> Tensor:
        x = x.to(device=self.device, dtype=self.dtype)
        if x.ndim == 1:
            self.matvecs += 1
            return self._apply(x)
        self.matvecs += x.shape[1]
        return torch.stack([self._apply(col) for col in x.T], dim=1)

    def to_dense(self) -> Tensor:
        """The dense matrix (small D only)."""
        return self @ torch.eye(self.shape[0], dtype=self.dtype, device=self.device)

    def release(self) -> None:
        """Nothing is retained between products."""


class DeflatedOperator:
    """(I − UUᵀ) A (I − UUᵀ) + σ UUᵀ for an operator A and orthonormal columns U (D, r).

    A restricted to the orthogonal complement of span U, with U's own directions given the eigenvalue σ (``shift``).

    σ is the k-th value found, so that rounding that leaks U back into a Krylov space can only produce a Ritz
    value equal to it, never one beyond it in any order (LA, SA or LM); with σ = 0 a positive definite H would
    show a spurious smallest eigenvalue 0.

    The verification pass of :func:`flows.curvature.spectrum.symmetric_eigenpairs` runs Lanczos on it from a start
    vector orthogonal to U: a Krylov space of one vector holds one copy of each eigenvalue, so further copies
    of a repeated eigenvalue (or values hidden from the first start) show up only in a fresh start outside the
    span of the vectors already found. One product of A per product.
    """

    def __init__(self, op, basis: Tensor, shift: float = 0.0) -> None:
        self.op = op
        self.basis = basis.to(device=op.device, dtype=op.dtype)
        self.shift = float(shift)
        self.shape = tuple(op.shape)
        self.dtype, self.device = op.dtype, op.device

    @property
    def matvecs(self) -> int:
        """Products applied so far (the underlying operator's count)."""
        return self.op.matvecs

    def project(self, x: Tensor) -> Tensor:
        """Project x off span U: x − U(Uᵀx), applied twice ("twice is enough" against cancellation)."""
        for _ in range(2):
            x = x - self.basis @ (self.basis.T @ x)
        return x

    def __matmul__(self, x: Tensor) -> Tensor:
        out = self.project(self.op @ self.project(x))
        return out + self.shift * (self.basis @ (self.basis.T @ x)) if self.shift else out

    def release(self) -> None:
        """Nothing to free here (the wrapped operator is the caller's)."""
