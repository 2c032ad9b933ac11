"""Figures of the Hessian kit's records: the spectral density with its error band, a loss plane with a path."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from flows import pf_coefficient
from flows.curvature.density import SpectralDensity
from flows.curvature.landscape import Plane

from .house import OKABE_ITO
from .runs import panels


def spectral_density(ax: Axes, density: SpectralDensity, *, lr: float | None = None, eigenvalues=None,
                     width: float | None = None, points: int = 1000, errors: bool = True) -> None:
    """The smoothed Hessian spectral density (log scale) of a :class:`flows.curvature.density.SpectralDensity`.

    With ``errors`` a band of ± one standard error over the probes (sd(φⱼ)/√probes) is shaded. With ``lr`` the
    stability edge 2/h is drawn; ``eigenvalues`` (the top-k, say) are marked and coloured by their principal-flow
    regime: Re c(hλ) < 0 (the PF contracts that direction, blue) or > 0 (it grows, vermillion), c(x) = log(1 − x)/x.
    """
    w = density.default_width() if width is None else width
    grid = np.linspace(density.nodes.min() - 5 * w, density.nodes.max() + 5 * w, points)
    mean = density.smoothed(grid, w)
    ax.semilogy(grid, np.maximum(mean, 1e-12), color=OKABE_ITO["black"], lw=1.0, label="density (SLQ)")
    if errors and density.starts > 1:
        err = density.standard_error(grid, w)
        ax.fill_between(grid, np.maximum(mean - err, 1e-12), np.maximum(mean + err, 1e-12),
                        color=OKABE_ITO["black"], alpha=0.2, lw=0, label="± 1 s.e. over probes")
    if lr is not None:
        ax.axvline(2.0 / lr, color=OKABE_ITO["orange"], ls="--", lw=1.0, label="2/h")
    if eigenvalues is not None:
        lam = np.asarray(eigenvalues, dtype=float)
        grows = (np.zeros_like(lam, dtype=bool) if lr is None else
                 pf_coefficient(torch.as_tensor(lr * lam, dtype=torch.float64)).real.numpy() > 0)
        for value, up in zip(lam, grows):
            ax.axvline(value, color=OKABE_ITO["vermillion" if up else "blue"], lw=0.8, alpha=0.8)
    ax.set_xlabel("eigenvalue λ")
    ax.set_ylabel("spectral density")


def density(result: SpectralDensity, *, lr: float | None = None, eigenvalues=None, width: float | None = None,
            ax: Axes | None = None, figsize: tuple[float, float] | None = None) -> Figure:
    """A one-panel figure of :func:`spectral_density` (see there), with a legend."""
    fig, (axis,) = panels(1, ax, figsize=figsize)
    assert axis is not None
    spectral_density(axis, result, lr=lr, eigenvalues=eigenvalues, width=width)
    axis.legend()
    return fig


def loss_plane(plane: Plane, *, path: np.ndarray | None = None, residual: np.ndarray | None = None,
               path_label: str = "path", levels: int = 25, log: bool = True,
               ax: Axes | Sequence[Axes] | None = None, figsize: tuple[float, float] | None = None) -> Figure:
    """The loss on a plane (contours), with a path's coordinates in it and, beside, its distance from the plane.

    ``path`` (n, 2) and ``residual`` (n,) are what :func:`flows.curvature.landscape.plane_coordinates` returns
    for the path's states. The loss under a projected point is the plane's; where the residual is not small, the
    path is elsewhere. Panels (plane, residual); the main one the plane. ``log`` draws log10(E − min E + 1e-12).
    """
    if path is not None and (np.ndim(path) != 2 or np.shape(path)[1] != 2):
        raise ValueError(f"path must be (n, 2) plane coordinates, got shape {np.shape(path)}")
    if residual is not None and (path is None or len(residual) != len(path)):
        raise ValueError("residual needs a path of the same length (both from plane_coordinates)")
    fig, axes = panels(2 if residual is not None else 1, ax, main=0, figsize=figsize)
    plane_ax, res_ax = axes[0], (axes[1] if len(axes) > 1 else None)
    if plane_ax is not None:
        a, b = np.meshgrid(plane.alphas, plane.betas, indexing="ij")
        z = np.asarray(plane.values, dtype=float)
        if log:
            z = np.log10(z - np.nanmin(z) + 1e-12)
        filled = plane_ax.contourf(a, b, z, levels=levels, cmap="Greys", alpha=0.5)
        plane_ax.contour(a, b, z, levels=levels, colors="0.55", linewidths=0.4)
        fig.colorbar(filled, ax=plane_ax, label="log10(E − min E)" if log else "E")
        if path is not None:
            plane_ax.plot(path[:, 0], path[:, 1], "o-", ms=1.5, lw=0.8, color=OKABE_ITO["vermillion"],
                          label=path_label)
            plane_ax.legend()
        plane_ax.set(xlabel="a (along d₁)", ylabel="b (along d₂)", title="loss plane")
    if res_ax is not None and residual is not None:
        res_ax.plot(np.arange(len(residual)), residual, color=OKABE_ITO["vermillion"])
        res_ax.set(xlabel="path point", ylabel="distance from the plane", title="off-plane residual")
    return fig
