"""Local error of one GD step against each flow, as a function of h, on the non-quadratic toys.

For each toy and flow, err(h) = ‖θ_flow(h) − (θ₀ − h∇E(θ₀))‖ (float64, dopri8 at
rtol 1e-13). Backward error analysis predicts slopes 2 (GF), 3 (IGR) and 4 (third
order) on a log-log plot; the PF (exact on quadratics) is at least third order.
A straight-line fit over the h grid gives the measured order.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.ticker import NullFormatter

from analysis import plots
from experiments.cli.common import read_table, save_figure, write_table
from experiments.cli.context import RunContext
from flows import FLOWS, local_error
from flows.objective import toys

EXPECTED = {name: FLOWS[name].order for name in ("gf", "igr", "third_order", "pf")}


@dataclass
class Config:
    toys: tuple[str, ...] = ("cubic", "saddle", "sharp-valley")
    """Analytic toys (names of ``flows.toys``) whose one-step local errors are measured."""
    flows: tuple[str, ...] = ("gf", "igr", "third_order", "pf")
    """Flows compared with one GD step (names of ``flows.FLOWS``)."""
    h_min: float = 0.005
    """Smallest learning rate of the log-spaced sweep."""
    h_max: float = 0.08
    """Largest learning rate of the log-spaced sweep."""
    points: int = 6
    """Learning rates in the sweep."""

    def validate(self) -> None:
        for name in self.toys:
            toys.spec(name)
        for flow in self.flows:
            if flow not in EXPECTED:
                raise ValueError(f"flows: {flow!r} is not one of {', '.join(EXPECTED)}")
        if not 0 < self.h_min < self.h_max:
            raise ValueError(f"need 0 < h_min < h_max, got {self.h_min}, {self.h_max}")
        if self.points < 2:
            raise ValueError(f"points must be ≥ 2, got {self.points}")


def run(config: Config, out: Path, ctx: RunContext) -> None:
    hs = np.geomspace(config.h_min, config.h_max, config.points)
    rows, fits = [], []
    for name in config.toys:
        obj = toys.get(name, device=ctx.device)
        for flow in config.flows:
            errs = [local_error(obj, obj.theta0, float(h), flow=flow) for h in hs]
            rows += [{"toy": name, "flow": flow, "h": float(h), "local_error": e} for h, e in zip(hs, errs)]
            ok = np.array(errs) > 0
            slope = float(np.polyfit(np.log(hs[ok]), np.log(np.array(errs)[ok]), 1)[0]) if ok.sum() >= 2 else np.nan
            fits.append({"toy": name, "flow": flow, "fitted order": round(slope, 2), "theory": EXPECTED[flow]})
    write_table(out / "local_errors.csv", rows)
    print(write_table(out / "orders.csv", fits))


def plot(out: Path, figures: Path) -> list[Path]:
    rows = read_table(out / "local_errors.csv")
    fits = {(r["toy"], r["flow"]): r["fitted order"] for r in read_table(out / "orders.csv")}
    names = list(dict.fromkeys(r["toy"] for r in rows))
    with plots.style():
        fig, axes = plots.subplots(len(names), width=3.6, height=3.2)
        for ax, name in zip(axes, names):
            for flow in dict.fromkeys(r["flow"] for r in rows if r["toy"] == name):
                sel = [r for r in rows if r["toy"] == name and r["flow"] == flow]
                h = np.array([float(r["h"]) for r in sel])
                e = np.array([float(r["local_error"]) for r in sel])
                ok = e > 0
                ax.loglog(h[ok], e[ok], "o-", ms=3, color=plots.color(flow),
                          label=f"{plots.label(flow)}: slope {fits[(name, flow)]} (theory {EXPECTED[flow]})")
            ax.set_title(textwrap.fill(f"{name}: {toys.spec(name).description}", 48), fontsize=8)
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("learning rate h")
            ax.set_ylabel("‖θ_flow(h) − θ_GD(1)‖")
            ax.legend(fontsize=7, loc="upper left")
        fig.suptitle("Local error of one GD step against each flow")
        return save_figure(fig, figures, "bea_order")
