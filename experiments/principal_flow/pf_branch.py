"""The exact PF where the complex state's eigenvalues cross the logarithm's branch cut.

On the cubic toy from (0.6, 0.5) at h = 0.5, hλ_max starts at 1.20: the PF state
turns complex, the eigenvalues of its complex-symmetric Hessian leave the real
axis, and on their way back below 1 they cross Re hλ = 1 with Im hλ > 0, the cut
of the principal log(1 − x). Every branch log(1 − x) + 2πik reproduces GD at
t = n·h on a quadratic; here they differ. For the principal branch (the
default) and the analytically continued one, this runs the PF with dopri5 and
with RK4 at two step sizes under a wall-clock budget, and reports the
crossings, the solver's work and the largest distance from GD, beside GF, IGR
and the third-order flow.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from analysis import plots
from experiments.cli.common import read_table, save_figure, write_table
from experiments.cli.context import RunContext
from flows import Trajectory, gradient_descent, integrate
from flows.objective import toys

SOLVERS = ("dopri5", "rk4/20", "rk4/40")


@dataclass
class Config:
    toy: str = "cubic"
    """The analytic toy (a name of ``flows.toys``)."""
    start: tuple[float, ...] = (0.6, 0.5)
    """θ₀, one number per coordinate of the toy."""
    lr: float = 0.5
    """GD's learning rate h."""
    steps: int = 20
    """GD steps; the flows cover t = steps·h."""
    solvers: tuple[str, ...] = SOLVERS
    """ODE solvers compared: 'dopri5', or 'rk4/N' (RK4 with N steps per GD step)."""
    budget: float = 30.0
    """Wall-clock seconds per PF run."""

    def validate(self) -> None:
        spec = toys.spec(self.toy)
        if len(self.start) != spec.dim:
            raise ValueError(f"start must have {spec.dim} coordinates for {self.toy}, got {len(self.start)}")
        if not all(np.isfinite(self.start)):
            raise ValueError(f"start must be finite, got {self.start}")
        for solver in self.solvers:
            if solver not in SOLVERS:
                raise ValueError(f"solvers: {solver!r} is not one of {', '.join(SOLVERS)}")
        if not (self.lr > 0 and np.isfinite(self.lr)) or self.steps < 1 or not self.budget > 0:
            raise ValueError("need lr > 0, steps ≥ 1 and budget > 0")


def _solver(name: str, lr: float) -> dict:
    if name == "dopri5":
        return {"method": "dopri5"}
    return {"method": "rk4", "step_size": lr / int(name.split("/")[1])}


def run(config: Config, out: Path, ctx: RunContext) -> None:
    obj = toys.get(config.toy, device=ctx.device)
    theta0 = torch.tensor(config.start, dtype=torch.float64, device=ctx.device)
    gd = gradient_descent(obj, theta0, config.lr, config.steps, progress=False)
    gd.save(out / "gd")
    rows = []
    runs: list[tuple[str, str, dict[str, str] | None, str]] = [(f"pf ({branch})", "pf", {"branch": branch}, solver)
            for branch in ("principal", "continued") for solver in config.solvers]
    runs += [(flow, flow, None, "dopri5") for flow in ("gf", "igr", "third_order")]
    for label, flow, options, solver in runs:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # recorded as events and in the table
            traj = integrate(obj, theta0, config.lr, flow=flow, steps=config.steps, flow_options=options,
                             time_budget=config.budget, progress=ctx.progress, **_solver(solver, config.lr))
        seconds = time.perf_counter() - start
        ctx.check()
        n = len(traj)
        drift = np.linalg.norm(np.real(traj.state_matrix()) - gd.state_matrix()[:n], axis=1)
        traj.metrics["drift"] = drift
        traj.save(out / f"{label.replace(' ', '_').replace('(', '').replace(')', '')}_{solver.replace('/', '_')}")
        rows.append({"flow": label, "solver": solver, "status": traj.status,
                     "reached step": n - 1, "cut crossings": traj.config.get("pf_branch_crossings", ""),
                     "field evaluations": traj.config["field_evaluations"], "seconds": round(seconds, 1),
                     "max drift from GD": float(f"{drift.max():.4g}") if np.isfinite(drift).all() else "inf"})
    print(write_table(out / "pf_branch.csv", rows))


def plot(out: Path, figures: Path) -> list[Path]:
    rows = read_table(out / "pf_branch.csv")
    gd = Trajectory.load(out / "gd")
    with plots.style():
        fig, axes = plots.subplots(2, width=4.2, height=3.2)
        axes[0].semilogy(gd.times / gd.config["lr"], gd.losses, "k.-", label="GD")
        palette = plt.get_cmap("tab10").colors  # type: ignore[attr-defined]  # a ListedColormap
        for i, row in enumerate(rows):
            style = {"color": palette[i % 10], "ls": "--" if "continued" in row["flow"] else "-"}
            flow = row["flow"].replace(" ", "_").replace("(", "").replace(")", "")
            stem = f"{flow}_{row['solver'].replace('/', '_')}"
            traj = Trajectory.load(out / stem)
            steps = traj.times / gd.config["lr"]
            name = f"{row['flow']}, {row['solver']} ({row['status']})"
            drift = traj.metrics["drift"]
            ok = np.isfinite(drift) & (drift < 1e3)
            axes[1].semilogy(steps[ok], np.maximum(drift[ok], 1e-12), label=name, lw=1, **style)
            if row["solver"] == "dopri5":
                axes[0].semilogy(steps, np.maximum(traj.losses, 1e-16), label=name, lw=1, **style)
        axes[0].set_xlabel("step n = t/h")
        axes[0].set_ylabel("E(Re θ)")
        axes[1].set_xlabel("step n = t/h")
        axes[1].set_ylabel("‖θ_flow(n·h) − θ_GD(n)‖")
        for ax in axes:
            ax.legend(fontsize=6)
        fig.suptitle(f"Exact PF across the branch cut of log(1 − hλ): {gd.config['objective']}, "
                     f"h = {gd.config['lr']:g}")
        return save_figure(fig, figures, "pf_branch")
