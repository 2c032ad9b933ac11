"""Thick-restart Lanczos (Wu & Simon 2000) with Davidson warm starts, for extreme eigenpairs of a symmetric H.

The state is an orthonormal basis stored by rows: m *done* rows Q_d (H applied)
followed by p *pending* rows Q_p (in the basis, not yet multiplied), and the
projected matrix A ((m + p) × m, float64, on the host), related by the identity

    H Q_dᵀ = Q_dᵀ A_d + Q_pᵀ A_p        (up to rounding),

column j of A holding the coefficients of H q_j in the basis (A[i, j] = q_iᵀHq_j
from the orthogonalisation, and the norm of the remainder on the new pending
row it creates). Ritz pairs (θᵢ, uᵢ = Q_dᵀsᵢ) come from eigh of
sym(A_d) = (A_d + A_dᵀ)/2, and their residuals follow from the identity without
touching a D-vector:

    ‖H uᵢ − θᵢ uᵢ‖² = ‖K sᵢ‖² + ‖A_p sᵢ‖²,    K = (A_d − A_dᵀ)/2

(K holds the rounding asymmetry, ~eps‖H‖). With one pending row this is plain
Lanczos and ‖A_p sᵢ‖ = β|s_{m−1,i}|. A warm start (previous eigenvectors) is a
block of pending rows multiplied at once; afterwards the pending direction of
the least converged wanted pair's residual is multiplied next, which is
Davidson's choice made exactly from A.

Each step applies H to one vector, subtracts the coefficients the identity
already knows (β_{j−1}; the arrow after a restart), then α_j, then one full
classical Gram–Schmidt pass against the basis (a second when the first removes
more than half of the norm², DGKS), and sends ONE small tensor (the new column
of A and the remainder's norm) to the host. At ``max_basis`` done rows the
basis is thick-restarted onto the best Ritz vectors Q_d ← SᵀQ_d (in place,
column block by column block) with A ← [[SᵀA_dS], [A_pS]] (Wu & Simon's
arrowhead): no HVP.

Memory: the basis is (max_basis + p + 1) × D in θ's dtype, in column chunks; at
the end the Ritz vectors are formed chunk by chunk and each chunk of the basis
is freed as soon as it is used, so the solve never holds much more than the
basis itself. No H·Q is stored.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

_BLOCK = 1 << 13  # columns per block in the in-place rotation (its temporary is rows × 8192 floats)
_CHUNKS = 8  # storage chunks of Q for D ≥ 32 blocks (freed one by one when the vectors are formed)


class NonFiniteSpectrumError(ArithmeticError):
    """The Hessian products at θ are not finite (θ has blown up), so no eigenpairs exist."""


class RowBasis:
    """Rows q₀, q₁, … of length D, stored as column chunks (rows_cap, D_c)."""

    def __init__(self, rows: int, dim: int, dtype: torch.dtype, device: torch.device) -> None:
        n = _CHUNKS if dim >= 4 * _CHUNKS * _BLOCK else 1
        self.sizes = [len(r) for r in torch.arange(dim).tensor_split(n)]
        self.chunks = [torch.empty(rows, s, dtype=dtype, device=device) for s in self.sizes]
        self.dim = dim

    def split(self, v: Tensor) -> tuple[Tensor, ...]:
        """``v`` split into the parameter chunks the basis is stored in."""
        return v.split(self.sizes)

    def coefficients(self, n: int, parts: tuple[Tensor, ...]) -> Tensor:
        """Q[:n] v, shape (n,)."""
        out = self.chunks[0][:n] @ parts[0]
        for chunk, part in zip(self.chunks[1:], parts[1:]):
            out = out + chunk[:n] @ part
        return out

    def subtract(self, n: int, coeffs: Tensor, parts: tuple[Tensor, ...]) -> None:
        """Subtract Q[:n]ᵀ c from v in place."""
        for chunk, part in zip(self.chunks, parts):
            part.addmv_(chunk[:n].T, coeffs, alpha=-1)

    def dot_row(self, i: int, parts: tuple[Tensor, ...]) -> Tensor:
        """q_iᵀ v (a 0-d tensor on the device), read from the stored row: no copy of q_i."""
        out = self.chunks[0][i] @ parts[0]
        for chunk, part in zip(self.chunks[1:], parts[1:]):
            out = out + chunk[i] @ part
        return out

    def axpy_row(self, i: int, alpha: float | Tensor, parts: tuple[Tensor, ...]) -> None:
        """Subtract α q_i from v in place (α a number or a 0-d device tensor)."""
        for chunk, part in zip(self.chunks, parts):
            if isinstance(alpha, Tensor):
                part.addcmul_(chunk[i], alpha, value=-1)
            else:
                part.sub_(chunk[i], alpha=alpha)

    def set_row(self, j: int, v: Tensor) -> None:
        """Store ``v`` as row ``j``."""
        for chunk, part in zip(self.chunks, self.split(v)):
            chunk[j].copy_(part)

    def row(self, j: int) -> Tensor:
        """Row ``j`` as one contiguous (D,) vector."""
        return torch.cat([chunk[j] for chunk in self.chunks])

    def rotate(self, first: int, n: int, g: Tensor) -> None:
        """Rows [first, first + r) ← gᵀ rows [first, first + n) in place, for g of shape (n, r), r ≤ n."""
        r = g.shape[1]
        gt = g.T.contiguous()
        for chunk in self.chunks:
            for a in range(0, chunk.shape[1], _BLOCK):
                chunk[first:first + r, a:a + _BLOCK] = gt @ chunk[first:first + n, a:a + _BLOCK]

    def move(self, src: int, dst: int, n: int) -> None:
        """Rows [src, src + n) copied to [dst, dst + n), dst ≤ src (in order, so overlaps are safe)."""
        for i in range(n):
            for chunk in self.chunks:
                chunk[dst + i].copy_(chunk[src + i])

    def take(self, m: int, s: Tensor) -> Tensor:
        """The vectors Qᵀ s[:, i] as columns (D, l), written in place chunk by chunk while Q is freed."""
        out = torch.empty(self.dim, s.shape[1], dtype=s.dtype, device=s.device)
        st = s.T.contiguous()
        start = 0
        while self.chunks:
            chunk = self.chunks.pop(0)
            for a in range(0, chunk.shape[1], _BLOCK):  # temporaries of l × 8192 floats only
                block = chunk[:m, a:a + _BLOCK]
                out[start + a:start + a + block.shape[1]] = (st @ block).T
            start += chunk.shape[1]
            del chunk
        return out


class ThickRestartLanczos:
    """One solve's state.

    It holds m *done* rows (H applied; columns of A) followed by p *pending* rows (in the basis, not yet
    multiplied). The
    identity H Q_doneᵀ = Q_allᵀ A holds column by column, so Ritz pairs of the done block have residuals ‖K s‖² +
    ‖A_pending s‖² (module docstring; with one pending row this is β|s_{m−1}|). A cold start is one random row: plain
    Lanczos. A warm start is a block of previous eigenvectors: all multiplied in one block call (one batched
    backward or a loop, as the objective's ``batching`` says), then the pending direction of the least converged
    wanted pair's residual is multiplied next (:meth:`focus`): Davidson's choice, made exactly from A without
    forming any residual vector.
    """

    def __init__(self, op, *, rows: int, order: Callable[[np.ndarray], np.ndarray],
                 random: Callable[[], Tensor]) -> None:
        self.op = op
        self.order = order
        self.random = random
        self.dim = op.shape[0]
        self.basis = RowBasis(rows, self.dim, op.dtype, op.device)
        self.a = np.zeros((rows, rows))
        self.m, self.p = 0, 0  # done rows [0, m), pending rows [m, m + p)
        self.steps = 0
        self.scale = 0.0  # largest ‖Hq‖ or |θ| seen: the scale for breakdown and relative residuals
        self.current = torch.empty(0)  # a contiguous copy of row m (the next vector to multiply)

    @property
    def rows(self) -> int:
        """Rows in use: m done and p pending."""
        return self.m + self.p

    def start(self, block: Tensor) -> None:
        """Rows from the columns of ``block`` (D, b), orthonormalised; dependent or zero columns dropped."""
        if not bool(torch.isfinite(block).all()):
            raise ValueError("v0 is not finite")
        for col in block.T:
            self._append(col.contiguous().clone(), relative=1e-8)
        if self.p == 0:  # e.g. warm-start vectors that were all zero: start at random
            self._append(self.random(), relative=0.0)
        self.current = self.basis.row(self.m)

    def _append(self, v: Tensor, relative: float) -> None:
        """Orthogonalise v against all rows and keep what is left as a pending row.

        The row is added only if a fraction > ``relative`` of v is left; else v is dropped.
        """
        norm0 = float(torch.linalg.vector_norm(v))
        _, norm, _ = self._orthogonalise(v, self.rows)
        if norm <= relative * norm0 or norm == 0.0:
            return
        self.basis.set_row(self.rows, v / norm)
        self.p += 1

    def _orthogonalise(self, w: Tensor, n: int,
                       extra: Tensor | None = None) -> tuple[np.ndarray, float, np.ndarray]:
        """Subtract from w its projection on Q[:n] by classical Gram–Schmidt, in place.

        The pass is repeated once when it removed more than half of w's norm² (the DGKS criterion, from
        ‖w_before‖² = ‖w_after‖² + ‖c‖²). Returns (coefficients c, ‖w‖, ``extra``) on the host; ``extra`` (device
        scalars the caller needs) travels in the same transfer, the step's one sync.
        """
        parts = self.basis.split(w)
        c = self.basis.coefficients(n, parts)
        self.basis.subtract(n, c, parts)
        pieces = [c, torch.linalg.vector_norm(w)[None]] + ([extra.reshape(-1)] if extra is not None else [])
        host = torch.cat(pieces).to(device="cpu", dtype=torch.float64).numpy()
        coeffs = host[:n].copy()
        norm = float(host[n])
        extras = host[n + 1:]
        if np.isfinite(host).all() and norm ** 2 < 0.5 * (norm ** 2 + float(coeffs @ coeffs)):
            c2 = self.basis.coefficients(n, parts)  # "twice is enough"
            self.basis.subtract(n, c2, parts)
            coeffs += c2.to(device="cpu", dtype=torch.float64).numpy()
            norm = float(torch.linalg.vector_norm(w))
        return coeffs, norm, extras

    def step(self, b: int = 1) -> None:
        """Multiply the first b pending rows by H (one block call) and move them to the done block.

        Their columns of A are filled, and the parts of the products outside the basis become new pending rows.
        """
        m = self.m
        if b == 1:
            q, self.current = self.current, torch.empty(0)
            products = (self.op @ q).reshape(-1, 1)
            del q  # the solve holds no D-vector beyond the basis and the product
        else:
            products = self.op @ torch.stack([self.basis.row(m + i) for i in range(b)], dim=1)
        self.m = m + b
        self.p = self.p - b
        self.steps = self.steps + 1
        appended = None
        for i in range(b):
            appended = self._column(m + i, products[:, i].contiguous(), plain=b == 1 and self.p == 0)
        del products
        if self.p == 0 and self.m < self.dim:  # an invariant subspace: continue in a fresh direction
            self._append(self.random(), relative=0.0)
            appended = None
        if self.p > 0:
            self.current = appended if b == 1 and self.p == 1 and appended is not None else self.basis.row(self.m)

    def _column(self, j: int, w: Tensor, plain: bool) -> Tensor | None:
        """Column j of A from w = H q_j.

        The remainder of w becomes a pending row (if not negligible) and is returned (normalised; w's own storage), else
        None.

        The coefficients the identity already knows (row j of A: β_{j−1} after a plain Lanczos step, the
        arrow after a restart) are subtracted first, then α_j = q_jᵀw for a plain step; then one full
        Gram–Schmidt pass (two if it cancels) removes what is left along the whole basis.
        """
        known = self.a[j, :j].copy()
        nonzero = np.flatnonzero(known)
        parts = self.basis.split(w)
        if plain and len(nonzero) == 1 and nonzero[0] == j - 1:
            self.basis.axpy_row(j - 1, float(known[j - 1]), parts)
        elif len(nonzero) > 0:
            self.basis.subtract(j, torch.as_tensor(known, dtype=w.dtype, device=w.device), parts)
        alpha_t = None
        if plain:
            alpha_t = self.basis.dot_row(j, parts)
            self.basis.axpy_row(j, alpha_t, parts)
        n = self.rows
        coeffs, b, extras = self._orthogonalise(w, n, alpha_t)  # α comes back with the coefficients
        coeffs[j] += float(extras[0]) if plain else 0.0
        if not (np.isfinite(coeffs).all() and math.isfinite(b)):
            raise NonFiniteSpectrumError("Hessian-vector products overflowed at this θ (non-finite Rayleigh "
                                         "quotients): the spectrum is undefined here")
        coeffs[:j] += known
        self.a[:n, j] = coeffs
        self.scale = max(self.scale, math.sqrt(float(coeffs @ coeffs) + b * b))  # ‖H q_j‖ by Pythagoras
        if n >= self.dim or b <= 64 * torch.finfo(w.dtype).eps * max(self.scale, 1e-300):
            return None
        if n >= self.basis.chunks[0].shape[0]:
            raise RuntimeError("internal: the Lanczos basis is full (restart missed)")
        w.div_(b)
        self.basis.set_row(n, w)
        self.a[n, j] = b
        self.p += 1
        return w

    def focus(self, s_worst: np.ndarray) -> None:
        """Rotate the pending rows so that the first is Davidson's next direction.

        That is the pending part of the residual of the Ritz vector Qᵀs; with one pending row there is nothing to
        choose.
        """
        if self.p <= 1:
            return
        m, p = self.m, self.p
        c = self.a[m:m + p, :m] @ s_worst
        norm = float(np.linalg.norm(c))
        if norm == 0.0:
            return
        u = -c / norm
        u[0] += 1.0
        if float(u @ u) < 1e-30:  # the first pending row is already that direction
            return
        g = np.eye(p) - 2.0 * np.outer(u, u) / float(u @ u)  # Householder: g e₁ = c/‖c‖, g = gᵀ = g⁻¹
        self.basis.rotate(m, p, self._device(g))
        self.a[m:m + p, :m] = g @ self.a[m:m + p, :m]
        self.current = self.basis.row(m)

    def ritz(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ritz values θ (m,), vectors S (m, m) in the wanted order, and their residuals from the identity.

        Float64 numpy arrays: host work on an m × m matrix, done by torch so that numpy's BLAS threads never
        compete with torch's.
        """
        m, p = self.m, self.p
        a = torch.from_numpy(self.a[:m, :m])
        values, vectors = torch.linalg.eigh(0.5 * (a + a.T))
        idx = self.order(values.numpy())
        theta, s = values.numpy()[idx], vectors.numpy()[:, idx]
        st = torch.from_numpy(np.ascontiguousarray(s))
        skew = torch.linalg.vector_norm(0.5 * (a - a.T) @ st, dim=0)
        pending = torch.linalg.vector_norm(torch.from_numpy(self.a[m:m + p, :m]) @ st, dim=0)
        res = torch.hypot(skew, pending).numpy()
        self.scale = max(self.scale, float(np.abs(theta).max()))
        return theta, s, res

    def restart(self, keep: int, s: np.ndarray) -> None:
        """Thick restart onto the first ``keep`` Ritz vectors (no HVP).

        Done rows Q ← SᵀQ, pending rows kept, A ← [[SᵀAS], [A_pending S]] (the arrowhead of Wu & Simon when one row is
        pending).
        """
        m, p = self.m, self.p
        sk = np.ascontiguousarray(s[:, :keep])
        self.basis.rotate(0, m, self._device(sk))
        self.basis.move(m, keep, p)
        skt = torch.from_numpy(sk)
        new = np.zeros_like(self.a)
        new[:keep, :keep] = (skt.T @ torch.from_numpy(self.a[:m, :m]) @ skt).numpy()
        new[keep:keep + p, :keep] = (torch.from_numpy(self.a[m:m + p, :m]) @ skt).numpy()
        self.a, self.m = new, keep
        if p > 0:
            self.current = self.basis.row(keep)

    def _device(self, x: np.ndarray) -> Tensor:
        return torch.as_tensor(x).to(dtype=self.op.dtype, device=self.op.device)

    def vectors(self, s: np.ndarray) -> Tensor:
        """Ritz vectors Qᵀ s (D, l); frees the basis."""
        return self.basis.take(self.m, self._device(s))
