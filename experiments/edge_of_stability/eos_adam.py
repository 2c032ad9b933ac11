"""Adaptive edge of stability: full-batch Adam on digits, its preconditioned sharpness against 38/h.

Cohen et al. 2022 (arXiv 2207.14484): full-batch Adam with β₁ = 0.9 equilibrates the preconditioned sharpness
λ₁(P⁻¹H), P = diag(√v̂ + ε), at (2 + 2β₁)/((1 − β₁)h) = 38/h, while the plain sharpness λ_max(H) is free to rise.
Here: Adam (torch.optim.Adam through :class:`flows.OptimizerController`, torch's defaults β = (0.9, 0.999),
ε = 1e-8) on the digits fc-tanh MLP with ½-MSE, full batch, at each rate in ``lrs``; every ``every`` steps
λ₁(P⁻¹H) with the P of that step (:class:`flows.PreconditionedSharpness`) and λ_max(H). Reported per rate: the
median of λ₁(P⁻¹H)/(38/h) over the last half of the run (the paper's claim: ≈ 1), the first crossing and the
fraction of later measurements within 10% of the threshold (:class:`analysis.EoSDetector`), λ_max(H) at the start
and the end, and the final loss.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from analysis import EoSDetector, OptimizerController, PreconditionedSharpness, Sharpness, plots
from experiments.cli.common import number_key, read_json, save_figure, sweep_folders, write_json, write_table
from experiments.cli.context import RunContext
from experiments.zoo.datasets import check_data, check_digits_widths, digits_objective
from flows import Trajectory, gradient_descent


@dataclass
class Config:
    lrs: tuple[float, ...] = (1e-3, 2e-3)
    """Adam's learning rates h."""
    steps: int = 600
    """Adam steps (full batch)."""
    every: int = 10
    """Steps between measurements of λ₁(P⁻¹H)"""
    sharpness_every: int = 50
    """Steps between measurements of the plain λ_max(H)"""
    beta1: float = 0.9
    """Adam's β₁ (sets the threshold (2+2β₁)/((1−β₁)h))."""
    beta2: float = 0.999
    """Adam's β₂."""
    eps: float = 1e-8
    """Adam's ε."""
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
        if not self.lrs or any(h <= 0 for h in self.lrs):
            raise ValueError(f"lrs must be positive, got {self.lrs}")
        for name in ("steps", "every", "sharpness_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if not (0 <= self.beta1 < 1 and 0 < self.beta2 < 1 and self.eps > 0):
            raise ValueError("beta1 must be in [0, 1), beta2 in (0, 1) and eps > 0")
        if self.n_train < 0:
            raise ValueError(f"n_train must be ≥ 0, got {self.n_train}")


def run(config: Config, out: Path, ctx: RunContext) -> None:
    obj, _, _ = digits_objective(seed=ctx.seed, n_train=config.n_train or None, widths=config.widths,
                                 data=config.data)
    theta0 = obj.theta0.to(ctx.device)
    rows = []
    for lr in config.lrs:
        folder = out / f"h{number_key(lr)}"
        rows.append(ctx.unit(f"h{number_key(lr)}", lambda lr=lr, folder=folder: _one_rate(obj, theta0, lr, config,
                                                                                          folder, ctx),
                             lambda folder=folder: read_json(folder / "row.json")))
    print(write_table(out / "eos_adam.csv", rows))


def _one_rate(obj, theta0: torch.Tensor, lr: float, config: Config, folder: Path, ctx) -> dict:
    ctrl = OptimizerController(torch.optim.Adam, lr=lr, betas=(config.beta1, config.beta2), eps=config.eps)
    traj = gradient_descent(obj, theta0, lr, config.steps, controller=ctrl, states="none",
                            callbacks=[Sharpness(every=config.sharpness_every),
                                       PreconditionedSharpness(ctrl, every=config.every)], progress=ctx.progress)
    ctx.check()
    traj.save(folder / "adam")
    row = summarise(traj, lr, config.beta1)
    write_json(folder / "row.json", row)
    return row


def summarise(traj: Trajectory, lr: float, beta1: float) -> dict:
    """One table row: the ratio to the threshold over the last half, the detector's crossing and hovering."""
    pre, thr = traj.metric("preconditioned_sharpness"), traj.metric("stability_threshold")
    measured = np.flatnonzero(np.isfinite(pre))
    late = measured[measured >= len(traj) // 2]
    ratio = pre[late] / thr[late]
    report = EoSDetector().detect(traj, measure="preconditioned_sharpness")
    plain = traj.metric("sharpness")
    plain = plain[np.isfinite(plain)]
    return {"h": lr, "threshold (2+2β₁)/((1−β₁)h)": float(f"{(2 + 2 * beta1) / ((1 - beta1) * lr):.5g}"),
            "median λ₁(P⁻¹H)/threshold, last half": float(f"{np.median(ratio):.4g}") if ratio.size else None,
            "IQR of the ratio": f"{np.percentile(ratio, 25):.3f}–{np.percentile(ratio, 75):.3f}" if ratio.size else "",
            "first crossing (step)": report.first_crossing if report.first_crossing is not None else "none",
            "within 10% after it": float(f"{report.hover_fraction:.3g}"),
            "λ_max(H) start → end": f"{plain[0]:.4g} → {plain[-1]:.4g}" if plain.size else "",
            "final loss": float(f"{traj.losses[-1]:.4g}"), "status": traj.status}


def plot(out: Path, figures: Path) -> list[Path]:
    folders = sweep_folders(out, "h")
    with plots.style():
        fig, (ax_r, ax_s, ax_l) = plots.subplots(3, ncols=3, height=3.0)
        for i, folder in enumerate(folders):
            traj = Trajectory.load(folder / "adam")
            h = traj.config["lr"]
            colour = plots.CYCLE[i % len(plots.CYCLE)]
            pre, thr = traj.metric("preconditioned_sharpness"), traj.metric("stability_threshold")
            m = np.isfinite(pre)
            steps = np.arange(len(traj))
            ax_r.plot(steps[m], pre[m] / thr[m], "o-", ms=2, color=colour, label=f"h = {h:g}")
            sharp = traj.metric("sharpness")
            s = np.isfinite(sharp)
            ax_s.plot(steps[s], sharp[s], "o-", ms=3, color=colour, label=f"h = {h:g}")
            ax_l.semilogy(steps, traj.losses, color=colour, label=f"h = {h:g}")
        ax_r.axhline(1, ls=":", color="k")
        ax_r.set_ylim(0, 2)
        ax_r.set_title("λ₁(P⁻¹H) / (38/h)")
        ax_s.set_title("λ_max(H), unpreconditioned")
        ax_l.set_title("train loss (½-MSE)")
        for ax in (ax_r, ax_s, ax_l):
            ax.set_xlabel("Adam step")
            ax.legend(fontsize=7)
        fig.suptitle("full-batch Adam (β₁ = 0.9) on the digits fc-tanh MLP")
        return save_figure(fig, figures, "eos_adam")
