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
  median of 20), plus field evaluations and eigen HVPs;
* ``onset oscillation``: the sharpness at the onset of the edge. From the first step n₀ at which hλ₁ ≥ 2 (found on
  the coarse series, then step by step), hλ₁ at every step of the next ``onset_window`` steps, averaged over
  consecutive pairs (which removes GD's period-2 flip); its amplitude is half its range, its period the median
  spacing of its peaks (prominence ≥ 0.01), NaN with fewer than two.

Arena v2 adds the symmetrized-center flow (:func:`flows.symmetrized_flow`, ``symmetrized``: base gf, k directions)
and PF top-k with the symmetrized center (``symmetrized_pf``), and a model no other experiment uses
(:func:`experiments.zoo.datasets.circles_layernorm`: LayerNorm, GELU, cross-entropy). The circles model's sharpness
shoots past 2/h and falls back (a catapult) rather than settling at the edge.

**Adding a model** (Rod Flow, Edge Flow, the free-energy model, once transcribed): a model whose state is θ alone is a
:class:`flows.Flow` record in ``flows.FLOWS`` (its field, label, order and options) and runs here by name through
:func:`flows.integrate`; a model with state beyond θ (a rod, a magnitude) is a function in :data:`RUNNERS`,
``runner(setting, config, ctx) -> ArenaRun`` (its trajectory, whose states are the model's θ on the grid t = n·h, and
its prediction of GD's time-averaged loss). Either way, add its name to ``Config.flows``; the scores, the tables and
the figures follow.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.signal import find_peaks
from torch import Tensor

from analysis import plots
from experiments.cli.common import number_key, read_json, save_figure, write_json, write_table
from experiments.cli.context import RunContext
from experiments.zoo.datasets import circles_layernorm, digits_objective, swish_mlp_toy
from flows import (
    FLOWS,
    EigenTracker,
    Objective,
    Trajectory,
    central_flow,
    gaussian_smoothed,
    gradient_descent,
    integrate,
    sharpness,
    symmetrized_flow,
)
from flows.curvature.lanczos import NonFiniteSpectrumError

FLOW_NAMES = ("gf", "igr", "pf_topk", "pf_topk_igr", "central", "symmetrized", "symmetrized_pf")
OBJECTIVES = ("toy", "digits", "circles")


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
    objectives: tuple[str, ...] = OBJECTIVES
    """Which objectives to run: 'toy', 'digits', 'circles'."""
    central_refresh_per_step: bool = True
    """False: an eigen solve at every central-flow substep."""
    circles_target: float = 1.0
    """h·λ_max(θ₀) on the circles LayerNorm MLP."""
    circles_steps: int = 200
    """GD steps on circles."""
    circles_sigma: float = 10.0
    """Width (in steps) of the Gaussian that smooths GD's loss on circles."""
    symmetrized_k: int = 5
    """Directions of the symmetrized-center flows' rod."""
    symmetrized_substeps: int = 2
    """Euler substeps per GD step of the symmetrized-center flows."""
    onset_window: int = 300
    """Steps after the onset of the edge over which the sharpness oscillation is measured step by step (to the end of
    the run if shorter; at 60 the toy's GD, GF and IGR were all still rising from 2.00 to 2.32)."""

    def validate(self) -> None:
        known = tuple(FLOWS) + tuple(RUNNERS)
        unknown = sorted(set(self.flows) - set(known))
        if unknown or not self.flows:
            raise ValueError(f"flows must be a non-empty subset of {known}, got {self.flows}")
        bad = sorted(set(self.objectives) - set(OBJECTIVES))
        if bad or not self.objectives:
            raise ValueError(f"objectives must be a non-empty subset of {OBJECTIVES}, got {self.objectives}")
        for name in ("toy_steps", "digits_steps", "n_train", "k", "substeps", "sharpness_every", "circles_steps",
                     "symmetrized_k", "symmetrized_substeps", "onset_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if not (self.toy_lr > 0 and self.toy_sigma > 0 and self.digits_sigma > 0 and self.circles_sigma > 0
                and self.circles_target > 0):
            raise ValueError("toy_lr, toy_sigma, digits_sigma, circles_sigma and circles_target must be > 0")
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
    if "circles" in config.objectives:
        obj = circles_layernorm(seed=ctx.seed)
        theta0 = obj.theta0.to(ctx.device)
        out.append(Setting("circles", f"circles LayerNorm MLP (CE), h·λ_max(θ₀) = {config.circles_target:g}", obj,
                           theta0, config.circles_target / sharpness(obj, theta0), config.circles_steps,
                           config.circles_sigma))
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
    coarse = sharpness_along(setting.objective, states)
    all_states = torch.as_tensor(traj.state_matrix(), dtype=setting.theta0.dtype, device=setting.theta0.device)
    write_json(folder / "gd_series.json", {
        "loss": traj.losses.tolist(), "status": traj.status, "lr": setting.lr, "title": setting.title,
        "sigma": setting.sigma, "sharpness": coarse.tolist(),
        "gradient_seconds": gradient_seconds(setting.objective, setting.theta0),
        **onset_series(setting.objective, all_states, setting.lr, coarse, config.sharpness_every,
                       config.onset_window)})


def sharpness_along(objective: Objective, states: Tensor) -> np.ndarray:
    """λ₁ at each row of ``states`` from one warm tracker; NaN where the spectrum does not exist (a diverging model's
    last states overflow the Hessian products), the tracker restarted cold after such a row."""
    tracker, out = EigenTracker(k=1, tol=1e-4), []
    for row in states:
        try:
            out.append(float(tracker.update(objective, row).values[0]))
        except NonFiniteSpectrumError:
            out.append(float("nan"))
            tracker = EigenTracker(k=1, tol=1e-4)
    return np.asarray(out)


def onset_series(objective: Objective, states: Tensor, lr: float, coarse: np.ndarray, every: int,
                 window: int) -> dict:
    """``onset_step`` n₀ (the first step with hλ₁ ≥ 2, None if none) and ``onset_sharpness``: λ₁ at steps n₀ … n₀ +
    ``window`` (fewer at the end of the run), from the coarse series λ₁ at every ``every``-th state refined step by
    step."""
    above = np.flatnonzero(lr * np.asarray(coarse) >= 2.0)
    if not above.size:
        return {"onset_step": None, "onset_sharpness": []}
    start = max(0, (int(above[0]) - 1) * every)
    fine = sharpness_along(objective, states[start:int(above[0]) * every + window + 1])
    first = np.flatnonzero(lr * fine >= 2.0)
    offset = int(first[0]) if first.size else int(above[0]) * every - start
    return {"onset_step": start + offset, "onset_sharpness": fine[offset:offset + window + 1].tolist()}


def oscillation(series: list[float] | np.ndarray, lr: float) -> tuple[float, float]:
    """(amplitude, period in steps) of hλ₁ after the onset: half the range and the median peak spacing of the
    two-step average (GD's period-2 flip removed); NaN when the series is too short or has fewer than two peaks."""
    x = lr * np.asarray(series, dtype=float)
    if x.size < 6 or not np.isfinite(x).all():
        return float("nan"), float("nan")
    pairs = 0.5 * (x[:-1] + x[1:])
    peaks, _ = find_peaks(pairs, prominence=0.01)
    period = float(np.median(np.diff(peaks))) if peaks.size >= 2 else float("nan")
    return 0.5 * float(pairs.max() - pairs.min()), period


@dataclass(frozen=True)
class ArenaRun:
    """What a model gives the arena: its trajectory (states: its θ on GD's grid), its prediction of GD's
    time-averaged loss, and its work counters."""

    trajectory: Trajectory
    predicted_loss: np.ndarray
    work: dict = field(default_factory=dict)


def _central(setting: Setting, config: Config, ctx) -> ArenaRun:
    h = setting.lr
    cf = central_flow(setting.objective, setting.theta0, h, setting.steps, substeps=config.substeps, states="full",
                      eig_refresh=h if config.central_refresh_per_step else 0.0, progress=ctx.progress)
    return ArenaRun(cf, cf.metric("predicted_loss"), {key: cf.config[key] for key in ("eigen_matvecs",
                                                                                     "field_evaluations")})


def _symmetrized(base: str) -> Callable[[Setting, Config, object], ArenaRun]:
    def run(setting: Setting, config: Config, ctx) -> ArenaRun:
        traj = symmetrized_flow(setting.objective, setting.theta0, setting.lr, setting.steps,
                                k=config.symmetrized_k, substeps=config.symmetrized_substeps, base=base,  # type: ignore[arg-type]
                                states="full", progress=ctx.progress)
        return ArenaRun(traj, traj.metric("predicted_loss"), {
            "eigen_matvecs": traj.config["eigen_matvecs"] + traj.config["hvps"],
            "field_evaluations": traj.config["gradients"] // 2})
    return run


RUNNERS: dict[str, Callable[[Setting, Config, object], ArenaRun]] = {
    "central": _central, "symmetrized": _symmetrized("gf"), "symmetrized_pf": _symmetrized("pf")}
"""Models with their own runner (state beyond θ, or their own discretisation); every other name is a
``flows.FLOWS`` record integrated by RK4 at h/``substeps`` (module docstring: adding a model)."""


def _integrated(name: str, setting: Setting, config: Config, ctx) -> ArenaRun:
    h = setting.lr
    traj = integrate(setting.objective, setting.theta0, h, setting.steps, flow=name, method="rk4",
                     step_size=h / config.substeps, k=config.k, eig_refresh=h, progress=ctx.progress)
    return ArenaRun(traj, traj.losses, {key: traj.config.get(key, 0) for key in ("eigen_matvecs",
                                                                                  "field_evaluations")})


def _flow(setting: Setting, name: str, config: Config, folder: Path, ctx) -> None:
    """Run one model on the GD grid and save its series against GD (distances, predicted loss, sharpness, cost)."""
    obj = setting.objective
    gd = Trajectory.load(folder / "gd")
    setting = dataclasses.replace(setting, steps=min(setting.steps, len(gd) - 1))  # to GD's last step
    clock = time.perf_counter()
    run = RUNNERS[name](setting, config, ctx) if name in RUNNERS else _integrated(name, setting, config, ctx)
    seconds = time.perf_counter() - clock
    states = torch.as_tensor(run.trajectory.state_matrix(), dtype=setting.theta0.dtype, device=setting.theta0.device)
    gd_states = torch.as_tensor(gd.state_matrix(), dtype=states.dtype, device=states.device)
    n = min(len(states), len(gd_states))
    mid = 0.25 * (gd_states[:-2] + 2 * gd_states[1:-1] + gd_states[2:])
    m = min(n - 1, len(mid) + 1)
    coarse = sharpness_along(obj, states[::config.sharpness_every])
    write_json(folder / f"{name}_series.json", {
        "loss": np.asarray(run.trajectory.losses).tolist(), "predicted_loss": np.asarray(run.predicted_loss).tolist(),
        "status": run.trajectory.status,
        "iterate_distance": (states[:n] - gd_states[:n]).norm(dim=1).tolist(),
        "midpoint_distance": [float("nan")] + (states[1:m] - mid[:m - 1]).norm(dim=1).tolist(),
        "sharpness": coarse.tolist(), "seconds": seconds, **run.work,
        **onset_series(obj, states, setting.lr, coarse, config.sharpness_every, config.onset_window)})


def _scores(setting: Setting, config: Config, folder: Path) -> list[dict]:
    gd = read_json(folder / "gd_series.json")
    h, sigma = gd["lr"], gd["sigma"]
    smoothed = gaussian_smoothed(np.asarray(gd["loss"]), sigma)
    sharp = h * gaussian_smoothed(np.asarray(gd["sharpness"]), max(sigma / config.sharpness_every, 1.0))
    rows = []
    gd_amplitude, gd_period = oscillation(gd.get("onset_sharpness", []), h)
    for name in config.flows:
        s = read_json(folder / f"{name}_series.json")
        amplitude, period = oscillation(s.get("onset_sharpness", []), h)
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
            "onset step (GD's)": f"{s.get('onset_step')} ({gd.get('onset_step')})",
            "onset amplitude of hλ₁": amplitude, "onset period (steps)": period,
            "GD onset amplitude": gd_amplitude, "GD onset period": gd_period,
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
        fig, axes = plots.subplots(4 * len(folders), ncols=len(folders), height=2.7)
        cols = len(folders)
        for c, folder in enumerate(folders):
            gd = read_json(folder / "gd_series.json")
            h, sigma = gd["lr"], gd["sigma"]
            loss = np.asarray(gd["loss"])
            steps = np.arange(len(loss))
            ax_d = axes[c]
            ax_l = axes[cols + c]
            ax_s = axes[2 * cols + c]
            ax_o = axes[3 * cols + c]
            if gd.get("onset_sharpness"):
                ax_o.plot(h * np.asarray(gd["onset_sharpness"]), color=plots.color("gd"), lw=0.8, label="GD")
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
                if s.get("onset_sharpness"):
                    ax_o.plot(h * np.asarray(s["onset_sharpness"]), color=plots.color(name), label=plots.label(name))
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
            ax_o.axhline(2, ls=":", color="k")
            ax_o.set_ylim(1.5, 3)
            ax_o.set_ylabel("h·λ₁ from the onset")
            ax_o.set_xlabel("steps after each model's first hλ₁ ≥ 2")
        axes[0].legend(fontsize=6)
        axes[cols].legend(fontsize=6)
        fig.suptitle("flow arena: each continuous model of GD against GD")
        return save_figure(fig, figures, "flow_arena")


def plot_seeds(folders: list[Path], figures: Path) -> list[Path]:
    """Per setting, over seeds: each model's distance to GD's iterates and its hλ₁ with GD's, mean ± 1 sd."""
    flows = read_json(folders[0] / "manifest.json")["config"]["flows"]
    every = read_json(folders[0] / "manifest.json")["config"]["sharpness_every"]
    settings = [p.name for p in sorted(folders[0].iterdir()) if (p / "gd_series.json").exists()]
    with plots.style():
        fig, axes = plots.subplots(2 * len(settings), ncols=len(settings), height=2.7)
        cols = len(settings)
        for c, key in enumerate(settings):
            gds = [read_json(f / key / "gd_series.json") for f in folders]
            h = gds[0]["lr"]  # the digits rates differ per seed by λ_max(θ₀); hλ₁ is compared in units of h
            ax_d, ax_s = axes[c], axes[cols + c]
            n = min(len(g["sharpness"]) for g in gds)
            plots.mean_band(ax_s, np.arange(n) * every, [g["lr"] * np.asarray(g["sharpness"][:n]) for g in gds],
                            color=plots.color("gd"), label="GD")
            for name in flows:
                series = [read_json(f / key / f"{name}_series.json") for f in folders
                          if (f / key / f"{name}_series.json").exists()]
                if len(series) < len(folders):
                    continue
                # a seed that diverged contributes up to its last step (NaN after, left out point by point)
                length = max(len(s["iterate_distance"]) for s in series)
                distance = np.full((len(series), length), np.nan)
                for i, s in enumerate(series):
                    distance[i, :len(s["iterate_distance"])] = s["iterate_distance"]
                plots.mean_band(ax_d, np.arange(1, length), distance[:, 1:], color=plots.color(name),
                                label=plots.label(name), log=True)
                sharp = np.full((len(series), n), np.nan)
                for i, (s, g) in enumerate(zip(series, gds)):
                    values = g["lr"] * np.asarray(s["sharpness"][:n], dtype=float)
                    sharp[i, :len(values)] = values
                plots.mean_band(ax_s, np.arange(n) * every, sharp, color=plots.color(name), label=plots.label(name))
            ax_d.set_yscale("log")
            ax_d.set_title(f"{key}: {gds[0]['title']} (seed 0: h = {h:.3g})", fontsize=8)
            ax_d.set_ylabel("‖θ_model(nh) − θ_GD(n)‖")
            ax_s.axhline(2, ls=":", color="k")
            ax_s.set_ylim(0, 3)
            ax_s.set_ylabel("h·λ₁")
            ax_s.set_xlabel("GD step n")
        axes[0].legend(fontsize=6)
        fig.suptitle(f"flow arena, mean ± 1 sd over {len(folders)} seeds")
        return save_figure(fig, figures, "flow_arena_seeds")
