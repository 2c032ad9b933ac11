"""DAL-p's stability/performance trade-off (principal-flow paper, arXiv 2302.01952) against a constant-rate sweep.

DAL-p sets h = 2/vᵖ with v = ‖Hg‖/‖g‖ (the curvature along the gradient): larger p takes smaller steps where the
curvature is high, i.e. trades speed for stability. On the digits fc-tanh MLP (½-MSE), for p in ``ps`` and for the
constant rates ``rates``, full batch (``steps`` steps) and mini-batch (``batch_size``, ``epochs`` epochs, DAL with
finite-difference Hg), the same measures as ``polyak-family``: final and best train loss, test accuracy, median
rate and the fraction of measured steps beyond the edge of stability, hₙλ_max(θₙ)/2 > 1 (the full-batch
sharpness, every ``sharpness_every`` steps). Run it over seeds (``--seeds 0,1,2``) for mean ± sd.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis import plots
from experiments.cli.common import read_json, save_figure, write_json, write_table
from experiments.cli.context import RunContext
from experiments.zoo.training import Schedule, digits_problem, fullbatch, minibatch

KEYS = ("final train loss", "test acc", "beyond the edge (hλ/2 > 1)", "median lr")


@dataclass
class Config(Schedule):
    ps: tuple[float, ...] = (0.25, 0.5, 1.0, 1.5, 2.0)
    """DAL exponents p (h = 2/vᵖ, v = ‖Hg‖/‖g‖)."""
    rates: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.4)
    """Constant learning rates of the comparison sweep."""

    def validate(self) -> None:
        super().validate()
        if not self.ps or any(not p > 0 for p in self.ps):
            raise ValueError(f"ps must be positive, got {self.ps}")
        if not self.rates or any(not h > 0 for h in self.rates):
            raise ValueError(f"rates must be positive, got {self.rates}")


def run(config: Config, out: Path, ctx: RunContext) -> None:
    rows = []
    for mode in ("full", "mini"):
        for spec in [f"dal:{p:g}" for p in config.ps] + [f"constant:{h:g}" for h in config.rates]:
            key = f"{mode}/{spec.replace(':', '_')}"
            path = out / f"{key}.json"
            rows.append(ctx.unit(key, lambda spec=spec, mode=mode, path=path: _one(mode, spec, config, path, ctx),
                                 lambda path=path: read_json(path)))
    write_json(out / "dal_summary.json", rows)
    print(write_table(out / "dal_summary.csv", rows))


def _one(mode: str, spec: str, config: Config, path: Path, ctx) -> dict:
    problem = digits_problem(ctx.seed, config.n_train, config.widths, config.data)
    if mode == "full":
        row, _ = fullbatch(problem, spec, config.steps, config.sharpness_every, config.sharpness_every, ctx)
        setting = "full batch"
    else:
        row = minibatch(problem, spec, config.epochs, config.batch_size, config.sharpness_every, ctx,
                        ctx.unit_seed(str(path)))["row"]
        setting = f"mini-batch {config.batch_size}"
    row = {"setting": setting, "p or h": float(spec.split(":")[1]), **row}
    write_json(path, row)
    return row


def _series(runs: list[list[dict]], setting: str, dal: bool, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(x values, values (runs, points)) of DAL's (x = p) or the constants' (x = h) rows of one setting."""
    chosen = [[r for r in rows if r["setting"] == setting and r["method"].startswith("DAL") == dal]
              for rows in runs]
    values = np.array([[r[key] if r["status"] == "complete" or key == "beyond the edge (hλ/2 > 1)" else np.nan
                        for r in rows] for rows in chosen], dtype=float)  # a diverged run has no final loss to draw
    return np.array([r["p or h"] for r in chosen[0]]), values


def _draw(runs: list[list[dict]], figures: Path) -> list[Path]:
    settings = list(dict.fromkeys(r["setting"] for r in runs[0]))
    titles = {"final train loss": "final train loss (diverged runs left out)", "test acc": "test accuracy",
              "beyond the edge (hλ/2 > 1)": "fraction of steps with hλ_max/2 > 1", "median lr": "median rate h"}
    with plots.style():
        fig, axes = plots.subplots(6, ncols=3, width=4.0, height=3.1)
        for i, setting in enumerate(settings):
            colour = plots.CYCLE[i]
            for ax, key in zip(axes, KEYS):
                p, values = _series(runs, setting, True, key)
                plots.mean_band(ax, p, values, color=colour, label=f"DAL-p, {setting}", marker="o", ms=3,
                                log=key in ("final train loss", "median lr"))
                ax.set(title=titles[key], xlabel="p")
            h, losses = _series(runs, setting, False, "final train loss")
            mean_losses = np.nanmean(losses, 0)
            if np.isfinite(mean_losses).any():
                best = int(np.nanargmin(mean_losses))
                axes[0].axhline(mean_losses[best], color=colour, ls=":", lw=1.0,
                                label=f"best constant h = {h[best]:g}, {setting}")
            _, edge = _series(runs, setting, False, "beyond the edge (hλ/2 > 1)")
            _, dal_losses = _series(runs, setting, True, "final train loss")
            _, dal_edge = _series(runs, setting, True, "beyond the edge (hλ/2 > 1)")
            axes[4].plot(np.nanmean(edge, 0), np.nanmean(losses, 0), "s--", color=colour, ms=4,
                         label=f"constant h, {setting}")
            axes[4].plot(np.nanmean(dal_edge, 0), np.nanmean(dal_losses, 0), "o-", color=colour, ms=4,
                         label=f"DAL-p, {setting}")
        axes[4].set(title="trade-off: loss vs time beyond the edge", xlabel="fraction of steps with hλ_max/2 > 1",
                    ylabel="final train loss", yscale="log")
        axes[5].axis("off")
        for ax in axes[:5]:
            ax.legend(fontsize=6)
        fig.suptitle("DAL-p on the digits MLP" + (f": mean ± 1 sd over {len(runs)} seeds" if len(runs) > 1 else ""))
        return save_figure(fig, figures, "dal_tradeoff")


def plot(out: Path, figures: Path) -> list[Path]:
    return _draw([read_json(out / "dal_summary.json")], figures)


def plot_seeds(folders: list[Path], figures: Path) -> list[Path]:
    return _draw([read_json(f / "dal_summary.json") for f in folders], figures)
