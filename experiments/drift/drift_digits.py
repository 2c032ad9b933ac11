"""Drift of GF, IGR and top-k PF from GD on the digits MLP at h·λ_max ≈ 0.8 and ≈ 1.5.

The learning rates are set from the sharpness at initialization, so that
h·λ_max(θ0) equals each target. All three flows and GD share the grid
t = n·h; the drift is ‖θ_GD(n) − θ_flow(n·h)‖. Theory (backward error
analysis, PF paper) expects PF-top-k < IGR < GF below hλ = 1; past it, GD
oscillates along the top eigenvector, which only the PF can follow.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis import plots
from experiments.cli.common import number_key, read_json, save_figure, write_json, write_table
from experiments.cli.context import RunContext
from experiments.zoo.datasets import check_data, check_digits_widths, digits_objective
from flows import Trajectory, compare, sharpness


@dataclass
class Config:
    targets: tuple[float, ...] = (0.8, 1.5)
    """Values of h·λ_max(θ₀); each sets the learning rate h = target/λ_max(θ₀)."""
    steps: int = 50
    """GD steps; the flows cover t = steps·h."""
    flows: tuple[str, ...] = ("gf", "igr", "pf_topk", "pf_topk_igr")
    """Flows compared with GD (names of ``flows.FLOWS``)."""
    k: int = 10
    """Eigenpairs of the top-k principal flows."""
    substeps: int = 4
    """RK4 steps per GD step."""
    n_train: int = 1500
    """Training examples (digits)."""
    eig_refresh_per_step: int = 4
    """Eigenpair solves per GD step for the top-k flows (the subspace is kept in between)."""
    widths: tuple[int, ...] = (64, 200, 200, 10)
    """The fc-tanh MLP's layer widths (64 inputs, 10 outputs)."""
    data: str = "digits"
    """Data set: 'digits', or a classification set of experiments.zoo.papers (mnist1d, moons, circles, cohen-5k:PATH,
    cf-1k-4class:PATH, eoss-seeded:PATH); the MLP's first and last widths follow it."""

    def validate(self) -> None:
        check_data(self.data)
        check_digits_widths(self.widths)
        if not self.targets or any(t <= 0 for t in self.targets):
            raise ValueError(f"targets must be positive, got {self.targets}")
        if self.steps < 1 or self.substeps < 1 or self.k < 1 or self.eig_refresh_per_step < 1:
            raise ValueError("steps, substeps, k and eig_refresh_per_step must be ≥ 1")


def run(config: Config, out: Path, ctx: RunContext) -> None:
    obj, _, _ = digits_objective(n_train=config.n_train, widths=config.widths, data=config.data)
    theta0 = obj.theta0.to(ctx.device)
    lam0 = sharpness(obj, theta0)
    summary = []
    for target in config.targets:
        path = out / f"target{number_key(target)}" / "row.json"
        summary.append(ctx.unit(f"target{number_key(target)}",
                                lambda target=target, path=path: _one_target(obj, theta0, lam0, target, config, out,
                                                                             ctx, path),
                                lambda path=path: read_json(path)))
    write_table(out / "drift_summary.csv", summary)
    write_json(out / "drift_info.json", {"lambda_max_theta0": lam0, "summary": summary})


def _one_target(obj, theta0, lam0: float, target: float, config: Config, out: Path, ctx, path: Path) -> dict:
    """GD and the flows at h = target/λ_max(θ₀); saves trajectories with their drift and a summary row."""
    h = target / lam0
    cmp = compare(obj, theta0, h, config.steps, flows=config.flows, method="rk4", step_size=h / config.substeps,
                  k=config.k, eig_refresh=h / config.eig_refresh_per_step, progress=ctx.progress)
    ctx.check()
    folder = out / f"target{number_key(target)}"
    cmp.gd.save(folder / "gd")
    for name, traj in cmp.flows.items():
        traj.metrics["drift"] = cmp.drift[name]
        traj.save(folder / name)
    row = {"h*lambda_max(theta0)": target, "h": round(h, 4)}
    for name in config.flows:
        row[f"{name} drift @{config.steps}"] = float(f"{cmp.drift[name][-1]:.3g}")
        row[f"{name} mean drift"] = float(f"{np.mean(cmp.drift[name]):.3g}")
    write_json(path, row)
    return row


def plot(out: Path, figures: Path) -> list[Path]:
    info = read_json(out / "drift_info.json")
    folders = sorted(out.glob("target*"), key=lambda p: float(p.name[6:]))
    if not folders:
        raise FileNotFoundError(f"no target*/ folders in {out}")
    with plots.style():
        fig, axes = plots.subplots(2 * len(folders), ncols=len(folders), height=2.7)
        for col, folder in enumerate(folders):
            gd = Trajectory.load(folder / "gd")
            h = gd.config["lr"]
            ax, axl = axes[col], axes[len(folders) + col]
            steps = np.arange(len(gd))
            axl.plot(steps, gd.losses, "o-", ms=2, color=plots.color("gd"), label=plots.label("gd", h))
            for path in sorted(folder.glob("*.npz")):
                if path.stem == "gd":
                    continue
                traj = Trajectory.load(path)
                n = np.arange(len(traj))
                ax.semilogy(n[1:], traj.metric("drift")[1:], color=plots.color(path.stem), label=plots.label(path.stem))
                axl.plot(n, traj.losses, color=plots.color(path.stem), label=plots.label(path.stem))
            ax.set_title(f"h·λ_max(θ₀) = {float(folder.name[6:]):g}  (h = {h:.3g})")
            ax.set_xlabel("GD step n  (t = n·h)")
            ax.set_ylabel("‖θ_GD(n) − θ_flow(nh)‖")
            axl.set_xlabel("GD step n")
            axl.set_ylabel("train loss (½‖f − y‖²)")
            axl.set_yscale("log")
        axes[0].legend()
        axes[len(folders)].legend()
        fig.suptitle(f"digits fc-tanh MLP, λ_max(θ₀) = {info['lambda_max_theta0']:.3g}")
        return save_figure(fig, figures, "drift_digits")
