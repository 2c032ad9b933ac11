"""Spectral density of the Hessian by stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017; Papyan 2020).

For a symmetric A (D, D) with eigenpairs (λⱼ, vⱼ), the spectral density is φ(t) = (1/D) Σⱼ δ(t − λⱼ). For a
Rademacher probe z (‖z‖² = D) and q₁ = z/‖z‖, m steps of Lanczos (full reorthogonalization) give a
tridiagonal T = QᵀAQ with eigenpairs (θᵢ, sᵢ); the Gauss quadrature nodes θᵢ with weights wᵢ = (sᵢ)₁² satisfy

    Σᵢ wᵢ f(θᵢ) = q₁ᵀ f(A) q₁ = zᵀ f(A) z / D     exactly for every polynomial f of degree ≤ 2m − 1,

and E_z[zᵀ f(A) z / D] = tr f(A) / D. Averaging over ``starts`` probes estimates φ as a sum of weighted
nodes; :meth:`SpectralDensity.smoothed` replaces each node by a Gaussian of standard deviation ``width``
(default 1% of the spread of the nodes), and :meth:`SpectralDensity.moment` gives tr(Aⁿ)/D with a
standard error over the probes. The probes run in lockstep, one block product per step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..objective.objective import Objective
from ..records.archive import load_record, save_record
from ..records.trajectory import check_memory
from ..validate import check_count


@dataclass(frozen=True)
class SpectralDensity:
    """Quadrature nodes (starts, m) and weights (starts, m) (each row sums to 1), and the products spent."""

    nodes: np.ndarray
    weights: np.ndarray
    matvecs: int

    @property
    def starts(self) -> int:
        """The number of random probes (Lanczos starts)."""
        return int(self.nodes.shape[0])

    def moment(self, n: int) -> tuple[float, float]:
        """(estimate of tr(Aⁿ)/D, its standard error over the probes); exact per probe for n ≤ 2m − 1."""
        per_probe = (self.weights * self.nodes ** n).sum(axis=1)
        error = per_probe.std(ddof=1) / math.sqrt(len(per_probe)) if len(per_probe) > 1 else math.inf
        return float(per_probe.mean()), float(error)

    def default_width(self) -> float:
        """The default smoothing width: 1% of the nodes' spread (1 when they coincide)."""
        spread = float(self.nodes.max() - self.nodes.min())
        return 0.01 * spread if spread > 0 else 1.0

    def smoothed(self, grid: np.ndarray, width: float | None = None) -> np.ndarray:
        """φ on ``grid``: every node a Gaussian of standard deviation ``width``, weighted, averaged over probes."""
        return self.smoothed_per_probe(grid, width).mean(axis=0)

    def smoothed_per_probe(self, grid: np.ndarray, width: float | None = None) -> np.ndarray:
        """(starts, len(grid)): probe j's smoothed estimate φⱼ(t) = Σᵢ wⱼᵢ N(t; θⱼᵢ, width²)."""
        sigma = self.default_width() if width is None else float(width)
        if not sigma > 0:
            raise ValueError(f"width must be > 0, got {width!r}")
        grid = np.asarray(grid, dtype=float)
        z = (grid[None, :, None] - self.nodes[:, None, :]) / sigma  # (starts, grid, m)
        kernel = np.exp(-0.5 * z ** 2) / (sigma * math.sqrt(2 * math.pi))
        return np.einsum("sgm,sm->sg", kernel, self.weights)

    def standard_error(self, grid: np.ndarray, width: float | None = None) -> np.ndarray:
        """The standard error of :meth:`smoothed` over the probes, sd(φⱼ(t))/√starts (inf with one probe)."""
        per_probe = self.smoothed_per_probe(grid, width)
        if per_probe.shape[0] < 2:
            return np.full(per_probe.shape[1], np.inf)
        return per_probe.std(axis=0, ddof=1) / math.sqrt(per_probe.shape[0])

    def summary(self) -> str:
        """One line: probes, Lanczos steps, the nodes' range, the products spent."""
        return (f"SpectralDensity: {self.starts} probes × {self.nodes.shape[1]} Lanczos steps, nodes in "
                f"[{self.nodes.min():.4g}, {self.nodes.max():.4g}], {self.matvecs} matvecs")

    def __repr__(self) -> str:
        return self.summary()

    def save(self, path: str | Path) -> Path:
        """Write ``path.npz`` (nodes, weights) and ``path.json``; :meth:`load` reads them back exactly."""
        return save_record(path, "spectral_density", {"nodes": self.nodes, "weights": self.weights},
                           {"matvecs": int(self.matvecs)})

    @classmethod
    def load(cls, path: str | Path) -> SpectralDensity:
        """Read a density written by :meth:`save` (a :class:`RecordFileError` naming the file otherwise)."""
        arrays, fields = load_record(path, "spectral_density", ("nodes", "weights"))
        return cls(arrays["nodes"], arrays["weights"], int(fields.get("matvecs", 0)))


def lanczos_quadrature(op: Any, starts: int = 10, steps: int = 80, *, seed: int = 0) -> SpectralDensity:
    """Stochastic Lanczos quadrature of a symmetric operator (``shape``, ``dtype``, ``device``, ``op @ V``).

    ``steps`` is capped at D; a probe whose Krylov space is exhausted early (β ≈ 0) stops there, which is
    exact. Cost: ``starts × steps`` products, applied as ``steps`` block products of ``starts`` columns.
    """
    starts = check_count("starts", starts, minimum=1)
    steps = min(check_count("steps", steps, minimum=1), op.shape[0])
    dim = op.shape[0]
    dtype = op.dtype
    device = op.device
    check_memory(f"Lanczos bases of {starts} probes × {steps + 1} vectors of D = {dim:,}",
                 starts * (steps + 1) * dim * torch.empty(0, dtype=dtype).element_size())
    gen = torch.Generator(device="cpu").manual_seed(seed)
    z = (2 * torch.randint(0, 2, (starts, dim), generator=gen) - 1).to(dtype=dtype, device=device)
    basis = torch.zeros(starts, steps + 1, dim, dtype=dtype, device=device)  # per probe, rows contiguous
    basis[:, 0] = z / math.sqrt(dim)
    alpha = torch.zeros(steps, starts, dtype=torch.float64)
    beta = torch.zeros(steps, starts, dtype=torch.float64)
    length = torch.full((starts,), steps, dtype=torch.long)
    start = op.matvecs
    for j in range(steps):
        current = basis[:, j]
        w = (op @ current.T).T  # (starts, D): one block product for all probes
        a = (current * w).sum(dim=1)
        q = basis[:, : j + 1]  # full reorthogonalization, twice (DGKS), every probe at once
        for _ in range(2):
            w = w - torch.bmm(torch.bmm(q, w[:, :, None]).transpose(1, 2), q)[:, 0]
        b = torch.linalg.vector_norm(w, dim=1)
        alpha[j], beta[j] = a.double().cpu(), b.double().cpu()
        scale = torch.clamp(alpha[: j + 1].abs().max(dim=0).values, min=1e-30)
        ended = (beta[j] <= 1e-10 * scale) & (length == steps)
        length[ended] = j + 1
        basis[:, j + 1] = w / torch.clamp(b, min=torch.finfo(dtype).tiny)[:, None]
        if bool((length <= j + 1).all()):
            break
    nodes, weights = _gauss_rules(alpha, beta, length)
    return SpectralDensity(nodes, weights, op.matvecs - start)


def _gauss_rules(alpha: Tensor, beta: Tensor, length: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of each probe's tridiagonal T (padded with zero-weight nodes to a common length)."""
    m = int(length.max())
    nodes, weights = np.zeros((alpha.shape[1], m)), np.zeros((alpha.shape[1], m))
    for s in range(alpha.shape[1]):
        n = int(length[s])
        t = torch.diag(alpha[:n, s]) + torch.diag(beta[: n - 1, s], 1) + torch.diag(beta[: n - 1, s], -1)
        theta, vectors = torch.linalg.eigh(t)
        nodes[s, :n], weights[s, :n] = theta.numpy(), (vectors[0] ** 2).numpy()
        nodes[s, n:] = theta[-1].item()
    return nodes, weights


def spectral_density(objective: Objective, theta: Tensor, starts: int = 10, steps: int = 80, *,
                     seed: int = 0) -> SpectralDensity:
    """:func:`lanczos_quadrature` of ∇²E(θ) (one retained gradient graph for all products)."""
    op = objective.hessian_operator(theta)
    try:
        return lanczos_quadrature(op, starts, steps, seed=seed)
    finally:
        op.release()
