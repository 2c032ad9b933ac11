"""Edge of stability with heavy-ball momentum: λ_max against 2(1 + β)/h on digits.

GD with heavy-ball momentum β (v ← βv + g, θ ← θ − hv) is stable on a quadratic while hλ < 2(1 + β); Cohen et
al. 2021 (arXiv 2103.00065, their appendix on momentum) find λ_max hovering at that threshold. Here each β gets
the rate h = 2(1 + β)/``threshold``, so every run faces the same edge (10 by default, the 2/h of plain GD at
h = 0.2); the sharpness is tracked by :class:`analysis.EoSDetector` (its threshold reads the run's momentum).
Reported per β: h, the first crossing, the fraction of later measurements within 10% of the threshold, the
median λ_max/threshold over the last half, the loss.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis import EoSDetector, plots
from experiments.cli.common import number_key, read_json, save_figure, sweep_folders, write_json, write_table
from experiments.cli.context import RunContext
from experiments.zoo.datasets import check_data, check_digits_widths, digits_objective
from flows import Trajectory, gradient_descent


@dataclass
class Config:
    betas: tuple[float, ...] = (0.0, 0.5, 0.9)
    """Heavy-ball momenta β (the threshold is 2(1+β)/h)."""
    threshold: float = 10.0
    """2(1+β)/h for every β: h = 2(1+β)/threshold."""
    steps: int = 600
    """GD steps per momentum."""
    sharpness_every: int = 10
    """Measure λ_max every this many steps."""
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
        if not self.betas or any(not 0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must lie in [0, 1), got {self.betas}")
        if not self.threshold > 0:
            raise ValueError(f"threshold must be > 0, got {self.threshold}")
        if self.steps < 1 or self.sharpness_every < 1 or self.n_train < 0:
            raise ValueError("steps and sharpness_every must be ≥ 1, n_train ≥ 0")


def run(config: Config, out: Path, ctx: RunContext) -> None:
    obj, _, _ = digits_objective(seed=ctx.seed, n_train=config.n_train or None, widths=config.widths,
                                 data=config.data)
    theta0 = obj.theta0.to(ctx.device)
    rows = []
    for beta in config.betas:
        key = f"beta{number_key(beta)}"
        folder = out / key
        rows.append(ctx.unit(key, lambda beta=beta, folder=folder: _one(obj, theta0, beta, config, folder, ctx),
                             lambda folder=folder: read_json(folder / "row.json")))
    print(write_table(out / "eos_momentum.csv", rows))


def _one(obj, theta0, beta: float, config: Config, folder: Path, ctx) -> dict:
    h = 2 * (1 + beta) / config.threshold
    detector = EoSDetector(sharpness_every=config.sharpness_every)
    traj = gradient_descent(obj, theta0, h, config.steps, momentum=beta, states="none", callbacks=[detector],
                            progress=ctx.progress)
    ctx.check()
    traj.save(folder / "gd")
    report = EoSDetector().detect(traj)
    sharp = traj.metric("sharpness")
    measured = np.flatnonzero(np.isfinite(sharp))
    late = measured[measured >= len(traj) // 2]
    row = {"β": beta, "h": float(f"{h:.4g}"), "2(1+β)/h": config.threshold,
           "λ_max(θ₀)": float(f"{sharp[measured[0]]:.4g}"),
           "first crossing (step)": report.first_crossing if report.first_crossing is not None else "none",
           "within 10% after it": float(f"{report.hover_fraction:.3g}"),
           "median λ_max/threshold, last half": float(f"{np.median(sharp[late]) / config.threshold:.4g}"),
           "loss spikes": len(report.spikes), "final loss": float(f"{traj.losses[-1]:.4g}"), "status": traj.status}
    write_json(folder / "row.json", row)
    return row


def plot(out: Path, figures: Path) -> list[Path]:
    folders = sweep_folders(out, "beta")
    threshold = read_json(out / "manifest.json")["config"]["threshold"]
    with plots.style():
        fig, (ax_s, ax_l) = plots.subplots(2, ncols=2, height=3.0)
        for i, folder in enumerate(folders):
            traj = Trajectory.load(folder / "gd")
            beta, h = traj.config["momentum"], traj.config["lr"]
            colour = plots.CYCLE[i % len(plots.CYCLE)]
            sharp = traj.metric("sharpness")
            m = np.isfinite(sharp)
            steps = np.arange(len(traj))
            status = "" if traj.status == "complete" else f" ({traj.status} at step {len(traj) - 1})"
            ax_s.plot(steps[m], sharp[m], "o-", ms=2, color=colour, label=f"β = {beta:g}, h = {h:.3g}{status}")
            ax_l.semilogy(steps, traj.losses, color=colour, label=f"β = {beta:g}")
        ax_s.axhline(threshold, ls=":", color="k", label="2(1+β)/h")
        ax_s.set_ylim(0, 2 * threshold)  # a diverged run's last values would flatten the rest
        ax_s.set_title("λ_max")
        ax_l.set_title("train loss (½-MSE)")
        for ax in (ax_s, ax_l):
            ax.set_xlabel("step")
            ax.legend(fontsize=7)
        fig.suptitle(f"heavy-ball GD on the digits fc-tanh MLP, every β at 2(1+β)/h = {threshold:g}")
        return save_figure(fig, figures, "eos_momentum")


def plot_seeds(folders: list[Path], figures: Path) -> list[Path]:
    """λ_max and the loss per β over seeds: the mean with a ± 1 sd band (a diverged seed counts until it stops)."""
    threshold = read_json(folders[0] / "manifest.json")["config"]["threshold"]
    with plots.style():
        fig, (ax_s, ax_l) = plots.subplots(2, ncols=2, height=3.0)
        for i, unit in enumerate(sweep_folders(folders[0], "beta")):
            runs = [Trajectory.load(f / unit.name / "gd") for f in folders]
            beta, h = runs[0].config["momentum"], runs[0].config["lr"]
            n = max(len(t) for t in runs)
            sharp = np.array([_padded(t.metric("sharpness"), n) for t in runs])
            measured = np.isfinite(sharp).any(axis=0)
            ended = sum(t.status != "complete" for t in runs)
            note = f" ({ended} of {len(runs)} diverged)" if ended else ""
            colour = plots.CYCLE[i % len(plots.CYCLE)]
            plots.mean_band(ax_s, np.arange(n)[measured], sharp[:, measured], color=colour, marker="o", ms=2,
                            label=f"β = {beta:g}, h = {h:.3g}{note}")
            plots.mean_band(ax_l, np.arange(n), [_padded(t.losses, n) for t in runs], color=colour,
                            label=f"β = {beta:g}", log=True)
        ax_s.axhline(threshold, ls=":", color="k", label="2(1+β)/h")
        ax_s.set_ylim(0, 2 * threshold)
        ax_s.set_title("λ_max")
        ax_l.set_title("train loss (½-MSE)")
        for ax in (ax_s, ax_l):
            ax.set_xlabel("step")
            ax.legend(fontsize=7)
        fig.suptitle(f"heavy-ball GD on the digits fc-tanh MLP, every β at 2(1+β)/h = {threshold:g}\n"
                     f"mean ± 1 sd over {len(folders)} seeds (initialisation and data split)")
        return save_figure(fig, figures, "eos_momentum_seeds")


def _padded(series: np.ndarray, n: int) -> np.ndarray:
    """``series`` with NaN after its end (a run that diverged is shorter)."""
    return np.concatenate([np.asarray(series, dtype=float), np.full(n - len(series), np.nan)])
