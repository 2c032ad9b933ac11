"""One plotting style for every driftlab figure: colour-blind-safe colours, labelled axes.

Functions here build and return matplotlib figures; they never write files
(the experiments save them) and never choose a backend (matplotlib picks a
non-interactive one on a machine without a display). Colours follow Okabe & Ito (2008).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

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


Venue = Literal["icml", "neurips", "iclr", "jmlr"]
Column = Literal["single", "double"]


@dataclass(frozen=True)
class VenueTemplate:
    """A venue's LaTeX template: column and text widths (inches), body font size (pt), columns per page."""

    column_width: float
    text_width: float
    font_size: float
    columns: int


# Widths and sizes as tueplots (figsizes, fontsizes) takes them from the venues' style files: ICML 3.25 in
# columns on a 6.75 in page, captions at 9 pt; NeurIPS and ICLR a 5.5 in single column at 10 pt; JMLR 6.0 in
# at 10.95 pt. The figure's base size is one point below the text, ticks and legends two below that.
VENUES: dict[str, VenueTemplate] = {
    "icml": VenueTemplate(3.25, 6.75, 9.0, 2),
    "neurips": VenueTemplate(5.5, 5.5, 10.0, 1),
    "iclr": VenueTemplate(5.5, 5.5, 10.0, 1),
    "jmlr": VenueTemplate(6.0, 6.0, 10.95, 1),
}
GOLDEN = (5 ** 0.5 - 1) / 2


def venue_rc(venue: Venue, column: Column = "single", *, fraction: float = 1.0, nrows: int = 1, ncols: int = 1,
             height_ratio: float = GOLDEN) -> dict:
    """The rcParams of a figure for ``venue``: its width, its height and its font sizes.

    The width is ``fraction`` of one column (``column="single"``) or of the whole text block spanning both columns
    (``"double"``, two-column templates only); the height is ``height_ratio`` × the width of one of ``ncols``
    panels × ``nrows``. Fonts: base = the template's size − 1 pt, ticks and legend base − 2 pt.
    """
    if venue not in VENUES:
        raise ValueError(f"venue must be one of {sorted(VENUES)}, got {venue!r}")
    template = VENUES[venue]
    if column not in ("single", "double"):
        raise ValueError(f"column must be 'single' or 'double', got {column!r}")
    if column == "double" and template.columns == 1:
        raise ValueError(f"{venue} is a one-column template: column='double' has no meaning there; use "
                         f"column='single' ({template.text_width} in, the text width) and fraction= for less")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    width = fraction * (template.column_width if column == "single" else template.text_width)
    base = template.font_size - 1
    return {"figure.figsize": (width, height_ratio * width / ncols * nrows), "font.size": base,
            "axes.labelsize": base, "axes.titlesize": base, "legend.fontsize": base - 2,
            "xtick.labelsize": base - 2, "ytick.labelsize": base - 2, "figure.dpi": 150, "savefig.dpi": 300,
            "lines.linewidth": 1.0, "font.family": "serif",
            "font.serif": ["Times New Roman", "Times", "Nimbus Roman", "STIXGeneral", "DejaVu Serif"],
            "mathtext.fontset": "stix"}


def style(venue: Venue | None = None, column: Column = "single", *, fraction: float = 1.0, nrows: int = 1,
          ncols: int = 1, height_ratio: float = GOLDEN):
    """A context manager applying the driftlab style; with ``venue`` sized for that template (:func:`venue_rc`).

    Without a venue it is the gallery's house style. Inside ``with plots.style(venue="icml")`` a figure made by
    ``plt.figure()`` or by a driftlab figure function has the column's width; the rcParams are restored on exit.
    """
    rc: dict[str, Any] = dict(STYLE)
    if venue is not None:
        rc.update(venue_rc(venue, column, fraction=fraction, nrows=nrows, ncols=ncols, height_ratio=height_ratio))
    return plt.rc_context(rc)  # type: ignore[arg-type]  # the stubs list the keys as Literals


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
