"""Corridors along GD trajectories: a toy with a known corridor and the digits MLP.

The corridor score s = ‖Hg‖/(λ_max‖g‖) is 0 exactly where flow lines are
straight and the loss falls linearly (Hg = 0); there GD equals GF. On the toy
E = x + y², GD from y₀ ≠ 0 contracts y by (1 − 2h) per step, so the score
falls like |y| and the run enters the corridor y ≈ 0; inside it the loss slope
matches −‖g‖² = −1. On the digits MLP the same detector runs online (one HVP
per step, λ_max from a warm tracker) alongside the straightness of successive
GD steps and a sliding-window loss linearity.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from analysis import CorridorDetector, loss_linearity, plots
from experiments.cli.common import read_json, save_figure, write_json
from experiments.cli.context import RunContext
from experiments.zoo.datasets import check_data, check_digits_widths, digits_objective
from flows import Recorder, StepContext, StepDecision, Trajectory, gradient_descent
from flows.objective import toys


@dataclass
class Config:
    toy_lr: float = 0.2
    """GD's learning rate on the corridor toy E = x + y²."""
    toy_steps: int = 40
    """GD steps on the toy."""
    toy_start: tuple[float, ...] = (2.0, 0.6)
    """θ₀ on the toy (x, y)."""
    lr: float = 0.1
    """GD's learning rate on digits."""
    steps: int = 200
    """GD steps on digits."""
    n_train: int = 0
    """Training examples (0: the whole digits training split)."""
    widths: tuple[int, ...] = (64, 200, 200, 10)
    """The fc-tanh MLP's layer widths (64 inputs, 10 outputs)."""
    data: str = "digits"
    """Data set: 'digits', or a classification set of experiments.zoo.papers (mnist1d, moons, circles, cohen-5k:PATH,
    cf-1k-4class:PATH, eoss-seeded:PATH); the MLP's first and last widths follow it."""
    score_threshold: float = 1e-3
    """Corridor score ‖Hg‖/(λ_max‖g‖) below which a step counts as in a corridor."""

    def validate(self) -> None:
        check_data(self.data)
        check_digits_widths(self.widths)
        if not (self.toy_lr > 0 and self.lr > 0 and self.score_threshold > 0):
            raise ValueError("toy_lr, lr and score_threshold must be > 0")
        if self.toy_steps < 3 or self.steps < 3:
            raise ValueError("toy_steps and steps must be ≥ 3")
        if len(self.toy_start) != 2 or not all(math.isfinite(v) for v in self.toy_start):
            raise ValueError(f"toy_start must be two finite numbers, got {self.toy_start}")


def _straightness_callback():
    """Records cos∠(θₙ − θₙ₋₁, θₙ₋₁ − θₙ₋₂) online, without keeping the states."""
    memory: dict[str, torch.Tensor | None] = {}

    def callback(ctx: StepContext, decision: StepDecision, rec: Recorder) -> None:
        prev = memory.get("theta")
        step = None if prev is None else ctx.theta - prev
        last = memory.get("step")
        if step is not None and last is not None:
            cos = torch.dot(step, last) / (torch.linalg.vector_norm(step) * torch.linalg.vector_norm(last))
            rec.set_metric("straightness", rec.row - 1, float(cos))  # centred on θₙ₋₁
        memory["theta"], memory["step"] = ctx.theta, step

    return callback


def run(config: Config, out: Path, ctx: RunContext) -> None:
    toy = toys.get("corridor-xy2", device=ctx.device)
    det = CorridorDetector(score_threshold=config.score_threshold)
    start = torch.tensor(config.toy_start, dtype=torch.float64, device=ctx.device)
    traj = gradient_descent(toy, start, lr=config.toy_lr, steps=config.toy_steps, callbacks=[det])
    ctx.check()
    toy_segments = det.detect(traj)
    traj.events.extend(s.to_dict() for s in toy_segments)
    traj.save(out / "toy")

    obj, _, _ = digits_objective(seed=ctx.seed, n_train=config.n_train or None, widths=config.widths,
                                 data=config.data)
    det = CorridorDetector(score_threshold=config.score_threshold)
    gd = gradient_descent(obj, obj.theta0.to(ctx.device), lr=config.lr, steps=config.steps, states="none",
                          callbacks=[det, _straightness_callback()], progress=ctx.progress)
    ctx.check()
    digits_segments = det.detect(gd)
    gd.events.extend(s.to_dict() for s in digits_segments)
    gd.save(out / "digits")
    scores = gd.metric("corridor_score")
    summary = {
        "toy": {"segments": [s.to_dict() for s in toy_segments],
                "final_score": float(traj.metric("corridor_score")[-1])},
        "digits": {"segments": [s.to_dict() for s in digits_segments], "min_score": float(np.nanmin(scores)),
                   "median_score": float(np.nanmedian(scores)),
                   "median_straightness": float(np.nanmedian(gd.metric("straightness")))},
    }
    write_json(out / "corridor_summary.json", summary)
    print(f"toy: {len(toy_segments)} corridor segment(s) "
          + ", ".join(f"steps {s.start}–{s.end} (loss slope {s.evidence['loss_slope']:.6f}, expected "
                      f"{s.evidence['expected_slope']:.6f})" for s in toy_segments))
    print(f"digits: {len(digits_segments)} corridor segment(s); score min {summary['digits']['min_score']:.3g}, "
          f"median {summary['digits']['median_score']:.3g}; median straightness "
          f"{summary['digits']['median_straightness']:.4f}")


def _shade(ax, traj: Trajectory, x) -> None:
    for e in traj.events:
        if e.get("kind") == "corridor":
            ax.axvspan(x[e["start"]], x[e["end"]], color=plots.OKABE_ITO["green"], alpha=0.15, lw=0)


def plot(out: Path, figures: Path) -> list[Path]:
    read_json(out / "corridor_summary.json")
    toy = Trajectory.load(out / "toy")
    gd = Trajectory.load(out / "digits")
    with plots.style():
        fig, axes = plots.subplots(4, ncols=2, width=4.2, height=3.0)
        xy = toy.state_matrix()
        plots.contour(axes[0], lambda x, y: x + y ** 2, (xy[:, 0].min() - 0.3, xy[:, 0].max() + 0.3),
                      (-0.8, 0.8), log=False)
        score = toy.metric("corridor_score")
        sc = axes[0].scatter(xy[:, 0], xy[:, 1], c=np.log10(np.maximum(score, 1e-16)), cmap="viridis", s=14, zorder=5)
        fig.colorbar(sc, ax=axes[0], label="log₁₀ corridor score")
        axes[0].axhline(0.0, color=plots.OKABE_ITO["green"], lw=1, ls="--", label="corridor y = 0")
        axes[0].set(title=f"E = x + y²: GD, h = {toy.config['lr']:g}", xlabel="x", ylabel="y")
        axes[0].legend(loc="lower left")
        ax = axes[1]
        _shade(ax, toy, toy.times)
        ax.plot(toy.times, toy.losses, "o-", ms=2.5, color=plots.color("gd"), label="loss E(θₙ)")
        ax.set(title="toy: loss (corridor segments shaded)", xlabel="time t = n·h", ylabel="E")
        twin = ax.twinx()
        twin.semilogy(toy.times, np.maximum(score, 1e-16), color=plots.OKABE_ITO["vermillion"], label="score")
        twin.set_ylabel("corridor score ‖Hg‖/(λ_max‖g‖)")
        twin.grid(False)
        ax.legend(loc="upper right")
        steps = np.arange(len(gd))
        s_d = gd.metric("corridor_score")
        cos = gd.metric("straightness")
        axes[2].semilogy(steps, s_d, color=plots.OKABE_ITO["vermillion"], label="corridor score")
        axes[2].semilogy(steps, np.maximum(1 - cos, 1e-16), color=plots.OKABE_ITO["blue"],
                         label="1 − cos(successive steps)")
        axes[2].axhline(1e-3, color="0.3", lw=0.8, ls="--", label="score threshold 1e-3")
        _shade(axes[2], gd, steps)
        axes[2].set(title=f"digits MLP, GD h = {gd.config['lr']:g}", xlabel="GD step", ylabel="score / 1 − cos")
        axes[2].legend(fontsize=7)
        resid, slope = loss_linearity(gd.times, gd.losses, window=5)
        gn2 = gd.grad_norms ** 2
        axes[3].semilogy(steps, gd.losses, color=plots.color("gd"), label="loss")
        axes[3].semilogy(steps, np.abs(resid), color=plots.OKABE_ITO["orange"],
                         label="loss-linearity residual (5 steps)")
        with np.errstate(invalid="ignore", divide="ignore"):
            axes[3].semilogy(steps, np.abs(slope / -gn2), color=plots.OKABE_ITO["purple"],
                             label="fitted slope / (−‖g‖²)  (1 in a corridor)")
        _shade(axes[3], gd, steps)
        axes[3].set(title="digits MLP: loss linearity", xlabel="GD step", ylabel="value")
        axes[3].legend(fontsize=7)
        fig.suptitle("Corridors: where Hg = 0, GD equals the gradient flow")
        return save_figure(fig, figures, "corridors")
