"""Exact loss planes and the paths drawn in them, with how far each path is from the plane.

A plane through θ spanned by directions d₁, d₂ (D,) is drawn by evaluating E(θ + a·d₁ + b·d₂) on a grid
(batched with ``torch.func.vmap`` over the loss pieces; a loop where a layer does not vectorise). A path
θ(t) is drawn *projected exactly*: its coordinates (a, b) solve the least-squares problem
min ‖θ(t) − θ − a·d₁ − b·d₂‖ (the directions need not be orthogonal), and the residual ‖·‖ at the
optimum is reported, so a picture says how faithful it is (the loss under a projected point is the
plane's, not the path's, once the residual is not small).

Directions: the top Hessian eigenvector and the gradient (u₁, g), two eigenvectors, the difference of two
trajectory points, or filter-normalised random directions (Li, Xu, Taylor, Studer & Goldstein 2018): a
Gaussian direction whose every filter (a row of a weight matrix, an output channel of a convolution) is
rescaled to the norm of the same filter of θ, with biases and other one-dimensional parameters set to
zero, as they do.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..objective.objective import Objective
from ..records.archive import load_record, save_record
from ..records.trajectory import check_memory
from ..validate import check_count

PARALLEL_COSINE = 1.0 - 1e-8


@dataclass(frozen=True)
class Plane:
    """E on the grid ``alphas`` × ``betas``: ``values[i, j]`` = E(θ + alphas[i]·d₁ + betas[j]·d₂)."""

    alphas: np.ndarray
    betas: np.ndarray
    values: np.ndarray

    def summary(self) -> str:
        """One line: the grid and the loss range on it."""
        return (f"Plane: {len(self.alphas)} × {len(self.betas)} grid, a in [{self.alphas.min():.3g}, "
                f"{self.alphas.max():.3g}], b in [{self.betas.min():.3g}, {self.betas.max():.3g}], "
                f"E in [{np.nanmin(self.values):.4g}, {np.nanmax(self.values):.4g}]")

    def __repr__(self) -> str:
        return self.summary()

    def save(self, path: str | Path) -> Path:
        """Write ``path.npz`` (alphas, betas, values) and ``path.json``."""
        return save_record(path, "plane", {"alphas": self.alphas, "betas": self.betas, "values": self.values}, {})

    @classmethod
    def load(cls, path: str | Path) -> Plane:
        """Read a plane written by :meth:`save`."""
        arrays, _ = load_record(path, "plane", ("alphas", "betas", "values"))
        return cls(arrays["alphas"], arrays["betas"], arrays["values"])


def _check_directions(d1: Tensor, d2: Tensor | None) -> None:
    for name, d in (("d1", d1), ("d2", d2)):
        if d is None:
            continue
        if not bool(torch.isfinite(d).all()) or float(torch.linalg.vector_norm(d)) == 0.0:
            raise ValueError(f"direction {name} is zero or not finite: a plane needs two non-zero directions")
    if d2 is not None:
        cos = float(torch.dot(d1, d2) / (torch.linalg.vector_norm(d1) * torch.linalg.vector_norm(d2)))
        if abs(cos) > PARALLEL_COSINE:
            raise ValueError(f"directions d1 and d2 are parallel (cos = {cos:.12f}): they span a line, not a plane")


def batched_loss(objective: Objective, thetas: Tensor, chunk: int = 8) -> Tensor:
    """E at each row of ``thetas`` (n, D), ``chunk`` rows at a time through ``torch.func.vmap``.

    The default chunk of 8 was chosen by the Hessian-kit benchmark (docs/benchmarks.md): larger chunks were slower
    per point on the digits MLP.
    """
    chunk = check_count("chunk", chunk, minimum=1)

    def energy(t: Tensor) -> Tensor:
        return torch.stack([piece(t) for piece in objective.pieces]).sum()

    out = []
    with torch.no_grad():
        for i in range(0, thetas.shape[0], chunk):
            block = thetas[i:i + chunk]
            try:
                values = torch.func.vmap(energy, randomness="same")(block)
            except (RuntimeError, ValueError, NotImplementedError):  # a layer that does not vectorise
                values = torch.stack([energy(t) for t in block])
            out.append(objective._reduce(values))
    return torch.cat(out)


def loss_plane(objective: Objective, theta: Tensor, d1: Tensor, d2: Tensor, alphas: Sequence[float] | np.ndarray,
               betas: Sequence[float] | np.ndarray, *, chunk: int = 8) -> Plane:
    """E(θ + a·d₁ + b·d₂) for every a in ``alphas``, b in ``betas`` (exact, batched).

    Zero, non-finite or parallel directions raise a ValueError; so does a grid whose points would not fit in
    memory one chunk at a time (estimated before allocating).
    """
    theta = objective.check_theta(theta).detach()
    d1, d2 = (torch.as_tensor(d, dtype=theta.dtype, device=theta.device).reshape(-1) for d in (d1, d2))
    _check_directions(d1, d2)
    a = torch.as_tensor(np.asarray(alphas, dtype=float), dtype=theta.dtype, device=theta.device)
    b = torch.as_tensor(np.asarray(betas, dtype=float), dtype=theta.dtype, device=theta.device)
    check_memory(f"a plane of {len(a):,} × {len(b):,} points, {chunk} at a time, of D = {objective.dim:,}",
                 4 * chunk * objective.dim * theta.element_size() + 3 * len(a) * len(b) * theta.element_size())
    values = []
    for ai in a:  # one row of the grid at a time, its points formed one chunk at a time
        values.append(torch.cat([batched_loss(objective, theta + ai * d1 + b[j:j + chunk, None] * d2, chunk)
                                 for j in range(0, len(b), chunk)]))
    return Plane(a.cpu().numpy(), b.cpu().numpy(), torch.stack(values).cpu().numpy())


def plane_coordinates(points: np.ndarray | Tensor, theta: Tensor, d1: Tensor, d2: Tensor
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of ``points`` (n, D) in the plane θ + span(d₁, d₂), and their distances from it.

    The coordinates (n, 2) are the least-squares ones; the distances (n,) are the residuals' norms.
    """
    base = torch.as_tensor(theta).detach().to(torch.float64).reshape(-1)
    basis = torch.stack([torch.as_tensor(d).detach().to(torch.float64).reshape(-1) for d in (d1, d2)], dim=1)
    _check_directions(basis[:, 0], basis[:, 1])
    x = torch.as_tensor(np.asarray(points) if not isinstance(points, Tensor) else points).to(torch.float64)
    offsets = (x.reshape(x.shape[0], -1) - base).T  # (D, n)
    coords = torch.linalg.lstsq(basis, offsets).solution  # (2, n)
    residual = torch.linalg.vector_norm(offsets - basis @ coords, dim=0)
    return coords.T.numpy(), residual.numpy()


def interpolate(objective: Objective, start: Tensor, end: Tensor, points: int = 51,
                extend: float = 0.0, *, chunk: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """E((1 − s)·start + s·end) for s on [−extend, 1 + extend] (``points`` values): the 1-D interpolation."""
    points = check_count("points", points, minimum=2)
    s = torch.linspace(-extend, 1 + extend, points, dtype=torch.float64)
    start, end = start.detach(), end.detach()
    rows = start + s.to(start.dtype)[:, None] * (end - start)
    return s.numpy(), batched_loss(objective, rows, chunk).cpu().numpy()


def filter_normalized_direction(objective: Objective, theta: Tensor, seed: int = 0) -> Tensor:
    """A Gaussian direction with each filter rescaled to the norm of θ's filter.

    1-D parameters zeroed (Li et al. 2018). Needs an objective built by ``Objective.from_module`` (it knows the
    parameter shapes).
    """
    layout = objective.layout
    if layout is None:
        raise ValueError("filter normalisation needs the parameter shapes: build the objective with from_module")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    pieces = []
    for p in layout.split(objective.check_theta(theta).detach()):
        if p.ndim <= 1:
            pieces.append(torch.zeros_like(p).reshape(-1))
            continue
        d = torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device)
        rows, drow = p.reshape(p.shape[0], -1), d.reshape(d.shape[0], -1)
        scale = torch.linalg.vector_norm(rows, dim=1) / torch.clamp(torch.linalg.vector_norm(drow, dim=1),
                                                                      min=torch.finfo(p.dtype).tiny)
        pieces.append((drow * scale[:, None]).reshape(-1))
    return torch.cat(pieces)
