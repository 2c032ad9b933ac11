"""The principal flow's instability analysis on a network: does the PF's loss rate foresee GD's loss spikes?

The principal-flow paper (arXiv 2302.01952) explains GD's instabilities through the PF coefficients: along the
principal flow dE/dt = Σᵢ Re c(hλᵢ)(gᵀuᵢ)², c(x) = log(1 − x)/x, so the loss can only rise when a direction
with hλᵢ > 2 (Re c > 0) carries enough of the gradient. Here, along full-batch GD on the digits MLP at h = ``lr``
(the edge-of-stability run of ``eos-digits``), every ``every`` steps the top-``k`` eigenpairs are tracked and
:class:`analysis.PFLossRate` records the alignments (gᵀuᵢ)²/‖g‖², the coefficients Re c(hλᵢ) and the predicted
rate (top k exact, the rest as gradient flow), beside gradient flow's −‖g‖². They are compared with GD's
observed one-step rate (E(θₙ₊₁) − E(θₙ))/h over all steps and over the ``before`` steps preceding every loss
spike (:func:`analysis.loss_spikes`): how often the predicted sign matches, the median size ratio, and how many
steps before a spike the PF first predicts a rise.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis import PFLossRate, loss_rate_agreement, plots
from experiments.cli.common import read_json, save_figure, write_json, write_table
from experiments.cli.context import RunContext
from experiments.zoo.datasets import check_data, check_digits_widths, digits_objective
from flows import Trajectory, gradient_descent


@dataclass
class Config:
    lr: float = 0.2
    """GD's learning rate h."""
    steps: int = 600
    """GD steps."""
    k: int = 4
    """Top eigenpairs in the PF's predicted loss rate Σᵢ Re c(hλᵢ)(gᵀuᵢ)²."""
    every: int = 1
    """Record the PF's prediction every this many steps."""
    before: int = 20
    """Steps before each spike that are scored."""
    n_train: int = 0
    """Training examples (0: the whole digits training split)."""
    widths: tuple[int, ...] = (64, 200, 200, 10)
    """The fc-tanh MLP's layer widths (64 inputs, 10 outputs)."""
    data: str = "digits"
    """Data set: 'digits', or a classification set of experiments.zoo.papers (mnist1d, moons, circles, cohen-5k:PATH,
    cf-1k-4class:PATH, eoss-seeded:PATH); the MLP's first and last widths follow it."""

    def validate(self) -> None:
        check_data(self.data)
        check_digits_widths(self.widths)
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for name in ("steps", "k", "every", "before"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.n_train < 0:
            raise ValueError(f"n_train must be ≥ 0, got {self.n_train}")


def run(config: Config, out: Path, ctx: RunContext) -> None:
    ctx.unit("gd", lambda: _gd(config, out, ctx), lambda: Trajectory.load(out / "gd"))
    gd = Trajectory.load(out / "gd")
    agreement = loss_rate_agreement(gd, config.lr, config.before)
    write_json(out / "agreement.json", agreement)
    if gd.status != "complete":  # the scores then cover only the steps before it stopped: say so, loudly
        print(f"driftlab: warning: pf-spikes: GD at h = {config.lr:g} ended {gd.status} after {len(gd) - 1} of "
              f"{config.steps} steps; the scores cover those steps only", file=sys.stderr)
    rows = [{"steps scored": name, "GD": f"{gd.status} ({len(gd) - 1} steps)", "spikes": len(agreement["spikes"]),
             **agreement[key]}
            for name, key in (("all measured steps", "all"), (f"{config.before} steps before each spike",
                                                                "before spikes"))]
    leads = [s["PF lead (steps)"] for s in agreement["spikes"]]
    for row in rows:
        row["spikes the PF foresaw"] = sum(lead is not None for lead in leads)
        row["median PF lead (steps)"] = float(np.median([x for x in leads if x is not None])) if any(
            x is not None for x in leads) else math.nan
    print(write_table(out / "pf_spikes_summary.csv", rows))
    if agreement["spikes"]:
        write_table(out / "spikes" / "spikes.csv", agreement["spikes"])


def _gd(config: Config, out: Path, ctx) -> None:
    obj, _, _ = digits_objective(seed=ctx.seed, n_train=config.n_train or None, widths=config.widths,
                                 data=config.data)
    assert obj.theta0 is not None  # from_module sets it
    gd = gradient_descent(obj, obj.theta0.to(ctx.device), lr=config.lr, steps=config.steps, states="none",
                          callbacks=[PFLossRate(k=config.k, every=config.every)], progress=ctx.progress)
    gd.save(out / "gd")


def _rates(gd: Trajectory, lr: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    losses = np.asarray(gd.losses, dtype=float)
    observed = np.full(len(losses), np.nan)
    observed[:-1] = (losses[1:] - losses[:-1]) / lr
    return observed, gd.metric("pf_loss_rate"), gd.metric("gf_loss_rate")


def plot(out: Path, figures: Path) -> list[Path]:
    gd = Trajectory.load(out / "gd")
    config = read_json(out / "manifest.json")["config"]
    agreement = read_json(out / "agreement.json")
    lr = float(config["lr"])
    observed, pf, gf = _rates(gd, lr)
    steps = np.arange(len(gd))
    spikes = [s["spike step"] for s in agreement["spikes"]]
    with plots.style():
        fig, axes = plots.subplots(4, ncols=2, width=5.0, height=3.0)
        axes[0].semilogy(steps, gd.losses, color="black", lw=0.9)
        for s in spikes:
            axes[0].axvline(s, color=plots.OKABE_ITO["vermillion"], lw=0.7, ls=":")
        axes[0].set(title=f"GD loss, h = {lr:g} (spikes dotted)", xlabel="GD step", ylabel="½‖f − y‖²")
        for ax, (low, high) in ((axes[1], (0, len(gd))), (axes[2], _zoom(spikes, len(gd), config["before"]))):
            ax.plot(steps[low:high], observed[low:high], color="black", lw=0.9, label="GD (E(θₙ₊₁) − E(θₙ))/h")
            ax.plot(steps[low:high], pf[low:high], color=plots.color("pf"), lw=0.9, label="PF dE/dt (top-k + GF)")
            ax.plot(steps[low:high], gf[low:high], color=plots.color("gf"), lw=0.9, ls="--", label="GF −‖g‖²")
            ax.set_yscale("symlog", linthresh=1e-3)
            ax.axhline(0.0, color="0.4", lw=0.6)
            ax.set(xlabel="GD step", ylabel="loss rate")
            ax.legend(fontsize=6)
        axes[1].set_title("observed and predicted loss rates")
        axes[2].set_title("around the first spike")
        for i in range(int(config["k"])):
            if f"alignment_{i}" not in gd.metrics:
                break
            align = gd.metric(f"alignment_{i}")
            ok = np.isfinite(align)
            axes[3].semilogy(steps[ok], align[ok], lw=0.8, label=f"(gᵀu{i + 1})²/‖g‖²")
        axes[3].set(title="gradient alignment with the top eigenvectors", xlabel="GD step")
        axes[3].legend(fontsize=6)
        fig.suptitle("Principal-flow instability analysis on the digits MLP (edge of stability)")
        return save_figure(fig, figures, "pf_spikes")


def _zoom(spikes: list[int], n: int, before: int) -> tuple[int, int]:
    if not spikes:
        return 0, min(n, 3 * before)
    return max(spikes[0] - 2 * before, 0), min(spikes[0] + before, n)
