"""PF paper quadratic E = θᵀAθ, A = diag(1, 0.01), θ0 = (−0.35, −0.2): GD vs GF, IGR and PF.

At h = 0.5 (hλ_max = 1) GD kills the sharp coordinate in one step, at h = 0.9
(hλ = 1.8) it oscillates and converges, at h = 1.05 (hλ = 2.1) it oscillates and
diverges. GF and IGR cannot oscillate; the real part of the principal flow
passes through every GD iterate.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from analysis import plots
from experiments.cli.common import number_key, save_figure
from experiments.cli.context import RunContext
from flows import FIELDS, Trajectory, gradient_descent, integrate
from flows.objective import toys
from flows.records.trajectory import check_memory, record_bytes


@dataclass
class Config:
    lrs: tuple[float, ...] = (0.5, 0.9, 1.05)
    """Learning rates h (hλ_max = 2h on the quadratic: 0.5 kills the sharp coordinate in one step, 1.05 diverges)."""
    steps: int = 10
    """GD steps per rate."""
    flows: tuple[str, ...] = ("gf", "igr", "pf")
    """Flows drawn beside GD (names of ``flows.FLOWS``)."""
    samples_per_step: int = 8
    """Points recorded per GD step along each flow path (for smooth curves)."""
    rtol: float = 1e-9
    """Relative tolerance of the adaptive ODE solver."""
    atol: float = 1e-11
    """Absolute tolerance of the adaptive ODE solver."""

    def validate(self) -> None:
        if not self.lrs or any(h <= 0 for h in self.lrs):
            raise ValueError(f"lrs must be positive, got {self.lrs}")
        if self.steps < 1 or self.samples_per_step < 1:
            raise ValueError("steps and samples_per_step must be ≥ 1")
        if not self.flows:
            raise ValueError(f"flows must name at least one flow of {', '.join(FIELDS)}")
        for flow in self.flows:
            if flow not in FIELDS:
                raise ValueError(f"flows: unknown flow {flow!r}; valid choices: {', '.join(FIELDS)}")
        rows = self.steps * self.samples_per_step + 1  # each flow's output grid, allocated before it runs
        check_memory(f"{rows:,} output times (steps × samples_per_step + 1)", record_bytes(rows, 2, itemsize=16))
        if not (0 < self.rtol < 1 and 0 < self.atol < 1):
            raise ValueError(f"rtol and atol must be in (0, 1), got {self.rtol}, {self.atol}")


def run(config: Config, out: Path, ctx: RunContext) -> None:
    obj = toys.get("pf-quadratic", device=ctx.device)
    for h in config.lrs:
        key = f"h{number_key(h)}"
        ctx.unit(key, lambda h=h, key=key: _one_rate(obj, h, config, out / key, ctx), lambda: None)


def _one_rate(obj, h: float, config: Config, folder: Path, ctx) -> None:
    gradient_descent(obj, lr=h, steps=config.steps).save(folder / "gd")
    times = torch.linspace(0, config.steps * h, config.steps * config.samples_per_step + 1)
    for flow in config.flows:
        traj = integrate(obj, flow=flow, lr=h, times=times, rtol=config.rtol, atol=config.atol,
                         progress=ctx.progress)
        ctx.check()
        traj.save(folder / flow)


def _quadratic(x, y):
    return x ** 2 + 0.01 * y ** 2


def plot(out: Path, figures: Path) -> list[Path]:
    folders = sorted((p for p in out.glob("h*") if p.is_dir()), key=lambda p: float(p.name[1:]))
    if not folders:
        raise FileNotFoundError(f"no h*/ result folders in {out}")
    with plots.style():
        fig, axes = plots.subplots(2 * len(folders), ncols=len(folders), height=2.8)
        for col, folder in enumerate(folders):
            h = float(folder.name[1:])
            gd = Trajectory.load(folder / "gd")
            flows = {p.stem: Trajectory.load(p) for p in sorted(folder.glob("*.npz")) if p.stem != "gd"}
            ax, axt = axes[col], axes[len(folders) + col]
            span = max(0.4, 1.1 * float(np.abs(gd.state_matrix()[:, 0]).max()))
            plots.contour(ax, _quadratic, (-span, span), (-0.25, 0.05))
            for name, traj in flows.items():
                xy = np.real(traj.state_matrix())
                ax.plot(xy[:, 0], xy[:, 1], color=plots.color(name), label=plots.label(name),
                        ls="--" if name == "igr" else "-")
                axt.plot(traj.times, xy[:, 0], color=plots.color(name), label=plots.label(name),
                         ls="--" if name == "igr" else "-")
            gd_xy = gd.state_matrix()
            ax.plot(gd_xy[:, 0], gd_xy[:, 1], "o", color=plots.color("gd"), ms=3.5, label="GD iterates", zorder=5)
            axt.plot(gd.times, gd.state_matrix()[:, 0], "o", color=plots.color("gd"), ms=3.5, label="GD", zorder=5)
            ax.set_title(f"h = {h:g}  (hλ_max = {2 * h:g})")
            ax.set_xlabel("θ₁ (sharp, λ = 2)")
            ax.set_ylabel("θ₂ (flat, λ = 0.02)")
            axt.set_xlabel("time t = n·h")
            axt.set_ylabel("θ₁(t)")
        axes[0].legend(loc="lower left")
        axes[len(folders)].legend(loc="best")
        return save_figure(fig, figures, "pf_quadratic")
