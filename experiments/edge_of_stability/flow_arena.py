"""The flow arena: every continuous model of GD scored against GD on one network, side by side.

On the central-flows toy (swish MLP, h = 0.1, into the edge of stability) and on the digits MLP at
h·λ_max(θ₀) = 0.8 (stable for the run) and at an edge-of-stability rate, GD and, from the same θ₀: gradient flow,
IGR, PF top-k with the rest as GF and as IGR (RK4 at h/``substeps``, eigenpairs refreshed once per GD step) and the
central flow (the paper's 4 Euler substeps per step; eigenpairs solved once per GD step and rotated by Rayleigh–Ritz
at the other substeps, ``central_refresh_per_step``). For each, on the grid t = n·h:

* ``iterate distance``: ‖θ_flow(nh) − θ_GD(n)‖, mean over n and at the last step;
* ``midpoint distance``: ‖θ_flow(nh) − θ̄ₙ‖, θ̄ₙ = (θₙ₋₁ + 2θₙ + θₙ₊₁)/4 (the time-averaged GD path), mean over n;
* ``loss error``: |L̂(n) − L̄(n)| / L̄(n), mean over the steps where the smoothing window fits (2σ ≤ n ≤ N − 2σ),
  with L̄ GD's loss smoothed by a Gaussian of σ steps and L̂ the flow's prediction of it: the central flow's
  E + ½⟨H, Σ⟩, every other flow's own loss;
* ``hλ₁``: the sharpness along the path (every ``sharpness_every`` steps), its mean |hλ₁ − GD's smoothed hλ₁| and
  its value at the end;
* ``cost``: wall-clock seconds per unit flow time h, in gradient evaluations (a gradient timed in the same process,
  median of 20), plus field evaluations and eigen HVPs.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from analysis import plots
from experiments.cli.common import number_key, read_json, save_figure, write_json, write_table
from experiments.cli.context import RunContext
from experiments.edge_of_stability.central_flow_toy import eigenvalues_along
from experiments.zoo.datasets import digits_objective, swish_mlp_toy
from flows import Objective, Trajectory, central_flow, gaussian_smoothed, gradient_descent, integrate, sharpness

FLOW_NAMES = ("gf", "igr", "pf_topk", "pf_topk_igr", "central")


@dataclass
class Config:
    flows: tuple[str, ...] = FLOW_NAMES
    """Flows scored against GD (names of ``flows.FLOWS``)."""
    toy_lr: float = 0.1
    """GD's learning rate on the swish-MLP toy."""
    toy_steps: int = 1000
    """GD steps on the toy."""
    toy_sigma: float = 50.0
    """Width (in steps) of the Gaussian that smooths GD's loss on the toy."""
    digits_targets: tuple[float, ...] = (0.8, 1.6)
    """H·λ_max(θ₀): stable for the run, and into the edge."""
    digits_steps: int = 150
    """GD steps on digits (at h = 2.5/λ_max(θ₀))."""
    digits_sigma: float = 10.0
    """Width (in steps) of the Gaussian that smooths GD's loss on digits."""
    n_train: int = 1000
    """Training examples (digits)."""
    widths: tuple[int, ...] = (64, 200, 200, 10)
    """The fc-tanh MLP's layer widths (64 inputs, 10 outputs)."""
    k: int = 10
    """PF top-k."""
    substeps: int = 4
    """RK4 steps (BEA/PF flows) and Euler substeps (central flow) per GD step."""
    sharpness_every: int = 5
    """Measure GD's λ_max every this many steps."""
    objectives: tuple[str, ...] = ("toy", "digits")
    """Which objectives to run: 'toy', 'digits'."""
    central_refresh_per_step: bool = True
    """False: an eigen solve at every central-flow substep."""

    def validate(self) -> None:
        unknown = sorted(set(self.flows) - set(FLOW_NAMES))
        if unknown or not self.flows:
            raise ValueError(f"flows must be a non-empty subset of {FLOW_NAMES}, got {self.flows}")
        bad = sorted(set(self.objectives) - {"toy", "digits"})
        if bad or not self.objectives:
            raise ValueError(f"objectives must be a non-empty subset of ('toy', 'digits'), got {self.objectives}")
        for name in ("toy_steps", "digits_steps", "n_train", "k", "substeps", "sharpness_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if not (self.toy_lr > 0 and self.toy_sigma > 0 and self.digits_sigma > 0):
            raise ValueError("toy_lr, toy_sigma and digits_sigma must be > 0")
        if not self.digits_targets or any(t <= 0 for t in self.digits_targets):
            raise ValueError(f"digits_targets must be positive, got {self.digits_targets}")


@dataclass
class Setting:
    """One arena: an objective, its θ₀, the rate, the horizon and the smoothing width."""

    key: str
    title: str
    objective: Objective
    theta0: Tensor
    lr: float
    steps: int
    sigma: float


def _settings(config: Config, ctx) -> list[Setting]:
    out = []
    if "toy" in config.objectives:
        toy = swish_mlp_toy(seed=ctx.seed)
        out.append(Setting("toy", f"swish MLP toy, h = {config.toy_lr:g}", toy, toy.theta0.to(ctx.device),
                           config.toy_lr, config.toy_steps, config.toy_sigma))
    if "digits" in config.objectives:
        obj, _, _ = digits_objective(seed=ctx.seed, n_train=config.n_train, widths=config.widths)
        theta0 = obj.theta0.to(ctx.device)
        lam0 = sharpness(obj, theta0)
        for target in config.digits_targets:
            out.append(Setting(f"digits-{number_key(target)}", f"digits MLP, h·λ_max(θ₀) = {target:g}", obj, theta0,
                               target / lam0, config.digits_steps, config.digits_sigma))
    return out


def gradient_seconds(objective: Objective, theta: Tensor, rounds: int = 20) -> float:
    """Median wall-clock seconds of one gradient at θ (after one warm-up)."""
    objective.grad(theta)
    times = []
    for _ in range(rounds):
        clock = time.perf_counter()
        objective.grad(theta)
        times.append(time.perf_counter() - clock)
    return statistics.median(times)


def run(config: Config, out: Path, ctx: RunContext) -> None:
    rows = []
    for setting in _settings(config, ctx):
        folder = out / setting.key
        ctx.unit(f"{setting.key}/gd", lambda s=setting, f=folder: _gd(s, config, f, ctx), lambda: None)
        for name in config.flows:
            ctx.unit(f"{setting.key}/{name}", lambda s=setting, f=folder, n=name: _flow(s, n, config, f, ctx),
                     lambda: None)
        rows += _scores(setting, config, folder)
    print(write_table(out / "flow_arena.csv", rows))
    write_json(out / "flow_arena.json", rows)


def _gd(setting: Setting, config: Config, folder: Path, ctx) -> None:
    traj = gradient_descent(setting.objective, setting.theta0, setting.lr, setting.steps, progress=ctx.progress)
    traj.save(folder / "gd")
    states = torch.as_tensor(traj.state_matrix()[::config.sharpness_every], dtype=setting.theta0.dtype,
                             device=setting.theta0.device)
    write_json(folder / "gd_series.json", {
        "loss": traj.losses.tolist(), "status": traj.status, "lr": setting.lr, "title": setting.title,
        "sigma": setting.sigma, "sharpness": eigenvalues_along(setting.objective, states, 1)[:, 0].tolist(),
        "gradient_seconds": gradient_seconds(setting.objective, setting.theta0)})


def _flow(setting: Setting, name: str, config: Config, folder: Path, ctx) -> None:
    """Run one flow on the GD grid and save its series against GD (distances, predicted loss, sharpness, cost)."""
    obj = setting.objective
    h = setting.lr
    steps = setting.steps
    gd = Trajectory.load(folder / "gd")
    clock = time.perf_counter()
    work: dict = {}
    if name == "central":
        cf = central_flow(obj, setting.theta0, h, min(steps, len(gd) - 1), substeps=config.substeps,
                          states="full", eig_refresh=h if config.central_refresh_per_step else 0.0,
                          progress=ctx.progress)
        states = torch.as_tensor(cf.state_matrix(), dtype=setting.theta0.dtype, device=setting.theta0.device)
        loss = cf.losses
        predicted = cf.metric("predicted_loss")
        status = cf.status
        work = {"eigen_matvecs": cf.config["eigen_matvecs"], "field_evaluations": cf.config["field_evaluations"]}
    else:
        traj = integrate(obj, setting.theta0, h, len(gd) - 1, flow=name, method="rk4", step_size=h / config.substeps,
                         k=config.k, eig_refresh=h, progress=ctx.progress)
        states = torch.as_tensor(traj.state_matrix(), dtype=setting.theta0.dtype, device=setting.theta0.device)
        loss, status = traj.losses, traj.status
        predicted = loss
        work = {key: traj.config.get(key, 0) for key in ("eigen_matvecs", "field_evaluations")}
    seconds = time.perf_counter() - clock
    gd_states = torch.as_tensor(gd.state_matrix(), dtype=states.dtype, device=states.device)
    n = min(len(states), len(gd_states))
    mid = 0.25 * (gd_states[:-2] + 2 * gd_states[1:-1] + gd_states[2:])
    m = min(n - 1, len(mid) + 1)
    write_json(folder / f"{name}_series.json", {
        "loss": np.asarray(loss).tolist(), "predicted_loss": np.asarray(predicted).tolist(), "status": status,
        "iterate_distance": (states[:n] - gd_states[:n]).norm(dim=1).tolist(),
        "midpoint_distance": [float("nan")] + (states[1:m] - mid[:m - 1]).norm(dim=1).tolist(),
        "sharpness": eigenvalues_along(obj, states[::config.sharpness_every], 1)[:, 0].tolist(),
        "seconds": seconds, **work})


def _scores(setting: Setting, config: Config, folder: Path) -> list[dict]:
    gd = read_json(folder / "gd_series.json")
    h, sigma = gd["lr"], gd["sigma"]
    smoothed = gaussian_smoothed(np.asarray(gd["loss"]), sigma)
    sharp = h * gaussian_smoothed(np.asarray(gd["sharpness"]), max(sigma / config.sharpness_every, 1.0))
    rows = []
    for name in config.flows:
        s = read_json(folder / f"{name}_series.json")
        n = len(s["iterate_distance"])
        lo, hi = int(2 * sigma), min(n, len(smoothed)) - int(2 * sigma)
        window = slice(lo, max(lo, hi))
        pred = np.asarray(s["predicted_loss"], dtype=float)
        rel = np.abs(pred[window] - smoothed[window]) / smoothed[window]
        flow_sharp = h * np.asarray(s["sharpness"], dtype=float)
        j = min(len(flow_sharp), len(sharp))
        time_units = max(n - 1, 1)
        rows.append({
            "setting": setting.key, "h": float(f"{h:.4g}"), "flow": name,
            "status": s["status"] if s["status"] == "complete" else f"{s['status']} at step {n - 1}",
            "iterate distance (mean)": float(np.mean(s["iterate_distance"])),
            "iterate distance (end)": float(s["iterate_distance"][-1]),
            "midpoint distance (mean)": float(np.nanmean(s["midpoint_distance"])),
            "loss error vs smoothed GD": float(np.mean(rel)) if rel.size else float("nan"),
            "hλ₁ error vs smoothed GD": float(np.mean(np.abs(flow_sharp[:j] - sharp[:j]))),
            "hλ₁ end (GD smoothed)": f"{flow_sharp[j - 1]:.3g} ({sharp[j - 1]:.3g})",
            "cost (gradients per h)": float(s["seconds"] / time_units / gd["gradient_seconds"]),
            "eigen HVPs per h": float(s.get("eigen_matvecs", 0)) / time_units,
        })
    return rows


def plot(out: Path, figures: Path) -> list[Path]:
    manifest = read_json(out / "manifest.json")
    flows = manifest["config"]["flows"]
    folders = [p for p in sorted(out.iterdir()) if (p / "gd_series.json").exists()]
    if not folders:
        raise FileNotFoundError(f"no arena folders with gd_series.json in {out}")
    every = manifest["config"]["sharpness_every"]
    with plots.style():
        fig, axes = plots.subplots(3 * len(folders), ncols=len(folders), height=2.7)
        cols = len(folders)
        for c, folder in enumerate(folders):
            gd = read_json(folder / "gd_series.json")
            h, sigma = gd["lr"], gd["sigma"]
            loss = np.asarray(gd["loss"])
            steps = np.arange(len(loss))
            ax_d = axes[c]
            ax_l = axes[cols + c]
            ax_s = axes[2 * cols + c]
            ax_l.plot(steps, loss, color=plots.color("gd"), alpha=0.25, lw=0.8)
            ax_l.plot(steps, gaussian_smoothed(loss, sigma), color=plots.color("gd"), lw=2.5,
                      label=f"GD smoothed (σ = {sigma:g})")
            ax_s.plot(steps[::every][:len(gd["sharpness"])], h * np.asarray(gd["sharpness"]), color=plots.color("gd"),
                      lw=0.8, label="GD")
            cap = 0.0
            for name in flows:
                path = folder / f"{name}_series.json"
                if not path.exists():
                    continue
                s = read_json(path)
                n = np.arange(len(s["iterate_distance"]))
                distance = np.asarray(s["iterate_distance"], dtype=float)
                if s["status"] == "complete":
                    cap = max(cap, float(np.nanmax(distance)))
                tag = "" if s["status"] == "complete" else f" ({s['status']} at {len(n) - 1})"
                ax_d.semilogy(n[1:], distance[1:], color=plots.color(name), label=plots.label(name) + tag)
                pred = np.asarray(s["predicted_loss"], dtype=float)
                suffix = " (prediction)" if name == "central" else ""
                ax_l.plot(np.arange(len(pred)), pred, color=plots.color(name), ls="--" if suffix else "-",
                          label=plots.label(name) + suffix)
                sh = np.asarray(s["sharpness"], dtype=float)
                ax_s.plot(np.arange(len(sh)) * every, h * sh, color=plots.color(name), label=plots.label(name))
            ax_d.set_title(gd["title"], fontsize=9)
            ax_d.set_ylabel("‖θ_flow(nh) − θ_GD(n)‖")
            ax_l.set_ylabel("loss")
            ax_l.set_yscale("log")
            # a diverged flow's last values would flatten every other curve: the axes follow GD's scale
            finite = loss[np.isfinite(loss)]
            ax_l.set_ylim(0.5 * float(finite.min()), 3 * float(finite.max()))
            if cap > 0:
                ax_d.set_ylim(top=5 * cap)
            ax_s.set_ylim(0, 3)
            ax_s.axhline(2, ls=":", color="k")
            ax_s.set_ylabel("h·λ₁")
            ax_s.set_xlabel("GD step n (t = n·h)")
        axes[0].legend(fontsize=6)
        axes[cols].legend(fontsize=6)
        fig.suptitle("flow arena: each continuous model of GD against GD")
        return save_figure(fig, figures, "flow_arena")
