"""Edge of stochastic stability: SGD on digits with several batch sizes, batch sharpness and λ_max against 2/h.

Andreyev & Beneventano ("Edge of Stochastic Stability", arXiv 2412.20553): mini-batch SGD drives the batch
sharpness E_B[g_Bᵀ H_B g_B / ‖g_B‖²] to 2/h while the full-batch λ_max settles below it, lower for smaller
batches. Here: SGD (:class:`analysis.controllers.stochastic.SGDController`, epochs of shuffled batches) on the digits
fc-tanh MLP
with ½-MSE at rate h for each batch size; every ``every`` steps the batch sharpness (Monte-Carlo, to a 5% standard
error, :func:`flows.curvature.stochastic.batch_sharpness`) and λ_max of the full-batch Hessian. Reported per batch
size: the medians of h·(batch sharpness)/2 and h·λ_max/2 over the last half of the run (1 is the edge), the batch
sharpness's mean standard error and HVPs per estimate, the final full-batch loss.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis import plots
from analysis.controllers.stochastic import SGDController
from analysis.monitors.sharpness import BatchSharpness, Sharpness
from experiments.cli.common import read_json, save_figure, sweep_folders, write_json, write_table
from experiments.cli.context import RunContext
from experiments.zoo.datasets import (
    check_data,
    check_digits_widths,
    fc_tanh,
    fitted_widths,
    half_mse,
    load_split,
)
from flows import Trajectory, gradient_descent
from flows.curvature.stochastic import MiniBatches


@dataclass
class Config:
    batch_sizes: tuple[int, ...] = (16, 64, 256)
    """SGD batch sizes, one run each."""
    lr: float = 0.2
    """SGD's learning rate h."""
    steps: int = 2000
    """SGD steps per batch size."""
    every: int = 100
    """Measure λ_max and the batch sharpness every this many steps."""
    rel_error: float = 0.05
    """Relative standard error at which the batch-sharpness estimate stops drawing batches."""
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
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ValueError(f"batch_sizes must be positive, got {self.batch_sizes}")
        if not (self.lr > 0 and self.rel_error > 0):
            raise ValueError("lr and rel_error must be > 0")
        if self.steps < 1 or self.every < 1 or self.n_train < 0:
            raise ValueError("steps and every must be ≥ 1, n_train ≥ 0")


def run(config: Config, out: Path, ctx: RunContext) -> None:
    from flows import Objective

    split = load_split(config.data, seed=ctx.seed, n_train=config.n_train or None)
    model = fc_tanh(fitted_widths(config.widths, split), seed=ctx.seed)
    data = split.train
    obj = Objective.from_module(model, half_mse, data, name="digits-fc-tanh")
    assert obj.theta0 is not None  # from_module sets it
    theta0 = obj.theta0.to(ctx.device)
    for b in config.batch_sizes:  # fail before the first run, naming the argument
        MiniBatches(model, half_mse, data, b)
    rows = []
    for b in config.batch_sizes:
        folder = out / f"b{b}"
        rows.append(ctx.unit(f"b{b}", lambda b=b, folder=folder: _one(obj, model, data, theta0, b, config, folder,
                                                                      ctx),
                             lambda folder=folder: read_json(folder / "row.json")))
    print(write_table(out / "eos_sgd.csv", rows))


def _one(obj, model, data, theta0, b: int, config: Config, folder: Path, ctx) -> dict:
    batches = MiniBatches(model, half_mse, data, b, seed=ctx.unit_seed(f"b{b}"))
    probe = MiniBatches(model, half_mse, data, b, seed=ctx.unit_seed(f"b{b}/probe"))
    traj = gradient_descent(obj, theta0, config.lr, config.steps, controller=SGDController(batches), states="none",
                            callbacks=[Sharpness(every=config.every),
                                       BatchSharpness(probe, every=config.every, rel_error=config.rel_error)],
                            progress=ctx.progress)
    ctx.check()
    traj.save(folder / "sgd")
    h = config.lr
    bs = traj.metric("batch_sharpness")
    lam = traj.metric("sharpness")
    se = traj.metric("batch_sharpness_se")
    measured = np.flatnonzero(np.isfinite(bs))
    late = measured[measured >= len(traj) // 2]
    row = {"batch size": b, "h": h, "steps": len(traj) - 1,
           "h·batch sharpness/2 (median, last half)": float(f"{h * np.median(bs[late]) / 2:.4g}"),
           "h·λ_max/2 (median, last half)": float(f"{h * np.median(lam[late]) / 2:.4g}"),
           "batch sharpness s.e. / mean": float(f"{np.nanmean(se[measured] / bs[measured]):.3g}"),
           "final loss": float(f"{traj.losses[-1]:.4g}"), "status": traj.status}
    write_json(folder / "row.json", row)
    return row


def plot(out: Path, figures: Path) -> list[Path]:
    folders = sweep_folders(out, "b")
    with plots.style():
        fig, (ax_b, ax_s, ax_l) = plots.subplots(3, ncols=3, height=3.0)
        for i, folder in enumerate(folders):
            traj = Trajectory.load(folder / "sgd")
            h = traj.config["lr"]
            colour = plots.CYCLE[i % len(plots.CYCLE)]
            label = f"b = {folder.name[1:]}"
            steps = np.arange(len(traj))
            bs, se = traj.metric("batch_sharpness"), traj.metric("batch_sharpness_se")
            m = np.isfinite(bs)
            ax_b.errorbar(steps[m], h * bs[m] / 2, yerr=h * se[m] / 2, fmt="o-", ms=2, color=colour, label=label)
            lam = traj.metric("sharpness")
            s = np.isfinite(lam)
            ax_s.plot(steps[s], h * lam[s] / 2, "o-", ms=2, color=colour, label=label)
            ax_l.semilogy(steps, traj.losses, color=colour, lw=0.7, label=label)
        for ax in (ax_b, ax_s):
            ax.axhline(1, ls=":", color="k")
        ax_b.set_title("h · batch sharpness / 2")
        ax_s.set_title("h · λ_max / 2 (full batch)")
        ax_l.set_title("full-batch train loss (½-MSE)")
        for ax in (ax_b, ax_s, ax_l):
            ax.set_xlabel("SGD step")
            ax.legend(fontsize=7)
        fig.suptitle("SGD on the digits fc-tanh MLP: the edge of stochastic stability")
        return save_figure(fig, figures, "eos_sgd")
