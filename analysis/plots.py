"""One plotting style for every driftlab figure: colour-blind-safe colours, labelled axes.

Functions here build and return matplotlib figures; they never write files
(the experiments save them) and never choose a backend (matplotlib picks a
non-interactive one on a machine without a display). Colours follow Okabe & Ito (2008).
"""
from __future__ import annotations

from collections.abc import Iterable

import matplotlib.pyplot as plt
import numpy as np
from cycler import cycler

from flows import FLOWS

OKABE_ITO = {
    "black": "#000000", "orange": "#E69F00", "sky": "#56B4E9", "green": "#009E73",
    "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "purple": "#CC79A7",
}
METHOD_COLORS = {
    "gd": OKABE_ITO["black"], "gf": OKABE_ITO["blue"], "igr": OKABE_ITO["orange"],
    "third_order": OKABE_ITO["purple"], "pf": OKABE_ITO["vermillion"], "pf_topk": OKABE_ITO["green"],
    "pf_topk_igr": OKABE_ITO["sky"],
    "central": "#5A5A5A",  # outside Okabe–Ito's eight: a dark grey, told apart from GD's black by its dashes
    "symmetrized": OKABE_ITO["purple"], "symmetrized_pf": OKABE_ITO["yellow"],
}
METHOD_LABELS = {"gd": "GD", **{name: flow.label for name, flow in FLOWS.items()},
                 "symmetrized": "symmetrized center", "symmetrized_pf": "PF top-k, symmetrized center"}
CYCLE = [OKABE_ITO[c] for c in ("blue", "orange", "green", "vermillion", "purple", "sky", "yellow", "black")]

STYLE = {
    "figure.dpi": 110, "savefig.dpi": 200, "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9,
    "legend.fontsize": 8, "legend.frameon": False, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.25, "lines.linewidth": 1.4, "figure.constrained_layout.use": True,
    "axes.prop_cycle": cycler(color=CYCLE),
}


def style():
    """A context manager applying the driftlab style."""
    return plt.rc_context(STYLE)


def color(method: str) -> str:
    """The colour of a flow or method in every figure (the flow records' own, else a fixed palette)."""
    return METHOD_COLORS.get(method, OKABE_ITO["sky"])


def label(method: str, lr: float | None = None) -> str:
    """The legend label of a flow or method, with the rate when given."""
    name = METHOD_LABELS.get(method, method)
    return name if lr is None else f"{name}, h={lr:g}"


def mean_band(ax, x, series, *, color: str | None = None, label: str | None = None, log: bool = False,
              **kw) -> None:
    """The mean over seeds of ``series`` (seeds, len(x)) with a band of ± one sample standard deviation.

    Non-finite entries (a seed that diverged, a step not measured) are left out point by point; with ``log``
    the mean and band are taken of log10 of the values (a geometric mean, the band a factor), as a loss on a
    log axis needs.
    """
    values = np.asarray(series, dtype=float)
    if values.ndim != 2:
        raise ValueError(f"series must be (seeds, points), got shape {values.shape}")
    if log:
        values = np.log10(np.where(values > 0, values, np.nan))
    finite = np.isfinite(values)
    count = finite.sum(axis=0)
    keep = count > 0
    filled = np.where(finite, values, 0.0)
    mean = np.full(values.shape[1], np.nan)
    mean[keep] = filled[:, keep].sum(axis=0) / count[keep]
    spread = np.zeros_like(mean)
    several = count > 1
    deviations = np.where(finite, values - mean, 0.0)
    spread[several] = np.sqrt((deviations[:, several] ** 2).sum(axis=0) / (count[several] - 1))
    low, high = mean - spread, mean + spread
    if log:
        mean = 10 ** mean
        low = 10 ** low
        high = 10 ** high
    x = np.asarray(x, dtype=float)
    (line,) = ax.plot(x[keep], mean[keep], color=color, label=label, **kw)
    ax.fill_between(x[keep], low[keep], high[keep], color=line.get_color(), alpha=0.2, lw=0)
    if log:
        ax.set_yscale("log")


def contour(ax, fn, xlim: tuple[float, float], ylim: tuple[float, float], levels: int = 25,
            log: bool = True) -> None:
    """Filled contours of a 2-D function ``fn(X, Y) -> Z`` (numpy) on ``ax``."""
    xs, ys = np.linspace(*xlim, 300), np.linspace(*ylim, 300)
    x, y = np.meshgrid(xs, ys)
    z = fn(x, y)
    if log:
        z = np.log10(z - z.min() + 1e-6)
    ax.contourf(x, y, z, levels=levels, cmap="Greys", alpha=0.35)
    ax.contour(x, y, z, levels=levels, colors="0.6", linewidths=0.4)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)


def subplots(n: int, ncols: int | None = None, width: float = 3.4, height: float = 2.9, **kw):
    """A figure with ``n`` axes in rows of ``ncols`` (a flat list of axes), sized per panel."""
    ncols = ncols or n
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, **kw)
    return fig, list(axes.ravel())


def close(figs: Iterable) -> None:
    """Close figures (after saving) so that long runs do not hold them."""
    for fig in figs:
        plt.close(fig)


def spectral_density(ax, density, *, lr: float | None = None, eigenvalues=None, width: float | None = None,
                     points: int = 1000) -> None:
    """The smoothed Hessian spectral density (log scale) of a :class:`flows.curvature.density.SpectralDensity`.

    With ``lr`` the stability edge 2/h is drawn; ``eigenvalues`` (the top-k, say) are marked and coloured by
    their principal-flow regime: Re c(hλ) < 0 (the PF contracts that direction, blue) or > 0 (it grows,
    vermillion), c(x) = log(1 − x)/x.
    """
    import torch

    from flows import pf_coefficient

    w = density.default_width() if width is None else width
    grid = np.linspace(density.nodes.min() - 5 * w, density.nodes.max() + 5 * w, points)
    ax.semilogy(grid, np.maximum(density.smoothed(grid, w), 1e-12), color=OKABE_ITO["black"], lw=1.0,
                label="density (SLQ)")
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
