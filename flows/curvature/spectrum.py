"""Top of the Hessian spectrum: on-device Lanczos with thick restarts, warm starts and tracking.

``top_eigenpairs(objective, θ, k)`` returns the k extreme eigenpairs of
H = ∇²E(θ). Two solvers sit in a registry keyed by name:

* ``"lanczos"`` — thick-restart Lanczos (:mod:`flows.curvature.lanczos`): one HVP per
  step on a retained gradient graph (:class:`HessianOperator`), full
  reorthogonalisation against a basis stored by rows, Ritz values from the
  small projected matrix on the host and residuals ‖Hu − θu‖ from the Lanczos
  identity (exact up to rounding, no extra HVP). ``v0`` (the previous step's
  eigenvectors) starts the Krylov space at their sum: a warm start. All
  D-sized work stays on θ's device, one small tensor goes to the host per step.
* ``"dense"`` — ``torch.linalg.eigh`` of the dense Hessian (small D).

``method="auto"`` picks dense for D ≤ ``DENSE_MAX_DIM``.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch
from torch import Tensor

from ..objective.objective import Objective
from ..records.archive import load_record, save_record
from ..validate import Which
from .lanczos import NonFiniteSpectrumError, ThickRestartLanczos
from .precondition import PreconditionedOperator, check_preconditioner

WHICH = get_args(Which)
DENSE_MAX_DIM = 300


@dataclass
class Eigenpairs:
    """k eigenpairs of H, ordered as ``which`` asks (LA: descending values).

    Attributes:
        values: (k,) eigenvalues λᵢ.
        vectors: (D, k) orthonormal eigenvectors uᵢ (columns).
        residuals: (k,) ‖H uᵢ − λᵢ uᵢ‖.
        relative_residuals: (k,) residuals / max(|λᵢ|, eps·‖H‖).
        matvecs: Hessian-vector products spent.
        converged: every relative residual ≤ tol (or residual ≤ atol) and, for Lanczos with ``verify``, the
            values certified to be the k extreme ones with multiplicity (:func:`symmetric_eigenpairs`).
        method: the solver that ran.
    """

    values: Tensor
    vectors: Tensor
    residuals: Tensor
    relative_residuals: Tensor
    matvecs: int
    converged: bool
    method: str
    iterations: int = 0
    extras: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        """How many pairs."""
        return int(self.values.numel())

    def summary(self) -> str:
        """A few lines: the values, the worst relative residual, the work, whether it converged."""
        values = ", ".join(f"{v:.6g}" for v in self.values.detach().cpu().tolist()[:10])
        more = f", … ({self.k} in all)" if self.k > 10 else ""
        worst = float(self.relative_residuals.max()) if self.k else float("nan")
        return (f"Eigenpairs ({self.method}, {'converged' if self.converged else 'NOT converged'}): "
                f"λ = [{values}{more}]; worst relative residual {worst:.2e}; {self.matvecs} matvecs, "
                f"D = {self.vectors.shape[0]}")

    def __repr__(self) -> str:
        return self.summary()

    def save(self, path: str | Path) -> Path:
        """Write ``path.npz`` (values, vectors, residuals) and ``path.json`` (work, method, JSON-able extras)."""
        arrays = {name: getattr(self, name).detach().cpu().numpy()
                  for name in ("values", "vectors", "residuals", "relative_residuals")}
        extras = {k: (v.detach().cpu().tolist() if torch.is_tensor(v) else v) for k, v in self.extras.items()}
        return save_record(path, "eigenpairs", arrays, {"matvecs": self.matvecs, "converged": bool(self.converged),
                                                        "method": self.method, "iterations": self.iterations,
                                                        "extras": extras})

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> Eigenpairs:
        """Read pairs written by :meth:`save` onto ``device`` (dtype as saved)."""
        arrays, fields = load_record(path, "eigenpairs", ("values", "vectors", "residuals", "relative_residuals"))
        tensors = {k: torch.as_tensor(arrays[k], device=device)
                   for k in ("values", "vectors", "residuals", "relative_residuals")}
        return cls(**tensors, matvecs=int(fields["matvecs"]), converged=bool(fields["converged"]),
                   method=str(fields["method"]), iterations=int(fields.get("iterations", 0)),
                   extras=dict(fields.get("extras", {})))


def _order_numpy(values: np.ndarray, which: str) -> np.ndarray:
    """Indices of ``values`` in the order ``which`` asks (LA: descending, SA: ascending, LM: by |value|)."""
    if which == "LA":
        return np.argsort(-values, kind="stable")
    if which == "SA":
        return np.argsort(values, kind="stable")
    return np.argsort(-np.abs(values), kind="stable")


def _relative(res: Tensor, values: Tensor, scale: Tensor) -> Tensor:
    floor = torch.finfo(values.dtype).eps * scale
    return res / torch.clamp(values.abs(), min=float(floor) if floor > 0 else torch.finfo(values.dtype).tiny)


def _dense(objective: Objective, theta: Tensor, k: int, which: str, *, preconditioner: Tensor | None = None,
           **_: object) -> Eigenpairs:
    h = objective.hessian(theta)
    if preconditioner is not None:  # S = P^{-1/2} H P^{-1/2}
        scale = preconditioner.rsqrt()
        h = scale[:, None] * h * scale[None, :]
    if not bool(torch.isfinite(h).all()):
        raise NonFiniteSpectrumError("the Hessian at this θ has non-finite entries (NaN/Inf in the loss, the data "
                                     "or θ): the spectrum is undefined here")
    values, vectors = torch.linalg.eigh(h)
    idx = torch.as_tensor(_order_numpy(values.cpu().numpy(), which)[:k], device=values.device)
    values, vectors = values[idx], vectors[:, idx]
    res = torch.linalg.vector_norm(h @ vectors - vectors * values, dim=0)
    scale = values.abs().max()
    return Eigenpairs(values, vectors, res, _relative(res, values, scale), matvecs=objective.dim,
                      converged=True, method="dense")


def _lanczos(objective: Objective, theta: Tensor, k: int, which: str, *, preconditioner: Tensor | None = None,
             **options: Any) -> Eigenpairs:
    """Run :func:`symmetric_eigenpairs` on the Hessian operator at θ, or on P^{-1/2} H P^{-1/2}.

    The operator's graph is built once and freed after; P applies with a ``preconditioner``.
    """
    op = objective.hessian_operator(theta)
    target = op if preconditioner is None else PreconditionedOperator(op, preconditioner)
    try:
        return symmetric_eigenpairs(target, k, which, release=op.release, **options)
    finally:
        op.release()


def symmetric_eigenpairs(
    op: Any,
    k: int,
    which: str = "LA",
    *,
    v0: Tensor | None = None,
    tol: float = 1e-3,
    atol: float = 0.0,
    max_matvecs: int | None = None,
    max_basis: int | None = None,
    generator: torch.Generator | None = None,
    spare: int = 0,
    release: Callable[[], None] | None = None,
    verify: bool = True,
    ceiling: float | None = None,
) -> Eigenpairs:
    """The k extreme eigenpairs of any symmetric operator, with multiplicity.

    By thick-restart Lanczos (:mod:`flows.curvature.lanczos`) and a verified restart.

    ``op`` behaves like a (D, D) matrix: ``op.shape``, ``op.dtype``, ``op.device``, ``op @ v`` for v of
    shape (D,), and a ``matvecs`` counter (a :class:`~flows.objective.hessian.HessianOperator`, or a
    :class:`~flows.curvature.operators.MatrixOperator` for a dense matrix). ``v0`` (D,) or (D, p) is a warm start
    (previous eigenvectors): multiplied as one block, then extended Davidson-style; ``release`` is
    called once the products are done, before the Ritz vectors are formed (to free a retained graph first).

    **Multiplicity.** The Krylov space of one start vector holds one copy of each eigenvalue: a repeated λ
    (the Kronecker structure H = I ⊗ XᵀX/N of every ½-MSE linear head, symmetric inits) is found once and the
    next-smaller values fill the remaining places. With ``verify`` (default) the solve is followed by
    verification rounds: Lanczos on the deflated operator (I − UUᵀ)H(I − UUᵀ) (U the vectors found so far) from
    a fresh random start orthogonal to U, to the same tolerance. If its extreme value lies beyond the k-th value
    found (by more than the tolerance), it is a missed eigenvalue: it joins the set and another round runs;
    otherwise the set is certified. ``converged=True`` then means that the values are the k extreme eigenvalues
    with multiplicity, to ``tol``, as far as a random start can tell (the guarantee of every Krylov method); when
    the budget runs out first, ``converged=False`` and a warning names multiplicity. ``extras`` records
    ``verify_rounds`` and ``verify_matvecs``. For k = 1 there is nothing to verify (a second copy of the extreme
    value cannot change it), so no round runs.
    Options as in :func:`top_eigenpairs`.
    """
    _check_ceiling(ceiling, which)
    dim = op.shape[0]
    start_matvecs = op.matvecs
    _check_budget(max_matvecs)
    budget = max_matvecs if max_matvecs is not None else max(30 * k, 300)
    if generator is None:
        generator = torch.Generator(device=op.device).manual_seed(0)
    verify = verify and k > 1  # one value: a second copy of it cannot change the answer
    first = _thick_restart(op, k, which, v0=v0, tol=tol, atol=atol, max_matvecs=budget, max_basis=max_basis,
                           generator=generator, spare=spare, release=None if verify else release, ceiling=ceiling)
    if not verify or not first.converged or k >= dim - 1:
        if verify and release is not None:
            release()
        first.matvecs = op.matvecs - start_matvecs
        return first
    try:
        result = _verify(op, first, k, which, tol=tol, atol=atol, budget=budget - (op.matvecs - start_matvecs),
                         generator=generator, max_basis=max_basis)
    finally:
        if release is not None:
            release()
    result.matvecs = op.matvecs - start_matvecs
    return result


def _check_choices(which: str, method: str, ceiling: Any) -> None:
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    if method != "auto" and method not in SOLVERS:
        raise ValueError(f"method must be one of {('auto', *SOLVERS)}, got {method!r}")
    _check_ceiling(ceiling, which)


def _check_ceiling(ceiling: Any, which: str) -> None:
    if ceiling is None:
        return
    if isinstance(ceiling, bool) or not isinstance(ceiling, (int, float)) or not math.isfinite(ceiling):
        raise ValueError(f"ceiling must be a finite number or None, got {ceiling!r}")
    if which != "LA":
        raise ValueError(f"ceiling bounds the largest eigenvalues: it needs which='LA', got which={which!r}")


def _check_budget(max_matvecs: Any) -> None:
    if max_matvecs is not None and (isinstance(max_matvecs, bool) or not isinstance(max_matvecs, int)
                                    or max_matvecs <= 0):
        raise ValueError(f"max_matvecs must be a positive int or None (the default budget), got {max_matvecs!r}")


def _beyond(value: float, kth: float, which: str, slack: float) -> bool:
    """Whether ``value`` belongs before the k-th value ``kth`` in the order ``which``, by more than ``slack``."""
    if which == "LA":
        return value > kth + slack
    if which == "SA":
        return value < kth - slack
    return abs(value) > abs(kth) + slack


def _verify(op: Any, found: Eigenpairs, k: int, which: str, *, tol: float, atol: float, budget: int,
            generator: torch.Generator, max_basis: int | None) -> Eigenpairs:
    """Verification rounds of :func:`symmetric_eigenpairs`.

    Deflated Lanczos from a fresh start until its extreme value does not beat the k-th value found.
    """
    from .operators import DeflatedOperator

    dim = op.shape[0]
    values = found.values
    vectors = found.vectors
    residuals = found.residuals
    spare = found.extras.get("spare")
    locked_vals = values  # every pair found (the k best + beaten)
    locked_vecs = vectors
    locked_res = residuals
    rounds = 0
    spent = 0
    certified = False
    scale = float(values.abs().max())
    while spent < budget and locked_vecs.shape[1] < dim - 1:
        rounds += 1
        b = 1  # one fresh start per round (a block of starts was dearer here: 300+ products against 185 for k = 10)
        deflated = DeflatedOperator(op, locked_vecs, shift=float(values[-1]))
        start = deflated.project(torch.randn(dim, b, generator=generator, dtype=op.dtype, device=op.device))
        before = op.matvecs
        probe = _thick_restart(deflated, b, which, v0=start, tol=tol, atol=atol,
                               max_matvecs=budget - spent, max_basis=max_basis, generator=generator, spare=0,
                               release=None)
        spent += op.matvecs - before
        if not probe.converged:
            break
        kth = float(values[-1])
        slack = [max(tol * max(abs(kth), 1e-300), atol, float(residuals[-1]) + float(r)) for r in probe.residuals]
        missed = [i for i in range(b) if _beyond(float(probe.values[i]), kth, which, slack[i])]
        if not missed:
            certified = True
            break
        # missed eigenvalues: lock them and keep the k best (the beaten ones stay locked: never found again)
        keep = torch.as_tensor(missed, device=probe.values.device)
        locked_vals = torch.cat([locked_vals, probe.values[keep]])
        locked_vecs = torch.cat([locked_vecs, probe.vectors[:, keep]], dim=1)
        locked_res = torch.cat([locked_res, probe.residuals[keep]])
        idx = torch.as_tensor(_order_numpy(locked_vals.cpu().numpy(), which)[:k], device=locked_vals.device)
        values = locked_vals[idx]
        vectors = locked_vecs[:, idx]
        residuals = locked_res[idx]
        spare = None  # the first solve's spare directions may now duplicate a locked vector
        scale = max(scale, float(probe.values.abs().max()))
    else:
        certified = locked_vecs.shape[1] >= dim - 1
    if not certified:
        warnings.warn(f"top-{k} eigenpairs ({which}): within the budget of {budget + found.matvecs} products the "
                      "verification could not certify that no further copy of a repeated eigenvalue (multiplicity) "
                      "lies beyond the k-th value found; converged=False (raise max_matvecs)",
                      RuntimeWarning, stacklevel=4)
    relative = _relative(residuals, values, torch.as_tensor(scale))
    extras = {"verify_rounds": rounds, "verify_matvecs": spent}
    if spare is not None:
        extras["spare"] = spare
    return Eigenpairs(values, vectors, residuals, relative, matvecs=0, converged=certified, method=found.method,
                      iterations=found.iterations, extras=extras)


def _thick_restart(
    op: Any,
    k: int,
    which: str,
    *,
    v0: Tensor | None,
    tol: float,
    atol: float,
    max_matvecs: int,
    max_basis: int | None,
    generator: torch.Generator,
    spare: int,
    release: Callable[[], None] | None,
    ceiling: float | None = None,
) -> Eigenpairs:
    """One thick-restart Lanczos solve (no verification): see :func:`symmetric_eigenpairs`."""
    dim = op.shape[0]
    start_matvecs = op.matvecs
    max_basis = min(dim, max(max_basis or max(2 * k + 20, 40), k + spare + 2))

    def random_vector() -> Tensor:
        v = torch.randn(dim, generator=generator, dtype=op.dtype, device=op.device)
        project = getattr(op, "project", None)  # a deflated operator: restart inside its range
        return v if project is None else project(v)

    block = random_vector()[:, None] if v0 is None else v0.to(dtype=op.dtype, device=op.device).reshape(dim, -1)
    block = block[:, : max_basis - 1]
    solver = ThickRestartLanczos(op, rows=max_basis + block.shape[1] + 1,
                                 order=lambda values: _order_numpy(values, which), random=random_vector)
    solver.start(block)
    del block  # the basis holds its own copy
    solver.step(solver.p)  # a warm block is multiplied at once
    while True:
        m, kk = solver.m, min(k, solver.m)
        if m < min(k, dim) and solver.p > 0 and op.matvecs - start_matvecs < max_matvecs:
            solver.step()  # fewer Ritz pairs than wanted: nothing to check yet
            continue
        theta, s, res = solver.ritz()
        floor = max(float(torch.finfo(op.dtype).eps) * solver.scale, 1e-300)
        rel = res[:kk] / np.maximum(np.abs(theta[:kk]), floor)
        ok = (rel <= tol) | (res[:kk] <= atol)
        if ceiling is not None:  # after the first, a pair whose interval θ ± r lies below the ceiling is done
            ok[1:] |= theta[1:kk] + res[1:kk] <= ceiling
        done = kk == k and bool(np.all(ok))
        if done or m == dim or solver.p == 0 or op.matvecs - start_matvecs >= max_matvecs:
            break
        if m >= max_basis:
            solver.restart(min(m - 1, max(k + (max_basis - k) // 2, k + spare + 1)), s)
            continue  # Ritz pairs again, in the restarted basis
        solver.focus(s[:, int(np.argmax(np.where(ok, 0.0, rel)))] if kk == k else s[:, 0])
        solver.step()
    if release is not None:
        release()
    cols = min(m, kk + spare)
    vectors = solver.vectors(s[:, :cols])
    extras = {"spare": vectors[:, kk:cols]} if spare else {}

    def like(x: np.ndarray) -> Tensor:
        return torch.as_tensor(x).to(dtype=op.dtype, device=op.device)

    return Eigenpairs(like(theta[:kk]), vectors[:, :kk], like(res[:kk]), like(rel),
                      matvecs=op.matvecs - start_matvecs, converged=done or m == dim, method="lanczos",
                      iterations=solver.steps, extras=extras)


SOLVERS: dict[str, Callable[..., Eigenpairs]] = {"lanczos": _lanczos, "dense": _dense}


def parameter_eigenpairs(objective: Objective, theta: Tensor, parameters: Any, k: int = 1, which: str = "LA",
                         tol: float = 1e-3, **options: Any) -> Eigenpairs:
    """Top eigenpairs of the Hessian block H_SS of the named ``parameters`` (exact names or module prefixes).

    The curvature of one layer, say (``values[0]`` is that layer's sharpness). Vectors have |S| entries. Lanczos on
    :class:`~flows.curvature.operators.SubsetOperator` (one full HVP per product, the model never copied).
    """
    from .operators import SubsetOperator

    if objective.layout is None:
        raise ValueError("parameters need an objective built by Objective.from_module")
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    op = objective.hessian_operator(objective.check_theta(theta))
    try:
        sub = SubsetOperator.of_parameters(op, objective.layout, list(parameters))
        if isinstance(k, bool) or not isinstance(k, int) or not 0 < k < sub.shape[0]:
            raise ValueError(f"k must be an int in [1, {sub.shape[0] - 1}] for these parameters, got {k!r}")
        return symmetric_eigenpairs(sub, k, which, tol=tol, **options)
    finally:
        op.release()


def ggn_eigenpairs(objective: Objective, theta: Tensor, k: int = 1, which: str = "LA", tol: float = 1e-3,
                   **options: Any) -> Eigenpairs:
    """Top eigenpairs of the generalised Gauss–Newton matrix G = Σᵢ Jᵢᵀ H_out,i Jᵢ (D, D) at θ.

    Lanczos on :class:`~flows.curvature.operators.GGNOperator` (one jvp, an output-space HVP and one vjp per product; no
    second derivative of the network). ``values[0]`` is the GGN's λ_max, which equals the Hessian's where the residual
    term Σ ∂ℓ/∂f · ∇²f vanishes (at an interpolating minimum of MSE, say). Options as for :func:`symmetric_eigenpairs`
    (``v0`` for a warm start).
    """
    from .operators import GGNOperator

    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    op = GGNOperator(objective, theta)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 < k < op.shape[0]:
        raise ValueError(f"k must be an int in [1, {op.shape[0] - 1}], got {k!r}")
    return symmetric_eigenpairs(op, k, which, tol=tol, **options)


def top_eigenpairs(
    objective: Objective,
    theta: Tensor,
    k: int = 1,
    which: str = "LA",
    v0: Tensor | None = None,
    tol: float = 1e-3,
    *,
    method: str = "auto",
    atol: float = 0.0,
    max_matvecs: int | None = None,
    max_basis: int | None = None,
    seed: int = 0,
    spare: int = 0,
    preconditioner: Tensor | float | None = None,
    verify: bool = True,
    ceiling: float | None = None,
) -> Eigenpairs:
    """The k extreme eigenpairs of H = ∇²E(θ) with multiplicity (of P^{-1/2} H P^{-1/2} with a preconditioner).

    Args:
        objective: the Hessian's objective.
        theta: the point θ (D,), real.
        k: how many pairs, 1 ≤ k < D (k ≤ D for the dense method).
        which: ``"LA"`` largest algebraic (the top: sharpness), ``"SA"``
            smallest algebraic (negative curvature), ``"LM"`` largest magnitude.
        v0: a starting vector (D,) or block (D, p), e.g. last step's vectors.
        tol: stop when every ‖Huᵢ − λᵢuᵢ‖ ≤ tol·|λᵢ| (ARPACK's criterion).
        method: ``"auto"`` (dense for D ≤ 300), ``"lanczos"`` or ``"dense"``.
        atol: also accept a pair whose absolute residual is ≤ atol.
        max_matvecs: HVP budget (default max(30k, 300)); past it the result
            comes back with ``converged=False`` and its honest residuals.
        max_basis: basis size before a thick restart (default max(2k+20, 40)).
        seed: seeds the random start vector (results are deterministic).
        spare: also return the next ``spare`` Ritz vectors (unconverged) in
            ``extras["spare"]``, a cheap enlargement of the next warm start.
        preconditioner: P's diagonal, (D,) positive, or a positive scalar (P = pI): the pairs are then those of
            S = P^{-1/2} H P^{-1/2}, whose eigenvalues are those of P⁻¹H (the preconditioned sharpness of an
            adaptive method, :mod:`flows.curvature.precondition`); eigenvectors of P⁻¹H are P^{-1/2} w. Residuals and
            ``matvecs`` refer to S (one HVP per product).
        verify: follow the Lanczos solve with verification rounds from fresh starts orthogonal to the vectors
            found, so that repeated eigenvalues are returned as often as they occur
            (:func:`symmetric_eigenpairs`); ``False`` skips them (cheaper, but a repeated λ is found once and
            ``converged`` then only says that each returned pair is an eigenpair).
        ceiling: (``which="LA"``) a pair after the first whose interval θ ± ‖Hu − θu‖ lies below it is accepted
            at any residual (``relative`` may exceed ``tol``): the central flow's critical boundary.

    Returns:
        :class:`Eigenpairs` on θ's device, in θ's dtype.
    """
    if not isinstance(objective, Objective):
        raise TypeError(f"objective must be a flows.Objective, got {type(objective).__name__}")
    if not isinstance(verify, bool):
        raise TypeError(f"verify must be True or False, got {verify!r}")
    theta = objective.check_theta(theta)
    if theta.is_complex():
        raise TypeError("top_eigenpairs needs a real θ (the Hessian of a complex state is not symmetric-real)")
    _check_choices(which, method, ceiling)
    if method == "auto":
        method = "dense" if objective.dim <= DENSE_MAX_DIM else "lanczos"
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise ValueError(f"k must be a positive int, got {k!r}")
    limit = objective.dim if method == "dense" else objective.dim - 1
    if k > limit:
        raise ValueError(f"k must be ≤ {limit} for method {method!r} with D={objective.dim}, got {k}")
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive finite number, got {tol!r}")
    if not bool(torch.isfinite(theta).all()):
        raise ValueError("theta has non-finite entries: the Hessian spectrum is undefined there")
    _check_budget(max_matvecs)
    if v0 is not None and (not isinstance(v0, Tensor) or v0.shape[0] != objective.dim or v0.ndim not in (1, 2)):
        raise ValueError(f"v0 must be a tensor of shape ({objective.dim},) or ({objective.dim}, p)")
    diagonal = None if preconditioner is None else check_preconditioner(
        preconditioner, objective.dim, dtype=theta.dtype, device=theta.device)
    generator = torch.Generator(device=theta.device).manual_seed(seed)
    return SOLVERS[method](objective, theta.detach(), k, which, v0=v0, tol=tol, atol=atol,
                           max_matvecs=max_matvecs, max_basis=max_basis, generator=generator,
                           spare=spare, preconditioner=diagonal, verify=verify, ceiling=ceiling)


def sharpness(objective: Objective, theta: Tensor, tol: float = 1e-4, **kwargs) -> float:
    """λ_max(∇²E(θ)), the sharpness, as a float (λ₁(P⁻¹H) with ``preconditioner=``, see :func:`top_eigenpairs`)."""
    return float(top_eigenpairs(objective, theta, 1, "LA", tol=tol, **kwargs).values[0])


class EigenTracker:
    """Follows the top-k eigenpairs of H(θ) along a trajectory, warm-starting each solve.

    Each :meth:`update` starts from the previous eigenvectors plus ``extra``
    spare Ritz directions (default 2: on the digits EoS benchmark 0, 2, 5 and 8
    spares cost 29.3, 28.9, 30.7 and 33.2 HVPs per step for k = 10), so that a small move of θ costs fewer HVPs
    than a cold start at
    moderate tolerances (≈1e-3). At very tight tolerances (1e-8) a cold
    Lanczos run can be cheaper: its Krylov space converges superlinearly. Results are
    ordered like a cold solve (by ``which``); the sign of each vector is
    aligned with its best-overlapping predecessor, and ``overlap`` (k, k) holds
    |⟨uᵢ_new, uⱼ_old⟩| so that eigen-directions can be followed through crossings.

    **Threshold mode** (``threshold=τ``, e.g. τ = 0.75·2/h for the central flow's critical set): k adapts so
    that every eigenvalue above τ is tracked plus one sentinel below it. An update whose smallest value is
    still above τ grows k by one and solves again (warm) until one falls below or ``max_k`` is reached; when
    the two smallest are below τ and the smallest below ``shrink``·τ, the next update uses one pair fewer.
    ``result.extras["k"]`` and :attr:`k_history` report the k of every update. With a ``ceiling`` (the
    critical boundary of the central flow), pairs after the first that are known to lie below it are accepted
    at any residual (:func:`top_eigenpairs`).

    Attributes:
        last: the latest :class:`Eigenpairs` (None before the first update).
        total_matvecs, updates: running cost counters.
        k_history: the k of every update (threshold mode changes it).
    """

    def __init__(self, k: int = 1, which: str = "LA", tol: float = 1e-3, *, extra: int | None = None,
                 method: str = "auto", max_matvecs: int | None = None, seed: int = 0,
                 threshold: float | None = None, max_k: int | None = None, shrink: float = 0.5,
                 verify: bool = True, ceiling: float | None = None) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
            raise ValueError(f"k must be a positive int, got {k!r}")
        if which not in WHICH:
            raise ValueError(f"which must be one of {WHICH}, got {which!r}")
        extra = 2 if extra is None else extra
        if isinstance(extra, bool) or not isinstance(extra, int) or extra < 0:
            raise ValueError(f"extra must be a non-negative int, got {extra!r}")
        if isinstance(tol, bool) or not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol > 0):
            raise ValueError(f"tol must be a positive finite number, got {tol!r}")
        if method not in ("auto", *SOLVERS):
            raise ValueError(f"method must be one of {('auto', *SOLVERS)}, got {method!r}")
        if threshold is not None and not (isinstance(threshold, (int, float)) and math.isfinite(threshold)):
            raise ValueError(f"threshold must be a finite number or None, got {threshold!r}")
        max_k = max(k, 64) if max_k is None else max_k  # threshold mode's cap on k (64 unless k is larger)
        if isinstance(max_k, bool) or not isinstance(max_k, int) or max_k < k:
            raise ValueError(f"max_k must be an int ≥ k = {k}, got {max_k!r}")
        if not 0 <= shrink < 1:
            raise ValueError(f"shrink must be in [0, 1), got {shrink!r}")
        self.k = k
        self.which = which
        self.tol = tol
        self.extra = extra
        self.method = method
        self.max_matvecs = max_matvecs
        self.seed = seed
        self.threshold = threshold
        self.max_k = max_k
        self.shrink = shrink
        if not isinstance(verify, bool):
            raise TypeError(f"verify must be True or False, got {verify!r}")
        self.verify = verify
        _check_ceiling(ceiling, which)
        self.ceiling = ceiling
        self.k_history: list[int] = []
        self.last: Eigenpairs | None = None
        self._basis: Tensor | None = None
        self.total_matvecs = 0
        self.stamp = -math.inf  # flow time of the last solve, for callers that refresh on a clock
        self.certified = -math.inf  # flow time of the last certified solve, for callers that certify on a clock
        self.updates = 0

    def update(self, objective: Objective, theta: Tensor, preconditioner: Tensor | float | None = None, *,
               verify: bool | None = None) -> Eigenpairs:
        """Eigenpairs at θ, warm-started from the previous call (k adapted in threshold mode).

        With a ``preconditioner``, those of P^{-1/2} H P^{-1/2} (:func:`top_eigenpairs`; P may change between calls, the
        previous vectors still start the solve). ``verify`` overrides the tracker's setting for this update (a
        caller that certifies the set once per so many updates, :class:`~flows.dynamics.central.CentralState`).
        """
        if verify is not None and not isinstance(verify, bool):
            raise TypeError(f"verify must be True, False or None, got {verify!r}")
        verify = self.verify if verify is None else verify
        dense = self.method == "dense" or (self.method == "auto" and objective.dim <= DENSE_MAX_DIM)
        limit = min(self.max_k, objective.dim if dense else objective.dim - 1)  # as top_eigenpairs allows
        if self.threshold is not None:
            self.k = min(self.k, limit)
        result, spent = self._solve(objective, theta, preconditioner, verify), 0
        while self.threshold is not None and float(result.values[-1]) > self.threshold and self.k < limit:
            spent += result.matvecs
            self.k += 1  # the smallest tracked value is still above τ: one more pair, solved again (warm)
            result = self._solve(objective, theta, preconditioner, verify)
        result.matvecs += spent
        if self.threshold is not None and self.k > 1 and float(result.values[-2]) < self.threshold \
                and float(result.values[-1]) < self.shrink * self.threshold:
            self.k -= 1  # a spare fell well below τ: one pair fewer from the next update on
        result.extras["k"] = int(result.values.numel())
        self.k_history.append(result.extras["k"])
        if self.last is not None and self.last.vectors.shape == result.vectors.shape:
            overlap = result.vectors.T @ self.last.vectors.to(result.vectors)
            best = torch.argmax(overlap.abs(), dim=1)
            signs = torch.sign(overlap.gather(1, best[:, None]).squeeze(1))
            signs[signs == 0] = 1
            result.vectors = result.vectors * signs
            result.extras["overlap"] = (overlap * signs[:, None]).abs()
        self.last = result
        self.total_matvecs += result.matvecs
        self.updates += 1
        return result

    def _solve(self, objective: Objective, theta: Tensor, preconditioner: Tensor | float | None,
               verify: bool) -> Eigenpairs:
        v0 = None
        if self._basis is not None and self._basis.device == theta.device:
            v0 = self._basis.to(theta.dtype)
        result = top_eigenpairs(objective, theta, self.k, self.which, v0=v0, tol=self.tol,
                                method=self.method, max_matvecs=self.max_matvecs,
                                seed=self.seed + self.updates, spare=self.extra, preconditioner=preconditioner,
                                verify=verify, ceiling=self.ceiling)
        spare = result.extras.pop("spare", None)
        self._basis = result.vectors if spare is None else torch.cat([result.vectors, spare], dim=1)
        return result

    @property
    def basis(self) -> Tensor | None:
        """The warm-start block of the next solve: the last eigenvectors and ``extra`` spare vectors, (D, k + extra)."""
        return self._basis

    def reset(self) -> None:
        """Forget the warm start (the next update is a cold solve)."""
        self._basis, self.last = None, None
