"""Stochastic trace of a symmetric operator: Hutchinson and Hutch++, with a standard error.

For A (D, D) symmetric and Rademacher probes z (entries ±1, E[zzᵀ] = I):

* Hutchinson: tr A ≈ (1/m) Σᵢ zᵢᵀ A zᵢ; standard error s/√m with s the sample standard deviation of the
  zᵢᵀ A zᵢ (Hutchinson 1989).
* Hutch++ (Meyer, Musco, Musco, Woodruff 2021, Algorithm 1): with a budget of m products, S, G of m/3 probes
  each, Q = orth(A S), tr A ≈ tr(QᵀAQ) + (3/m) tr(Gᵀ(I − QQᵀ) A (I − QQᵀ) G). The first term is exact given
  Q; the standard error is Hutchinson's on the deflated remainder. It needs O(1/ε) products for relative
  error ε where Hutchinson needs O(1/ε²), and wins whenever the spectrum is dominated by a few eigenvalues,
  as network Hessians are.

``op`` is any operator with ``shape``, ``dtype``, ``device``, ``op @ V`` (V of shape (D, b)) and a ``matvecs``
counter: a :class:`~flows.objective.hessian.HessianOperator`, a :class:`~flows.curvature.operators.MatrixOperator`, or a
:class:`~flows.curvature.operators.SubsetOperator` for the curvature of some parameters only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..objective.objective import Objective
from ..validate import check_count
from .operators import SubsetOperator

TRACE_METHODS = ("hutch++", "hutchinson")


@dataclass(frozen=True)
class TraceEstimate:
    """An estimate of tr A.

    ``value`` ± ``standard_error`` from ``matvecs`` products (``samples`` probes in the stochastic part).
    """

    value: float
    standard_error: float
    matvecs: int
    samples: int
    method: str

    def __str__(self) -> str:
        return (f"{self.value:.6g} ± {self.standard_error:.2g} ({self.method}, {self.matvecs} products, "
                f"{self.samples} probes)")


def _rademacher(dim: int, count: int, generator: torch.Generator, dtype: torch.dtype,
                device: torch.device) -> Tensor:
    signs = torch.randint(0, 2, (dim, count), generator=generator, device=generator.device)
    return (2 * signs - 1).to(dtype=dtype, device=device)


def _hutchinson_terms(op: Any, probes: Tensor, block: int) -> Tensor:
    """zᵢᵀ A zᵢ for every column zᵢ of ``probes``, applying A ``block`` columns at a time."""
    terms = [(probes[:, i:i + block] * (op @ probes[:, i:i + block])).sum(dim=0)
             for i in range(0, probes.shape[1], block)]
    return torch.cat(terms)


def _standard_error(terms: Tensor) -> float:
    return float(terms.std(unbiased=True) / math.sqrt(len(terms))) if len(terms) > 1 else math.inf


def trace(op: Any, matvecs: int = 99, method: str = "hutch++", *, seed: int = 0, block: int = 16) -> TraceEstimate:
    """Estimate tr A from ``matvecs`` products of ``op`` (see the module docstring for the estimators).

    Args:
        op: a symmetric operator, shape (D, D).
        matvecs: the budget of products (Hutch++ needs at least 3: one third each for S, its image, and G).
        method: ``"hutch++"`` or ``"hutchinson"``.
        seed: seeds the probes (results are reproducible).
        block: probes applied per block product.
    """
    if method not in TRACE_METHODS:
        raise ValueError(f"method must be one of {TRACE_METHODS}, got {method!r}")
    matvecs = check_count("matvecs", matvecs, minimum=3 if method == "hutch++" else 2)
    block = check_count("block", block, minimum=1)
    dim = op.shape[0]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    start = op.matvecs
    if method == "hutchinson":
        terms = _hutchinson_terms(op, _rademacher(dim, matvecs, gen, op.dtype, op.device), block)
        return TraceEstimate(float(terms.mean()), _standard_error(terms), op.matvecs - start, len(terms), method)
    third = matvecs // 3
    sketch = op @ _rademacher(dim, third, gen, op.dtype, op.device)
    q, _ = torch.linalg.qr(sketch)
    low_rank = float(torch.trace(q.T @ (op @ q)))
    g = _rademacher(dim, matvecs - 2 * third, gen, op.dtype, op.device)
    g = g - q @ (q.T @ g)  # (I − QQᵀ) G
    terms = _hutchinson_terms(_Deflated(op, q), g, block)
    return TraceEstimate(low_rank + float(terms.mean()), _standard_error(terms), op.matvecs - start, len(terms),
                         method)


class _Deflated:
    """(I − QQᵀ) A (I − QQᵀ) applied to vectors already orthogonal to Q: (I − QQᵀ) A V."""

    def __init__(self, op: Any, q: Tensor) -> None:
        self.op, self.q = op, q

    def __matmul__(self, v: Tensor) -> Tensor:
        av = self.op @ v
        return av - self.q @ (self.q.T @ av)


def hessian_trace(objective: Objective, theta: Tensor, matvecs: int = 99, method: str = "hutch++", *,
                  parameters: Any = None, seed: int = 0, block: int = 16) -> TraceEstimate:
    """The trace of ∇²E(θ), or of the block H_SS of the named ``parameters``.

    ``parameters`` are exact names or module prefixes such as ``"0."``; the estimate is :func:`trace` on the
    Hessian operator (one retained graph, ``matvecs`` products).
    """
    op = objective.hessian_operator(theta)
    try:
        if parameters is not None:
            layout = objective.layout
            if layout is None:
                raise ValueError("parameters= needs an objective built by Objective.from_module")
            return trace(SubsetOperator.of_parameters(op, layout, list(parameters)), matvecs, method, seed=seed,
                         block=block)
        return trace(op, matvecs, method, seed=seed, block=block)
    finally:
        op.release()
