"""Implicit gradient regularisation drives GD to flatter minima (Barrett & Dherin 2021, arXiv 2009.11162, Fig. 1).

The two-parameter model E(a, b) = ½(y − abx)² (toy ``scalar-product``, x = 2, y = 3/2) has a curve of global
minima ab = y/x; on it the Hessian's non-zero eigenvalue is λ = x²(a² + b²), smallest (λ = 2xy = 6, the flattest
minimum, also the one of smallest norm) at a = b. The gradient flow keeps a² − b² exactly (d(a² − b²)/dt =
−2a·r·bx + 2b·r·ax = 0, r = abx − y), so it lands where that invariant meets the curve, wherever the steps would
have led. Backward error analysis says GD at rate h follows, to O(h²), the flow of the modified loss
Ẽ = E + (h/4)‖∇E‖² = E·(1 + (h/2)·x²(a² + b²)) (IGR), which penalises exactly the sharp part of the curve.

For each rate in ``lrs``, from θ₀ = (2.8, 3.5) + ``init_noise``·N(0, I) (the paper's start, perturbed by the seed),
GD runs for flow time ``time`` (steps = time/h); the IGR flow (``igr``) and the gradient flow are integrated by RK4
over the same time. Reported at the end: λ_max of each endpoint, GD's distance to the IGR and GF endpoints, and
a² − b² (the GF invariant) at GD's end. The paper's claim, checked here: larger h lands GD at flatter minima, and
the IGR flow predicts where.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from analysis import plots
from experiments.cli.common import number_key, read_json, save_figure, write_json, write_table
from experiments.cli.context import RunContext
from flows import Progress, gradient_descent, integrate
from flows.objective import toys

START = (2.8, 3.5)


@dataclass
class Config:
    lrs: tuple[float, ...] = (0.001, 0.004, 0.008, 0.012, 0.016)
    """Learning rates h of GD and of the IGR flow (one run each)."""
    time: float = 6.0
    """Flow time of every run (GD takes time/h steps; every run has converged by t ≈ 3)"""
    init_noise: float = 0.25
    """Standard deviation of the seed's perturbation of the start (2.8, 3.5)"""
    flow_step: float = 1e-3
    """RK4 step for the flows (the IGR field depends on h, its integration step need not)"""
    path_points: int = 400
    """Points kept on each flow path (for the figure)"""

    def validate(self) -> None:
        if not self.lrs or any(not h > 0 for h in self.lrs):
            raise ValueError(f"lrs must be positive, got {self.lrs}")
        if not self.time > 0 or not self.flow_step > 0 or self.init_noise < 0:
            raise ValueError("time and flow_step must be > 0 and init_noise ≥ 0")
        if self.path_points < 2:
            raise ValueError(f"path_points must be ≥ 2, got {self.path_points}")
        if any(self.time / h > 2_000_000 for h in self.lrs):
            raise ValueError(f"time/h must be ≤ 2,000,000 GD steps, got {self.time / min(self.lrs):.0f}")


def start(seed: int, noise: float) -> torch.Tensor:
    """The seed's starting point: (2.8, 3.5) + noise·N(0, I)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.tensor(START, dtype=torch.float64) + noise * torch.randn(2, generator=gen, dtype=torch.float64)


def sharpness_2d(theta: torch.Tensor) -> float:
    """λ_max of the closed-form Hessian of ``scalar-product`` at θ."""
    return float(torch.linalg.eigvalsh(toys.spec("scalar-product").hessian(theta))[-1])


def run(config: Config, out: Path, ctx: RunContext) -> None:
    obj = toys.get("scalar-product")
    theta0 = start(ctx.seed, config.init_noise)
    gf = ctx.unit("gf", lambda: _flow(obj, theta0, "gf", min(config.lrs), config, out / "gf.json", ctx.progress),
                  lambda: read_json(out / "gf.json"))
    rows = []
    for h in config.lrs:
        key = f"h{number_key(h)}"
        rows.append(ctx.unit(key, lambda h=h, key=key: _one_rate(obj, theta0, h, gf, config, out / key, ctx),
                             lambda key=key: read_json(out / key / "row.json")))
    write_json(out / "igr_summary.json", rows)
    print(write_table(out / "igr_summary.csv", rows))


def _flow(obj, theta0: torch.Tensor, name: str, h: float, config: Config, path: Path, progress: Progress) -> dict:
    """A flow from θ₀ over [0, time] by RK4 (``gf`` does not depend on h; ``igr`` does)."""
    times = torch.linspace(0.0, config.time, config.path_points, dtype=torch.float64)
    traj = integrate(obj, theta0, h, flow=name, times=times, method="rk4", step_size=config.flow_step,
                     progress=progress)
    if traj.status != "complete":
        raise ValueError(f"the {name} flow at h = {h:g} ended {traj.status}")
    path_states = traj.state_matrix()
    result = {"path": path_states.tolist(), "end": path_states[-1].tolist(),
              "sharpness": sharpness_2d(torch.as_tensor(path_states[-1]))}
    write_json(path, result)
    return result


def _one_rate(obj, theta0: torch.Tensor, h: float, gf: dict, config: Config, folder: Path, ctx) -> dict:
    steps = max(1, round(config.time / h))
    gd = gradient_descent(obj, theta0, lr=h, steps=steps, states="full", max_loss=1e6, progress=ctx.progress)
    ctx.check()
    igr = _flow(obj, theta0, "igr", h, config, folder / "igr.json", ctx.progress)
    states = gd.state_matrix()
    keep = np.unique(np.linspace(0, len(states) - 1, config.path_points).round().astype(int))
    end = torch.as_tensor(states[-1])
    write_json(folder / "gd.json", {"path": states[keep].tolist(), "status": gd.status})
    x, y = toys._PRODUCT_X, toys._PRODUCT_Y
    sharp = sharpness_2d(end) if gd.status == "complete" else math.nan
    row = {"h": h, "GD steps": steps, "status": gd.status,
           "hλ_max(θ₀)": round(h * sharpness_2d(theta0), 4),
           "λ_max GD end": sharp,
           "λ_max IGR end": igr["sharpness"], "λ_max GF end": gf["sharpness"], "flattest λ": 2 * x * y,
           "flattening GD (λ_GF − λ_GD)": gf["sharpness"] - sharp,
           "share predicted by IGR": (gf["sharpness"] - igr["sharpness"]) / (gf["sharpness"] - sharp),
           "‖GD − IGR‖ end": float(np.linalg.norm(states[-1] - np.asarray(igr["end"]))),
           "‖GD − GF‖ end": float(np.linalg.norm(states[-1] - np.asarray(gf["end"]))),
           "a² − b² GD end": float(end[0] ** 2 - end[1] ** 2),
           "a² − b² θ₀": float(theta0[0] ** 2 - theta0[1] ** 2),
           "final loss GD": float(gd.losses[-1])}
    write_json(folder / "row.json", row)
    return row


def _phase(ax, folder: Path, rows: list[dict]) -> None:
    x, y = toys._PRODUCT_X, toys._PRODUCT_Y
    gf = np.asarray(read_json(folder / "gf.json")["path"])
    plots.contour(ax, lambda a, b: 0.5 * (y - a * b * x) ** 2, (-0.5, 4.0), (-0.5, 4.0))
    a = np.linspace(0.15, 4.0, 200)
    ax.plot(a, y / x / a, "k--", lw=1.0, label="minima ab = y/x")
    ax.plot([math.sqrt(y / x)], [math.sqrt(y / x)], "kx", ms=9, mew=2, label="flattest minimum")
    ax.plot(gf[:, 0], gf[:, 1], color="black", lw=1.2, label="gradient flow")
    for i, row in enumerate(rows):
        colour = plots.CYCLE[i % len(plots.CYCLE)]
        sub = folder / f"h{number_key(row['h'])}"
        gd, igr = np.asarray(read_json(sub / "gd.json")["path"]), np.asarray(read_json(sub / "igr.json")["path"])
        ax.plot(gd[:, 0], gd[:, 1], "o", ms=1.5, color=colour, label=f"GD h={row['h']:g}")
        ax.plot(igr[:, 0], igr[:, 1], "--", lw=1.0, color=colour)
    ax.set(title="GD (dots) and the IGR flow (dashed) of the same h", xlabel="a", ylabel="b")
    ax.legend(fontsize=6, loc="upper right")


def plot(out: Path, figures: Path) -> list[Path]:
    rows = read_json(out / "igr_summary.json")
    with plots.style():
        fig, axes = plots.subplots(2, width=4.4, height=3.8)
        _phase(axes[0], out, rows)
        _ends(axes[1], [rows])
        fig.suptitle("Implicit gradient regularisation on E = ½(y − abx)² (Barrett & Dherin 2021, Fig. 1)")
        return save_figure(fig, figures, "igr_flat_minima")


def _ends(ax, runs: list[list[dict]]) -> None:
    """How much flatter than the gradient flow's minimum GD's and the IGR flow's are: λ_GF − λ at the end against
    h (each start's own difference, so the spread is not the starts' spread; mean ± sd over the runs)."""
    h = np.array([r["h"] for r in runs[0]])
    for key, name, style in (("λ_max GD end", "GD", "o"), ("λ_max IGR end", "IGR flow", "s--")):
        values = np.array([[r["λ_max GF end"] - r[key] for r in rows] for rows in runs], dtype=float)
        mean = np.nanmean(values, axis=0)
        spread = np.nanstd(values, axis=0, ddof=1) if len(runs) > 1 else np.zeros_like(mean)
        ax.errorbar(h, mean, yerr=spread, fmt=style, ms=4, capsize=2, label=name)
    ax.axhline(0.0, color="0.5", lw=0.8, label="gradient flow")
    ax.set(title="flatter than the gradient flow's minimum" + (f" ({len(runs)} starts)" if len(runs) > 1 else ""),
           xlabel="learning rate h", ylabel="λ_max(GF end) − λ_max(end)")
    ax.legend(fontsize=7)


def plot_seeds(folders: list[Path], figures: Path) -> list[Path]:
    runs = [read_json(f / "igr_summary.json") for f in folders]
    with plots.style():
        fig, axes = plots.subplots(2, width=4.4, height=3.8)
        _phase(axes[0], folders[0], runs[0])
        _ends(axes[1], runs)
        fig.suptitle("Implicit gradient regularisation on E = ½(y − abx)² (Barrett & Dherin 2021, Fig. 1)")
        return save_figure(fig, figures, "igr_flat_minima")
