"""The central-flows example reproduced: GD, gradient flow and the central flow on the swish MLP toy.

Cohen, Damian, Talwalkar, Kolter, Lee (ICLR 2025, arXiv 2410.24206), central_flows_jax ``examples/mlp.ipynb``:
an MLP 8→16→16→1 with swish on 128 Gaussian inputs with Gaussian targets, MSE without ½, GD at h = 0.1 for
1000 steps, 5 tracked eigenvalues. The published figure shows at step 1000: GD's loss smoothed in time ≈ the
central flow's prediction ≈ 0.10, the loss at the central flow ≈ 0.06, gradient flow ≈ 0.04; hλ₁ of GD reaches 2
near step 350, the central flow pins it at 2, gradient flow's passes 4.

Here: GD (with its second-order midpoints), gradient flow (RK4 at h/``gf_substeps``) and the central flow (the
paper's discretisation, 4 Euler substeps per step) from one θ₀; the top ``k`` Hessian eigenvalues along each path
(a warm-started tracker over the saved states); GD's loss smoothed with a Gaussian of ``sigma`` steps, as in the
notebook (which uses scipy's ``mode="nearest"`` edges; here edges reflect, and smoothed values are reported only
at steps whose window is two-sided, 4σ from both ends).
The draws of θ₀ and the data are torch's, not JAX's: same laws, different numbers.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from analysis import Midpoints, plots
from experiments.cli.common import read_json, save_figure, write_json, write_table
from experiments.cli.context import RunContext
from experiments.zoo.datasets import swish_mlp_toy
from flows import EigenTracker, Objective, central_flow, gaussian_smoothed, gradient_descent, integrate
from flows.dynamics.central import sigma_matrix

PUBLISHED = {"smoothed GD loss": 0.10, "central-flow prediction": 0.10, "loss at the central flow": 0.06,
             "gradient-flow loss": 0.04, "step GD's hλ₁ reaches 2": 350, "central hλ₁ after it": 2.0,
             "GF hλ₁ at the end": "> 4"}


@dataclass
class Config:
    lr: float = 0.1
    """GD's learning rate η."""
    steps: int = 1000
    """GD steps (the flows cover t = steps·η)."""
    k: int = 5
    """Eigenvalues drawn per path."""
    substeps: int = 4
    """The central flow's Euler substeps per GD step."""
    gf_substeps: int = 8
    """RK4 steps per GD step for gradient flow."""
    sigma: float = 50.0
    """Gaussian smoothing of GD's loss, in steps."""
    n: int = 128
    """Examples of the toy data set (x ~ N(0, I₈), y ~ N(0, 1))."""
    width: int = 16
    """Hidden width of the swish MLP."""

    def validate(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for name in ("steps", "k", "substeps", "gf_substeps", "n", "width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")


def eigenvalues_along(objective: Objective, states: Tensor, k: int, tol: float = 1e-4) -> np.ndarray:
    """The top-``k`` Hessian eigenvalues at each row of ``states`` (n, D), from one warm-started tracker: (n, k)."""
    tracker = EigenTracker(k=min(k, objective.dim), tol=tol)
    return np.stack([tracker.update(objective, row).values.detach().cpu().numpy() for row in states])


def run(config: Config, out: Path, ctx: RunContext) -> None:
    obj = swish_mlp_toy(n=config.n, width=config.width, seed=ctx.seed)
    theta0 = obj.theta0.to(ctx.device)
    for name, compute in (("gd", _gd), ("gf", _gf), ("central", _central)):
        path = out / f"{name}.json"
        ctx.unit(name, lambda compute=compute, path=path: compute(obj, theta0, config, path, ctx),
                 lambda path=path: None)
        ctx.check()
    rows = summarise(out, config)
    print(write_table(out / "central_flow_toy.csv", rows))


def _save(path: Path, seconds: float, **arrays) -> None:
    """Per-step series as JSON (NaN written as NaN, which Python's json reads back), written atomically."""
    write_json(path, {"seconds": seconds, **{key: np.asarray(value).tolist() for key, value in arrays.items()}})


def load_series(path: Path) -> dict:
    """A saved path's series as float arrays (null → NaN); scalars stay scalars."""
    return {key: np.array(value, dtype=float) if isinstance(value, list) else value
            for key, value in read_json(path).items()}


def _gd(obj: Objective, theta0: Tensor, config: Config, path: Path, ctx) -> None:
    clock = time.perf_counter()
    traj = gradient_descent(obj, theta0, config.lr, config.steps, callbacks=[Midpoints()], progress=ctx.progress)
    states = torch.as_tensor(traj.state_matrix(), dtype=theta0.dtype, device=theta0.device)
    seconds = time.perf_counter() - clock
    _save(path, seconds, loss=traj.losses, midpoint_loss=traj.metric("midpoint_loss"),
          eigenvalues=eigenvalues_along(obj, states, config.k), status=traj.status)


def _gf(obj: Objective, theta0: Tensor, config: Config, path: Path, ctx) -> None:
    clock = time.perf_counter()
    traj = integrate(obj, theta0, config.lr, flow="gf", steps=config.steps, method="rk4",
                     step_size=config.lr / config.gf_substeps, progress=ctx.progress)
    seconds = time.perf_counter() - clock
    states = torch.as_tensor(traj.state_matrix(), dtype=theta0.dtype, device=theta0.device)
    _save(path, seconds, loss=traj.losses, eigenvalues=eigenvalues_along(obj, states, config.k), status=traj.status)


def _central(obj: Objective, theta0: Tensor, config: Config, path: Path, ctx) -> None:
    clock = time.perf_counter()
    cf = central_flow(obj, theta0, config.lr, config.steps, substeps=config.substeps, states="full",
                      progress=ctx.progress)
    seconds = time.perf_counter() - clock
    sigma_sum = np.nansum(sigma_matrix(cf), axis=1)
    states = torch.as_tensor(cf.state_matrix(), dtype=theta0.dtype, device=theta0.device)
    _save(path, seconds, loss=cf.losses, predicted_loss=cf.metric("predicted_loss"), critical=cf.metric("critical"),
          k=cf.metric("k"), sigma_trace=sigma_sum, infeasibility=cf.metric("infeasibility"),
          complementarity=cf.metric("complementarity"), eigenvalues=eigenvalues_along(obj, states, config.k),
          eigen_matvecs=cf.config["eigen_matvecs"], status=cf.status,
          reason=cf.events[-1].get("reason", "") if cf.events else "")


def interior_steps(last: int, sigma: float) -> range:
    """The steps n whose Gaussian window [n − 4σ, n + 4σ] (scipy's support) lies inside [0, last]: there the
    smoothed loss is two-sided; near the ends it is one-sided and lags the trend."""
    radius = int(np.ceil(4 * sigma))
    return range(radius, last - radius + 1)


def summarise(out: Path, config: Config) -> list[dict]:
    """The measured counterparts of the published numbers (one row each, each naming its step), saved as
    ``summary.json``. Smoothed quantities are compared at the last step whose Gaussian window is two-sided
    (:func:`interior_steps`), never at the run's last step, where the smoothing is one-sided and lags."""
    gd, gf, cf = (load_series(out / f"{name}.json") for name in ("gd", "gf", "central"))
    h = config.lr
    last = min(len(path["loss"]) for path in (gd, gf, cf)) - 1  # the last step all three reached
    smoothed = gaussian_smoothed(gd["loss"][: last + 1], config.sigma)
    interior = interior_steps(last, config.sigma)
    at = interior[-1] if len(interior) else None
    gd_edge = h * gd["eigenvalues"][:, 0]
    crossing = int(np.argmax(gd_edge >= 2.0)) if (gd_edge >= 2.0).any() else None
    cf_edge = h * cf["eigenvalues"][:, 0]
    after = slice(crossing, last + 1) if crossing is not None else slice(last, last + 1)
    measured: list[tuple[str, int | None, float | int | None]] = [
        ("smoothed GD loss", at, None if at is None else float(smoothed[at])),
        ("central-flow prediction", at, None if at is None else float(cf["predicted_loss"][at])),
        ("loss at the central flow", last, float(cf["loss"][last])),
        ("gradient-flow loss", last, float(gf["loss"][last])),
        ("step GD's hλ₁ reaches 2", crossing, crossing),
        ("central hλ₁ after it", last, float(cf_edge[after].max())),
        ("GF hλ₁ at the end", last, float(h * gf["eigenvalues"][last, 0])),
    ]
    rows = [{"quantity": key, "published (read off the figure, step 1000)": str(PUBLISHED[key]),
             "measured at step": "none" if step is None else step,
             "measured": "n/a (no two-sided window)" if value is None
             else value if isinstance(value, int) else float(f"{value:.4g}")}
            for key, step, value in measured]
    extra: dict = {"interior steps (two-sided window)": [interior[0], interior[-1]] if len(interior) else None}
    if len(interior):
        idx = np.asarray(interior)
        error = np.abs(cf["predicted_loss"][idx] - smoothed[idx]) / smoothed[idx]
        extra.update({"mean |prediction − smoothed GD| / smoothed GD over the interior steps": float(np.nanmean(error)),
                      "max |prediction − smoothed GD| / smoothed GD over the interior steps": float(np.nanmax(error)),
                      "step of the max": int(idx[int(np.nanargmax(error))])})
    extra.update({"max SDCP infeasibility": float(cf["infeasibility"].max()),
                  "max SDCP complementarity": float(cf["complementarity"].max()),
                  "most critical directions": int(cf["critical"].max()), "most tracked": int(cf["k"].max()),
                  "status": {name: arr["status"] for name, arr in (("gd", gd), ("gf", gf), ("central", cf))},
                  "seconds": {name: float(arr["seconds"]) for name, arr in (("gd", gd), ("gf", gf), ("central", cf))},
                  "central eigen HVPs per substep": float(cf["eigen_matvecs"]) / (config.steps * config.substeps + 1)})
    write_json(out / "summary.json", {"rows": rows, **extra})
    return rows


def plot(out: Path, figures: Path) -> list[Path]:
    config = read_json(out / "manifest.json")["config"]
    gd, gf, cf = (load_series(out / f"{name}.json") for name in ("gd", "gf", "central"))
    h, sigma = config["lr"], config["sigma"]
    steps = np.arange(len(gd["loss"]))
    smoothed = gaussian_smoothed(gd["loss"], sigma)
    late = steps >= 2 * sigma
    n_gf, n_cf = np.arange(len(gf["loss"])), np.arange(len(cf["loss"]))
    with plots.style():
        fig, (ax, axe) = plots.subplots(2, ncols=2, height=3.6)
        ax.plot(steps, gd["loss"], color=plots.color("gd"), alpha=0.25, lw=0.8, label="GD")
        ax.plot(steps[late], smoothed[late], color=plots.color("gd"), lw=3, label=f"GD smoothed (σ = {sigma:g})")
        ax.plot(n_gf, gf["loss"], "--", color=plots.color("gf"), label="gradient flow")
        ax.plot(n_cf, cf["loss"], color=plots.color("central"), label="central flow")
        ax.plot(n_cf, cf["predicted_loss"], "--", color=plots.color("central"), label="central-flow prediction")
        ax.set_ylim(0, 1)
        ax.set_xlabel("GD step n (t = n·h)")
        ax.set_title("loss")
        ax.legend(fontsize=7)
        axe.plot(steps, h * gd["eigenvalues"], lw=0.8)
        axe.plot(n_gf, h * gf["eigenvalues"], "--", color=plots.color("gf"), lw=0.8, zorder=-1)
        axe.plot(n_cf, h * cf["eigenvalues"], "--", color=plots.color("central"), lw=0.8)
        axe.axhline(2, ls=":", color="k")
        axe.set_ylim(0, 4)
        axe.set_xlabel("GD step n")
        axe.set_title(f"h·λᵢ, top {config['k']}")
        axe.legend([plots.plt.Line2D([], [], color=plots.color("gd"), lw=0.8),
                    plots.plt.Line2D([], [], ls="--", color=plots.color("gf")),
                    plots.plt.Line2D([], [], ls="--", color=plots.color("central"))],
                   ["GD (one colour per eigenvalue)", "gradient flow", "central flow"], fontsize=7, loc="upper left")
        width = config["width"]
        fig.suptitle(f"central-flows example: swish MLP 8-{width}-{width}-1, {config['n']} Gaussian points, MSE, "
                     f"h = {h:g}")
        return save_figure(fig, figures, "central_flow_toy")
