"""Central flows of adaptive optimizers against the discrete runs: Scalar RMSProp, RMSProp and Adam at the edge.

Cohen, Damian et al. (ICLR 2025, §5) model Scalar RMSProp and RMSProp by central flows: the effective sharpness
λ₁(P⁻¹H) (P = diag(√ν + ε)/η) equilibrates at 2 and ν follows the time average of g², including the oscillation's
diag(HΣH). driftlab's update rules (:mod:`flows.dynamics.rules`) give the discrete method, the stable flow and the
central flow from one record (:func:`flows.adaptive_flow`; Adam with the adiabatic closure, ``docs/adaptive.md``).

A unit is one model × rule × β₂ × schedule (``beta2s`` and ``schedules`` make the sweep). Per unit: the discrete
run (its λ₁(P⁻¹H) every ``every`` steps with the P of that step), the stable flow, the central flow and, for Scalar
RMSProp, the ablated flow dw/dt = −(2/S)∇L (S = λ₁(H)) from the same w₀. ``central_adaptive.csv``, one row per
unit: the central flow's predicted loss against the discrete loss smoothed by a Gaussian of ``sigma`` steps
(relative error, mean and max over the steps whose window is two-sided), the late median of λ₁(P⁻¹H)/τ for the
discrete run and the central flow, the late median of the central flow's ν over the discrete run's time-averaged ν
(its mean over coordinates), the central flow's cost per step in gradient-equivalents (its wall time over that of
one gradient, measured in the same process) and, for Scalar RMSProp, the ablated flow's final sharpness and loss
over the central flow's. ``arena.csv``, the flow arena's scores (``flow-arena``) per unit and flow:

* ``iterate distance``: ‖w_flow(n) − wₙ‖ (mean over n, and at the end), relative to ‖w_N − w₀‖ of the discrete run;
* ``midpoint distance``: ‖w_flow(n) − w̄ₙ‖, w̄ₙ = (wₙ₋₁ + 2wₙ + wₙ₊₁)/4, mean, relative as above;
* ``loss error``: the predicted (central) or own (stable, ablated) loss against the smoothed discrete loss;
* ``effective-sharpness error``: mean |λ₁(P⁻¹H)/τ| gap to the discrete run at its measured steps (central only: the
  stable flow does not measure it, the ablated flow holds it at τ by construction);
* ``gradient-equivalents per step``.

Models: the digits fc-tanh MLP and a LayerNorm MLP on the same inputs (no other experiment uses it), both with
½-MSE (with cross-entropy the LayerNorm MLP's sharpness decays as the loss vanishes before either adaptive method
reaches its edge at these rates).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from analysis import plots
from experiments.cli.common import read_json, save_figure, write_json, write_table
from experiments.cli.context import RunContext
from experiments.zoo.datasets import digits, digits_objective, half_mse
from flows import (
    AdaptiveFlowKind,
    EigenTracker,
    Objective,
    Trajectory,
    WarmupCosine,
    adaptive_flow,
    gaussian_smoothed,
    get_rule,
    gradient_descent,
)

MODELS = ("digits", "layernorm-mlp")
RULE_NAMES = ("scalar_rmsprop", "rmsprop", "adam")
SCHEDULES = ("constant", "warmup-cosine")


@dataclass
class Config:
    rules: tuple[str, ...] = RULE_NAMES
    """Update rules (scalar_rmsprop, rmsprop, adam)."""
    lrs: tuple[float, ...] = (0.3, 0.002, 0.02)
    """The peak rate η of each rule, in the order of ``rules``."""
    models: tuple[str, ...] = MODELS
    """Models: digits (fc-tanh) and layernorm-mlp (64 → width → LayerNorm → tanh → 10), both ½-MSE."""
    beta2s: tuple[float, ...] = (0.99,)
    """β₂ of every rule; several make a sweep (one unit each)."""
    beta1: float = 0.9
    """Adam's β₁."""
    eps: float = 1e-8
    """ε added to √ν."""
    schedules: tuple[str, ...] = ("constant",)
    """constant and/or warmup-cosine (warm-up over a tenth of the steps, cosine to a tenth of η); one unit each."""
    steps: int = 200
    """Steps of the discrete method (and flow time)."""
    substeps: int = 2
    """Semi-implicit Euler substeps per step of the flows."""
    eig_refresh: int = 1
    """Steps between the central flow's eigen solves (Rayleigh–Ritz in between; 0: a solve every substep)."""
    max_k: int = 10
    """Most eigenpairs the central flow tracks."""
    every: int = 5
    """Steps between measurements of the discrete run's λ₁(P⁻¹H)."""
    sigma: float = 5.0
    """Gaussian smoothing of the discrete loss, in steps."""
    n_train: int = 256
    """Training examples of digits."""
    width: int = 32
    """Hidden width of both MLPs (64 → width → 10)."""

    def validate(self) -> None:
        unknown = [r for r in self.rules if r not in RULE_NAMES]
        if unknown or not self.rules:
            raise ValueError(f"rules must be among {RULE_NAMES}, got {self.rules}")
        if len(self.lrs) != len(self.rules) or any(h <= 0 for h in self.lrs):
            raise ValueError(f"lrs must hold one positive rate per rule ({len(self.rules)}), got {self.lrs}")
        if not self.models or any(m not in MODELS for m in self.models):
            raise ValueError(f"models must be among {MODELS}, got {self.models}")
        if not self.schedules or any(s not in SCHEDULES for s in self.schedules):
            raise ValueError(f"schedules must be among {SCHEDULES}, got {self.schedules}")
        if not self.beta2s or not all(0 < b < 1 for b in self.beta2s):
            raise ValueError(f"beta2s must be numbers in (0, 1), got {self.beta2s}")
        if not (0 < self.beta1 < 1 and self.eps >= 0):
            raise ValueError("beta1 must be in (0, 1) and eps ≥ 0")
        for name in ("steps", "substeps", "every", "n_train", "width", "max_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.eig_refresh < 0:
            raise ValueError(f"eig_refresh must be ≥ 0, got {self.eig_refresh}")
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")


def objective(model: str, config: Config, seed: int) -> Objective:
    """The model's full-batch objective in float64."""
    if model == "digits":
        return digits_objective(seed=seed, n_train=config.n_train, widths=(64, config.width, 10),
                                dtype=torch.float64)[0]
    split = digits(seed=seed, dtype=torch.float64, n_train=config.n_train)
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(64, config.width), nn.LayerNorm(config.width), nn.Tanh(),
                        nn.Linear(config.width, 10)).double()
    return Objective.from_module(net, half_mse, split.train, name="digits-layernorm-mlp")


def rule_for(name: str, lr: float, config: Config, beta2: float, schedule: str):
    """The rule with the configured β's, ε, bias correction and schedule."""
    rate = lr if schedule == "constant" else WarmupCosine(
        peak=lr, warmup=max(1, config.steps // 10), total=config.steps + 1, final=lr / 10)
    settings = {"lr": rate, "beta2": beta2, "eps": config.eps, "bias_correction": True}
    if name == "adam":
        settings["beta1"] = config.beta1
    return get_rule(name, **settings)


def unit_name(model: str, rule: str, beta2: float, schedule: str) -> str:
    return f"{model}-{rule}-b{beta2:g}-{schedule}"


def run(config: Config, out: Path, ctx: RunContext) -> None:
    rows = []
    for model in config.models:
        obj = objective(model, config, ctx.seed)
        for name, lr in zip(config.rules, config.lrs):
            for beta2 in config.beta2s:
                for schedule in config.schedules:
                    folder = out / unit_name(model, name, beta2, schedule)
                    rule = rule_for(name, lr, config, beta2, schedule)
                    rows.append(ctx.unit(folder.name,
                                         lambda obj=obj, rule=rule, folder=folder, model=model, schedule=schedule:
                                         _one(obj, model, rule, schedule, config, folder, ctx),
                                         lambda folder=folder: read_json(folder / "row.json")))
                    ctx.check()
    print(write_table(out / "central_adaptive.csv", [row["main"] for row in rows]))
    print(write_table(out / "arena.csv", [line for row in rows for line in row["arena"]]))


def _effective_sharpness(controller, every: int):
    """A callback recording λ₁(P⁻¹H) with the P of step n, every ``every`` steps (a warm tracker)."""
    tracker = EigenTracker(k=1, tol=1e-4)

    def callback(ctx, decision, recorder) -> None:
        if ctx.step % every or controller.state is None:
            return
        p = controller.rule.preconditioner(controller.state)
        pairs = tracker.update(ctx.objective, ctx.theta, preconditioner=p.expand(ctx.theta.numel()).contiguous())
        recorder.log("effective_sharpness", float(pairs.values[0]))

    return callback


def _gradient_seconds(obj: Objective, theta: torch.Tensor, rounds: int = 5) -> float:
    times = []
    for _ in range(rounds):
        clock = time.perf_counter()
        obj.loss_and_grad(theta)
        times.append(time.perf_counter() - clock)
    return float(np.median(times))


def _without_states(traj: Trajectory) -> Trajectory:
    return dataclasses.replace(traj, states=None, state_mode="none")


def flow_kinds(rule_name: str) -> tuple[AdaptiveFlowKind, ...]:
    """The flows a unit runs: stable and central, and the ablated flow for Scalar RMSProp."""
    return ("stable", "central", "ablated") if rule_name == "scalar_rmsprop" else ("stable", "central")


def _distances(flow: Trajectory, path: np.ndarray) -> None:
    """``iterate_distance`` ‖w_flow(n) − wₙ‖ and ``midpoint_distance`` ‖w_flow(n) − w̄ₙ‖ as the flow's metrics."""
    states = flow.state_matrix()
    n = min(len(states), len(path))
    iterate = np.full(len(flow), np.nan)
    iterate[:n] = np.linalg.norm(states[:n] - path[:n], axis=1)
    midpoint = np.full(len(flow), np.nan)
    inner = np.arange(1, min(n, len(path) - 1))
    midpoint[inner] = np.linalg.norm(states[inner] - (path[inner - 1] + 2 * path[inner] + path[inner + 1]) / 4,
                                     axis=1)
    flow.metrics["iterate_distance"], flow.metrics["midpoint_distance"] = iterate, midpoint


def _one(obj: Objective, model: str, rule, schedule: str, config: Config, folder: Path, ctx) -> dict:
    assert obj.theta0 is not None  # a module's objective starts at its parameters
    theta0 = obj.theta0.to(ctx.device)
    controller = rule.controller()
    clock = time.perf_counter()
    discrete = gradient_descent(obj, theta0, rule.lr, config.steps, controller=controller, states="full",
                                callbacks=[_effective_sharpness(controller, config.every)], progress=ctx.progress)
    discrete.config["seconds"] = time.perf_counter() - clock
    path = discrete.state_matrix()
    discrete.config["path_length"] = float(np.linalg.norm(path[-1] - path[0]))
    _without_states(discrete).save(folder / "discrete")
    ctx.check()
    for kind in flow_kinds(rule.name):
        clock = time.perf_counter()
        flow = adaptive_flow(obj, theta0, rule, config.steps, flow=kind, substeps=config.substeps,
                             eig_refresh=config.eig_refresh, max_k=config.max_k, states="full",
                             progress=ctx.progress)
        flow.config["seconds"] = time.perf_counter() - clock
        _distances(flow, path)
        _without_states(flow).save(folder / kind)
        ctx.check()
    row = summarise(folder, config, model, schedule, _gradient_seconds(obj, theta0))
    write_json(folder / "row.json", row)
    return row


def interior(n: int, sigma: float) -> np.ndarray:
    """Steps whose Gaussian window (±4σ) lies inside [0, n − 1]."""
    radius = int(np.ceil(4 * sigma))
    return np.arange(radius, n - radius)


def _loss_error(predicted: np.ndarray, smoothed: np.ndarray, steps: np.ndarray) -> np.ndarray:
    steps = steps[steps < len(predicted)]
    return np.abs(predicted[steps] - smoothed[steps]) / np.abs(smoothed[steps])


def summarise(folder: Path, config: Config, model: str, schedule: str, gradient_seconds: float) -> dict:
    """The unit's rows: ``main`` for central_adaptive.csv, ``arena`` (one per flow) for arena.csv (module
    docstring)."""
    discrete, central = Trajectory.load(folder / "discrete"), Trajectory.load(folder / "central")
    threshold = central.config["threshold"]
    n = len(discrete) - 1  # the discrete run's last row takes no step
    steps = interior(n, config.sigma)
    smoothed = gaussian_smoothed(discrete.losses[:n], config.sigma)
    error = _loss_error(central.metric("predicted_loss"), smoothed, steps)
    late = slice(n // 2, n)
    measured = discrete.metric("effective_sharpness")[late]
    measured = measured[np.isfinite(measured)]
    nu_average = gaussian_smoothed(discrete.metric("nu")[:n], config.sigma)
    in_central = steps[steps < len(central)]
    nu_ratio = central.metric("nu")[in_central] / nu_average[in_central]
    late_steps = in_central >= n // 2
    label = {"model": model, "rule": central.config["rule"], "η": central.config["lr"], "schedule": schedule,
             "β₂": central.config["beta2"]}
    main = {**label,
            "predicted vs smoothed loss, mean rel. error": _fmt(error.mean()) if error.size else "",
            "max rel. error": _fmt(error.max()) if error.size else "",
            "discrete λ₁(P⁻¹H)/τ, late median": _fmt(np.median(measured) / threshold) if measured.size else "",
            "central λ₁(P⁻¹H)/τ, late median":
                _fmt(np.median(central.metric("effective_sharpness")[late]) / threshold),
            "central ν / averaged discrete ν, late median": _fmt(np.median(nu_ratio[late_steps]))
            if late_steps.any() else "",
            "central cost per step (gradient-equivalents)": _cost(central, gradient_seconds)}
    main["ablated S / central S, end"] = main["ablated loss / central predicted loss, end"] = ""
    if (folder / "ablated.npz").exists():
        ablated = Trajectory.load(folder / "ablated")
        central_sharpness = central.metric("effective_sharpness") / central.metric("effective_step")  # λ₁(H)
        main["ablated S / central S, end"] = _fmt(ablated.metric("sharpness")[-1] / central_sharpness[-1])
        main["ablated loss / central predicted loss, end"] = _fmt(ablated.losses[-1]
                                                                   / central.metric("predicted_loss")[-1])
    main["status (discrete/central)"] = f"{discrete.status}/{central.status}"
    scale = float(discrete.config["path_length"]) or 1.0
    arena = []
    for kind in flow_kinds(central.config["rule"]):
        flow = central if kind == "central" else Trajectory.load(folder / kind)
        loss = flow.metric("predicted_loss") if kind == "central" else flow.losses
        err = _loss_error(loss, smoothed, steps)
        row = {**label, "flow": kind,
               "iterate distance, mean (rel.)": _fmt(np.nanmean(flow.metric("iterate_distance")) / scale),
               "iterate distance, end (rel.)": _fmt(flow.metric("iterate_distance")[-1] / scale),
               "midpoint distance, mean (rel.)": _fmt(np.nanmean(flow.metric("midpoint_distance")) / scale),
               "loss error, mean": _fmt(err.mean()) if err.size else "", "loss error, max": _fmt(err.max())
               if err.size else "", "effective-sharpness error, mean": ""}
        if kind == "central":
            eff = discrete.metric("effective_sharpness")
            at = np.flatnonzero(np.isfinite(eff[: len(central)]))
            gap = np.abs(central.metric("effective_sharpness")[at] - eff[at]) / threshold
            row["effective-sharpness error, mean"] = _fmt(gap.mean()) if gap.size else ""
        row["gradient-equivalents per step"] = _cost(flow, gradient_seconds)
        row["status"] = flow.status
        arena.append(row)
    return {"main": main, "arena": arena}


def _cost(flow: Trajectory, gradient_seconds: float) -> float:
    return _fmt(flow.config["seconds"] / max(len(flow) - 1, 1) / gradient_seconds)


def _fmt(value: float) -> float:
    return float(f"{float(value):.4g}")


def figure_name(out: Path) -> str:
    """``central_adaptive``, with the sweep in the name when β₂ or the schedule differ from the default's."""
    manifest = out / "manifest.json"
    config = read_json(manifest)["config"] if manifest.exists() else {}
    name = "central_adaptive"
    beta2s = [float(b) for b in config.get("beta2s", Config.beta2s)]
    if beta2s != list(Config.beta2s):
        name += "_beta2-" + "-".join(f"{b:g}" for b in beta2s)
    schedules = list(config.get("schedules", Config.schedules))
    if schedules != list(Config.schedules):
        name += "_" + "-".join(schedules)
    return name


def plot(out: Path, figures: Path) -> list[Path]:
    folders = sorted(p for p in out.iterdir() if p.is_dir() and (p / "row.json").exists())
    with plots.style():
        fig, axes = plots.subplots(3 * len(folders), ncols=3, height=2.6)
        axes = np.asarray(axes).reshape(len(folders), 3)
        for (ax_l, ax_s, ax_n), folder in zip(axes, folders):
            _draw(ax_l, ax_s, ax_n, folder)
        fig.suptitle("central flows of adaptive optimizers against the discrete runs")
        return save_figure(fig, figures, figure_name(out))


def _draw(ax_l, ax_s, ax_n, folder: Path) -> None:
    discrete, stable, central = (Trajectory.load(folder / kind) for kind in ("discrete", "stable", "central"))
    sigma = float(read_json(folder.parent / "manifest.json")["config"]["sigma"]) \
        if (folder.parent / "manifest.json").exists() else 5.0
    n = len(discrete) - 1
    steps = np.arange(n)
    ax_l.semilogy(steps, discrete.losses[:n], color=plots.color("gd"), lw=0.6, label="discrete")
    ax_l.semilogy(steps, gaussian_smoothed(discrete.losses[:n], sigma), color=plots.color("gd"), ls="--",
                  label="discrete, smoothed")
    ax_l.semilogy(np.arange(len(stable)), stable.losses, color=plots.CYCLE[1], label="stable flow")
    ax_l.semilogy(np.arange(len(central)), central.metric("predicted_loss"), color=plots.color("central"),
                  label="central flow, predicted")
    threshold = central.config["threshold"]
    eff = discrete.metric("effective_sharpness")
    m = np.isfinite(eff)
    ax_s.plot(np.arange(len(eff))[m], eff[m], "o", ms=2, color=plots.color("gd"), label="discrete")
    ax_s.plot(np.arange(len(central)), central.metric("effective_sharpness"), color=plots.color("central"),
              label="central flow")
    ax_s.axhline(threshold, ls=":", color="k", label=f"τ = {threshold:g}")
    ax_l.set_title(f"{folder.name}: loss")
    ax_s.set_title("λ₁(P⁻¹H)")
    if (folder / "ablated.npz").exists():  # Scalar RMSProp: the sharpness S = λ₁(H) = λ₁(P⁻¹H)·p
        ablated = Trajectory.load(folder / "ablated")
        ax_l.semilogy(np.arange(len(ablated)), ablated.losses, color=plots.CYCLE[3], label="ablated flow −(2/S)∇L")
        sharp = eff / discrete.metric("effective_step")[: len(eff)]
        ax_n.plot(np.arange(len(sharp))[m], sharp[m], "o", ms=2, color=plots.color("gd"), label="discrete")
        ax_n.plot(np.arange(len(central)), central.metric("effective_sharpness") / central.metric("effective_step"),
                  color=plots.color("central"), label="central flow")
        ax_n.plot(np.arange(len(ablated)), ablated.metric("sharpness"), color=plots.CYCLE[3], label="ablated flow")
        ax_n.set_title("sharpness S = λ₁(H)")
    else:
        ax_n.semilogy(steps, discrete.metric("nu")[:n], color=plots.color("gd"), lw=0.6, label="discrete ν")
        ax_n.semilogy(np.arange(len(central)), central.metric("nu"), color=plots.color("central"),
                      label="central ν")
        ax_n.semilogy(np.arange(len(stable)), stable.metric("nu"), color=plots.CYCLE[1], label="stable ν")
        ax_n.set_title("ν (mean over coordinates)")
    for ax in (ax_l, ax_s, ax_n):
        ax.set_xlabel("step")
        ax.legend(fontsize=6)


def plot_seeds(folders: list[Path], figures: Path) -> list[Path]:
    """Per unit, over seeds: the discrete run's smoothed loss and the central flow's prediction, and λ₁(P⁻¹H)/τ of
    both, each the mean with a ± 1 sd band."""
    sigma = float(read_json(folders[0] / "manifest.json")["config"]["sigma"])
    units = sorted(p.name for p in folders[0].iterdir() if p.is_dir() and (p / "row.json").exists())
    with plots.style():
        fig, axes = plots.subplots(2 * len(units), ncols=2, height=2.6)
        axes = np.asarray(axes).reshape(len(units), 2)
        for (ax_l, ax_s), unit in zip(axes, units):
            discrete = [Trajectory.load(f / unit / "discrete") for f in folders]
            central = [Trajectory.load(f / unit / "central") for f in folders]
            n = min(min(len(t) for t in discrete) - 1, min(len(t) for t in central))
            steps = np.arange(n)
            threshold = central[0].config["threshold"]
            plots.mean_band(ax_l, steps, [gaussian_smoothed(t.losses[:n], sigma) for t in discrete],
                            color=plots.color("gd"), label="discrete, smoothed", log=True)
            plots.mean_band(ax_l, steps, [t.metric("predicted_loss")[:n] for t in central],
                            color=plots.color("central"), label="central flow, predicted", log=True)
            if all((f / unit / "ablated.npz").exists() for f in folders):
                ablated = [Trajectory.load(f / unit / "ablated") for f in folders]
                if min(len(t) for t in ablated) >= n:
                    plots.mean_band(ax_l, steps, [t.losses[:n] for t in ablated], color=plots.CYCLE[3],
                                    label="ablated flow", log=True)
            measured = [t.metric("effective_sharpness")[:n] / threshold for t in discrete]
            keep = np.isfinite(np.asarray(measured)).any(axis=0)
            plots.mean_band(ax_s, steps[keep], np.asarray(measured)[:, keep], color=plots.color("gd"), marker="o",
                            ms=2, label="discrete")
            plots.mean_band(ax_s, steps, [t.metric("effective_sharpness")[:n] / threshold for t in central],
                            color=plots.color("central"), label="central flow")
            ax_s.axhline(1.0, ls=":", color="k")
            ax_s.set_ylim(0.0, 2.0)  # the first steps start far above the edge (up to 45τ); the equilibrium matters
            ax_l.set_title(f"{unit}: loss")
            ax_s.set_title("λ₁(P⁻¹H) / τ")
            for ax in (ax_l, ax_s):
                ax.set_xlabel("step")
                ax.legend(fontsize=6)
        fig.suptitle(f"central flows of adaptive optimizers, mean ± 1 sd over {len(folders)} seeds")
        return save_figure(fig, figures, figure_name(folders[0]) + "_seeds")
