"""The semidefinite complementarity problem of the central flow, solved as a convex QP (no CVXPY).

Given a symmetric A (k × k) and a linear map B on symmetric matrices that is self-adjoint and positive
semi-definite (⟨Y, B[X]⟩ = ⟨B[Y], X⟩, ⟨X, B[X]⟩ ≥ 0, Frobenius inner product), find X with

    X ⪰ 0,    S = A + B[X] ⪰ 0,    ⟨X, S⟩ = 0.

These are exactly the KKT conditions of the convex quadratic programme

    min_{X ⪰ 0}  f(X) = ½⟨X, B[X]⟩ + ⟨A, X⟩,

(S = ∇f(X) is the multiplier of X ⪰ 0), so any minimiser solves the SDCP (Cohen, Damian, Talwalkar, Kolter,
Lee, "Understanding optimization in deep learning with central flows", ICLR 2025; their code hands the
problem to CVXPY on the host). Here:

* k = 1: the closed form x = max(0, −a/b) (x = 0 when b = 0 and a ≥ 0; unbounded when b = 0 > a);
* k ≥ 2: accelerated projected gradient (FISTA with adaptive restart, O'Donoghue & Candès 2015) on the PSD
  cone, step 1/L with L = λ_max(B) (B as a k² × k² matrix on vec(X)), projection by eigendecomposition
  (negative eigenvalues clipped), warm-started from a given X, in float64; every 5 iterations (every 25 after
  the first 1,000) the face of the cone that the iterate has found (the range of X) is tried exactly: the
  reduced quadratic on X = V Y Vᵀ is solved by least squares, and kept if it passes the KKT check.

B is passed as a (k², k²) matrix acting on the row-major vec(X) (``B[X] = (Bmat @ X.reshape(-1)).reshape(k, k)``),
the form the central flow produces (a Gram matrix of third-derivative vectors). Every solve reports its KKT
residuals, as ``top_eigenpairs`` reports eigen-residuals.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

POLISH_OFTEN = 1000  # the faces are tried every 5 iterations up to here, every 25 after (a slow solve's cost)


@dataclass
class SDCPSolution:
    """X (k, k) and its KKT residuals, all relative to scale = max(‖A‖_F, ‖B‖ ‖X‖_F, tiny).

    Attributes:
        x: the solution X ⪰ 0 (exactly: a projection), float64.
        s: S = A + B[X].
        infeasibility: max(0, −λ_min(S)) / scale (how far S ⪰ 0 is violated).
        complementarity: ‖X S‖_F / (‖X‖_F·scale) (0 when X = 0; XS = 0 ⟺ ⟨X, S⟩ = 0 for PSD X, S, and
            ‖XS‖ measures the error at first order).
        iterations: projected-gradient iterations (0 for k = 1).
        converged: both residuals ≤ tol.
    """

    x: Tensor
    s: Tensor
    infeasibility: float
    complementarity: float
    iterations: int
    converged: bool


def _apply(b: Tensor, x: Tensor) -> Tensor:
    k = x.shape[0]
    return (b @ x.reshape(-1)).reshape(k, k)


def project_psd(x: Tensor) -> Tensor:
    """The nearest PSD matrix in Frobenius norm: the symmetric part with negative eigenvalues set to 0."""
    values, vectors = torch.linalg.eigh(0.5 * (x + x.T))
    return (vectors * values.clamp(min=0.0)) @ vectors.T


def kkt_residuals(a: Tensor, b: Tensor, x: Tensor, b_norm: float | None = None) -> tuple[Tensor, float, float]:
    """(S, infeasibility, complementarity) of X, relative as in :class:`SDCPSolution`.

    ``b_norm`` is ‖B‖₂ when the caller has it (a solve checks many candidates against one B; the norm is an SVD of a
    k² × k² matrix, which dominated long solves).
    """
    s = a + _apply(b, x)
    s = 0.5 * (s + s.T)
    if b_norm is None:
        b_norm = float(torch.linalg.matrix_norm(b, ord=2))
    scale = max(float(torch.linalg.matrix_norm(a)), b_norm * float(torch.linalg.matrix_norm(x)), 1e-300)
    infeasible = max(0.0, -float(torch.linalg.eigvalsh(s)[0])) / scale
    # ‖XS‖_F, not |⟨X, S⟩|: both vanish at a solution, but on a slightly wrong face ⟨X, S⟩ can be 0 while S
    # violates S ⪰ 0 only at second order; XS sees the coupling at first order
    complementary = float(torch.linalg.matrix_norm(x @ s)) / (max(float(torch.linalg.matrix_norm(x)), 1e-300) * scale)
    return s, infeasible, complementary


def solve_sdcp(a: Tensor, b: Tensor, *, x0: Tensor | None = None, tol: float = 1e-10,
               max_iter: int = 10_000) -> SDCPSolution:
    """Solve the SDCP: X ⪰ 0 with A + B[X] ⪰ 0 and ⟨X, A + B[X]⟩ = 0 (module docstring).

    A (k, k) is symmetric and B (k², k²) self-adjoint PSD on symmetric matrices. ``x0`` warm-starts the iteration
    (e.g. the previous step's X). Float64 on A's device. Raises ValueError for bad shapes, a non-symmetric A or B,
    or an unbounded problem (B = 0 along a direction where A is negative).
    """
    a, b = _check(a, b)
    k = a.shape[0]
    if k == 1:
        return _scalar(a, b)
    lipschitz = float(torch.linalg.eigvalsh(0.5 * (b + b.T))[-1])
    if lipschitz <= 0.0:
        if float(torch.linalg.eigvalsh(a)[0]) < 0:
            raise ValueError("the SDCP is unbounded: B = 0 and A has a negative eigenvalue")
        zero = torch.zeros_like(a)
        s, infeasible, complementary = kkt_residuals(a, b, zero)
        return SDCPSolution(zero, s, infeasible, complementary, 0, True)
    b_norm = float(torch.linalg.matrix_norm(b, ord=2))
    x = project_psd(x0.to(a)) if x0 is not None else torch.zeros_like(a)
    y = x
    t = 1.0
    value = math.inf
    for iteration in range(1, max_iter + 1):
        x_new = project_psd(y - (a + _apply(b, y)) / lipschitz)
        new_value = float(0.5 * (x_new * _apply(b, x_new)).sum() + (a * x_new).sum())
        if new_value > value:  # adaptive restart: momentum stopped helping; keep the step, drop the momentum
            y, t = x_new, 1.0
        else:
            t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
            y = x_new + ((t - 1.0) / t_new) * (x_new - x)
            t = t_new
        x, value = x_new, new_value
        if iteration % (5 if iteration <= POLISH_OFTEN else 25) == 0 or iteration == max_iter:
            for candidate in (*_polish(a, b, x), x):
                s, infeasible, complementary = kkt_residuals(a, b, candidate, b_norm)
                if infeasible <= tol and complementary <= tol:
                    return SDCPSolution(candidate, s, infeasible, complementary, iteration, True)
    s, infeasible, complementary = kkt_residuals(a, b, x, b_norm)
    return SDCPSolution(x, s, infeasible, complementary, max_iter, infeasible <= tol and complementary <= tol)


def _polish(a: Tensor, b: Tensor, x: Tensor) -> list[Tensor]:
    """Exact minimisers on the faces of the PSD cone that X's range suggests.

    X = V Y Vᵀ with V the eigenvectors of X's r largest eigenvalues (r = how many exceed 10⁻¹, 10⁻², …, 10⁻⁶ of the
    largest), Y from the reduced (unconstrained) quadratic (V⊗V)ᵀB(V⊗V) vec Y = −(V⊗V)ᵀvec A (minimum-norm solution);
    faces whose Y is not PSD are skipped. Once the projected-gradient iterates are near the right face, one of these
    solves the SDCP to rounding instead of converging linearly (the caller checks the KKT residuals).
    """
    values, vectors = torch.linalg.eigh(x)
    top = float(values[-1])
    if top <= 0.0:
        return []
    ranks = sorted({int((values > f * top).sum()) for f in (1e-1, 1e-2, 1e-3, 1e-4, 1e-6)})
    out = []
    for r in ranks:
        v = vectors[:, -r:]
        kron = torch.kron(v, v)  # vec_r(V Y Vᵀ) = (V ⊗ V) vec_r(Y)
        m = kron.T @ b @ kron
        # M is singular on antisymmetric Y (and wherever B is): an eigen-pseudo-inverse handles that on any
        # device (LAPACK's default least-squares driver gelsy does not, here)
        y = (torch.linalg.pinv(0.5 * (m + m.T), hermitian=True) @ -(kron.T @ a.reshape(-1))).reshape(r, r)
        y = 0.5 * (y + y.T)
        if float(torch.linalg.eigvalsh(y)[0]) >= 0.0:
            out.append(v @ y @ v.T)
    return out


def _scalar(a: Tensor, b: Tensor) -> SDCPSolution:
    av, bv = float(a[0, 0]), float(b[0, 0])
    if bv <= 0.0 and av < 0.0:
        raise ValueError("the SDCP is unbounded: B = 0 and A < 0")
    x = torch.full_like(a, max(0.0, -av / bv) if bv > 0 else 0.0)
    s, infeasible, complementary = kkt_residuals(a, b, x)
    return SDCPSolution(x, s, infeasible, complementary, 0, True)


def _check(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    if not isinstance(a, Tensor) or a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise ValueError(f"A must be a square (k, k) tensor with k ≥ 1, got "
                         f"{tuple(a.shape) if isinstance(a, Tensor) else type(a).__name__}")
    k = a.shape[0]
    if not isinstance(b, Tensor) or b.shape != (k * k, k * k):
        raise ValueError(f"B must be a ({k * k}, {k * k}) tensor acting on vec(X), got "
                         f"{tuple(b.shape) if isinstance(b, Tensor) else type(b).__name__}")
    a, b = a.to(torch.float64), b.to(device=a.device, dtype=torch.float64)
    if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
        raise ValueError("A and B must be finite")
    if float(torch.linalg.matrix_norm(a - a.T)) > 1e-10 * max(float(torch.linalg.matrix_norm(a)), 1.0):
        raise ValueError("A must be symmetric")
    if float(torch.linalg.matrix_norm(b - b.T)) > 1e-10 * max(float(torch.linalg.matrix_norm(b)), 1.0):
        raise ValueError("B must be self-adjoint (a symmetric k² × k² matrix)")
    return 0.5 * (a + a.T), b
