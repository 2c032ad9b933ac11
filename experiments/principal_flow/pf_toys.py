"""Non-quadratic 2-D examples where GD leaves and the gradient flow stays: a saddle and a sharp minimum.

* Saddle E = x²/2 − y²/2 + y⁴/4 started on its stable manifold (y = 0) at
  h = 2.2: along x (λ = 1, hλ = 2.2 > 2) GD oscillates away from the saddle
  point; GF and IGR converge to it and stay. The PF (complex, exact) and the
  real-part top-k PF leave with GD.
* Saddle escape from y₀ = 10⁻³ at h = 0.5: every method escapes along y
  (λ = −1), but at different speeds: GD grows y by (1 + h) per step, i.e. at
  rate log(1 + h)/h per unit time; GF at rate 1; IGR at 1 − h/2. Only the PF
  has GD's rate.
* Sharp valley E = ½·8x²(1 − y/2)² + ⅛(y(y − 2))² at h = 0.26 (hλ = 2.08 at
  the sharp minimum (0, 0)): GD's oscillation across the valley grows and
  pushes it along the valley to y ≈ 0.04, where 8(1 − y/2)²h ≈ 2 and it
  settles; GF and IGR converge to (0, 0). Measured: the complex PF follows the
  growth of GD's oscillation (‖θ‖ within 0.24 of GD) but drifts along the
  valley the other way (y < 0); the real-part top-2 PF blows up near t = 9.

All flows use RK4 with step h/20 (the PF is stiff where hλ passes 1).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from analysis import plots
from experiments.cli.common import read_json, save_figure, write_json
from experiments.cli.context import RunContext
from flows import Trajectory, gradient_descent, integrate
from flows.objective import toys

CASES = {  # name: (toy, h, θ0, steps)
    "saddle-stable-manifold": ("saddle", 2.2, (1.0, 0.0), 6),
    "saddle-escape": ("saddle", 0.5, (1.0, 1e-3), 24),
    "sharp-valley": ("sharp-valley", 0.26, (0.01, 0.0), 60),
}


TITLES = {"saddle-stable-manifold": "saddle, start on y = 0", "saddle-escape": "saddle, escape from y₀ = 1e-3",
          "sharp-valley": "sharp minimum (λ = 8) beside a flat one"}


@dataclass
class Config:
    cases: tuple[str, ...] = tuple(CASES)
    """Which toy cases to run (saddle, escape, sharp minimum; each with its own h, θ₀ and steps)."""
    flows: tuple[str, ...] = ("gf", "igr", "pf", "pf_topk")
    """Flows drawn beside GD (names of ``flows.FLOWS``)."""
    substeps: int = 20
    """RK4 steps per GD step for the flows."""
    step_scale: float = 1.0
    """Multiplies each case's number of steps."""

    def validate(self) -> None:
        for c in self.cases:
            if c not in CASES:
                raise ValueError(f"cases: unknown case {c!r}; valid choices: {', '.join(CASES)}")
        if self.substeps < 1 or not self.step_scale > 0:
            raise ValueError("substeps must be ≥ 1 and step_scale > 0")


def run(config: Config, out: Path, ctx: RunContext) -> None:
    summary = {}
    for case in config.cases:
        path = out / case / "summary.json"
        summary[case] = ctx.unit(case, lambda case=case, path=path: _case(case, config, out, ctx, path),
                                 lambda path=path: read_json(path))
    write_json(out / "summary.json", summary)


def _case(case: str, config: Config, out: Path, ctx, path: Path) -> dict:
    """GD and each flow from one start; saves the trajectories and a summary of distances."""
    toy, h, start, steps = CASES[case]
    steps = max(1, int(round(steps * config.step_scale)))
    obj = toys.get(toy, device=ctx.device)
    theta0 = torch.tensor(start, dtype=torch.float64, device=ctx.device)
    gd = gradient_descent(obj, theta0, lr=h, steps=steps)
    gd.save(out / case / "gd")
    summary = {"toy": toy, "h": h, "theta0": list(start), "steps": steps,
               "gd_end": gd.state_matrix()[-1].tolist(), "status": {"gd": gd.status}}
    for flow in config.flows:
        traj = integrate(obj, theta0, flow=flow, lr=h, steps=steps, method="rk4", step_size=h / config.substeps,
                         k=2, eig_tol=1e-8, progress=ctx.progress)
        ctx.check()
        traj.save(out / case / flow)
        n = min(len(traj), len(gd))
        drift = np.linalg.norm(np.real(traj.state_matrix()[:n]) - gd.state_matrix()[:n], axis=1)
        summary["status"][flow] = traj.status
        summary[f"{flow}_drift_max"] = float(drift.max())
        summary[f"{flow}_steps_reached"] = n - 1
    write_json(path, summary)
    return summary


def _contour_fn(toy: str):
    fn = toys.spec(toy).fn

    def f(x, y):
        t = torch.as_tensor(np.stack([x, y]), dtype=torch.float64)
        return fn(t).numpy()

    return f


def plot(out: Path, figures: Path) -> list[Path]:
    summary = read_json(out / "summary.json")
    cases = list(summary)
    with plots.style():
        fig, axes = plots.subplots(2 * len(cases), ncols=len(cases), width=3.7, height=3.0)
        for col, case in enumerate(cases):
            info = summary[case]
            h, toy = info["h"], info["toy"]
            gd = Trajectory.load(out / case / "gd")
            flows = {p.stem: Trajectory.load(p) for p in sorted((out / case).glob("*.npz")) if p.stem != "gd"}
            ax, axt = axes[col], axes[len(cases) + col]
            # frame GD and the flows that completed (a diverged flow would squash the picture)
            pts = [gd.state_matrix()] + [np.real(t.state_matrix()) for t in flows.values() if t.status == "complete"]
            allp = np.concatenate(pts)
            lo, hi = allp.min(0), allp.max(0)
            pad = 0.15 * max(float((hi - lo).max()), 0.1) * np.ones(2)
            plots.contour(ax, _contour_fn(toy), (lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1]))
            for name, traj in flows.items():
                xy = np.real(traj.state_matrix())
                keep = np.all(np.abs(xy) < 10, axis=1)
                ls = "--" if name in ("igr", "pf_topk") else "-"
                ax.plot(xy[keep, 0], xy[keep, 1], color=plots.color(name), ls=ls, label=plots.label(name))
                dist = np.linalg.norm(xy, axis=1)
                axt.semilogy(traj.times, np.maximum(dist, 1e-16), color=plots.color(name), ls=ls,
                             label=f"{plots.label(name)} ({traj.status})")
            ax.plot(gd.state_matrix()[:, 0], gd.state_matrix()[:, 1], "o-", lw=0.6, ms=3, color=plots.color("gd"),
                    label=plots.label("gd", h), zorder=5)
            axt.semilogy(gd.times, np.maximum(np.linalg.norm(gd.state_matrix(), axis=1), 1e-16), "o", ms=3,
                         color=plots.color("gd"), label=plots.label("gd", h), zorder=5)
            ax.set_title(f"{TITLES[case]}, h = {h:g}", fontsize=9)
            ax.set_xlabel("x")
            ax.set_ylabel("y")
            axt.set_xlabel("time t = n·h")
            axt.set_ylabel("‖θ(t)‖ (distance from the critical point 0)")
        axes[0].legend(fontsize=7, loc="best")
        axes[len(cases)].legend(fontsize=7, loc="best")
        return save_figure(fig, figures, "pf_toys")
