"""Central flows of adaptive optimizers against the discrete runs: Scalar RMSProp, RMSProp and Adam at the edge.

Cohen, Damian et al. (ICLR 2025, §5) model Scalar RMSProp and RMSProp by central flows: the effective sharpness
λ₁(P⁻¹H) (P = diag(√ν + ε)/η) equilibrates at 2 and ν follows the time average of g², including the oscillation's
diag(HΣH). driftlab's update rules (:mod:`flows.dynamics.rules`) give the discrete method, the stable flow and the
central flow from one record (:func:`flows.adaptive_flow`; Adam with the adiabatic closure, ``docs/adaptive.md``).

Per model and rule: the discrete run (its λ₁(P⁻¹H) every ``every`` steps with the P of that step), the stable flow
and the central flow from the same w₀; reported: the central flow's predicted loss against the discrete loss
smoothed by a Gaussian of ``sigma`` steps (relative error, mean and max over the steps whose window is two-sided),
the late median of λ₁(P⁻¹H)/τ for the discrete run and the central flow, the late median of the central flow's ν
over the discrete run's time-averaged ν (its mean over coordinates), and the central flow's cost per step in
gradient-equivalents (its wall time over that of one gradient, measured in the same process). Models: the digits
fc-tanh MLP and a LayerNorm MLP on the same inputs (no other experiment uses it), both with ½-MSE (with
cross-entropy the LayerNorm MLP's sharpness decays as the loss vanishes before either adaptive method reaches its
edge at these rates).
"""
from __future__ import annotations

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
    beta2: float = 0.99
    """β₂ of every rule."""
    beta1: float = 0.9
    """Adam's β₁."""
    eps: float = 1e-8
    """ε added to √ν."""
    schedule: str = "constant"
    """constant, or warmup-cosine (warm-up over a tenth of the steps, cosine to a tenth of η)."""
    steps: int = 200
    """Steps of the discrete method (and flow time)."""
    substeps: int = 4
    """Euler substeps per step of the flows."""
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
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not (0 < self.beta1 < 1 and 0 < self.beta2 < 1 and self.eps >= 0):
            raise ValueError("beta1 and beta2 must be in (0, 1) and eps ≥ 0")
        for name in ("steps", "substeps", "every", "n_train", "width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
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


def rule_for(name: str, lr: float, config: Config):
    """The rule with the configured β's, ε, bias correction and schedule."""
    rate = lr if config.schedule == "constant" else WarmupCosine(
        peak=lr, warmup=max(1, config.steps // 10), total=config.steps + 1, final=lr / 10)
    settings = {"lr": rate, "beta2": config.beta2, "eps": config.eps, "bias_correction": True}
    if name == "adam":
        settings["beta1"] = config.beta1
    return get_rule(name, **settings)


def run(config: Config, out: Path, ctx: RunContext) -> None:
    rows = []
    for model in config.models:
        obj = objective(model, config, ctx.seed)
        for name, lr in zip(config.rules, config.lrs):
            folder = out / f"{model}-{name}"
            rows.append(ctx.unit(folder.name, lambda obj=obj, name=name, lr=lr, folder=folder, model=model:
                                 _one(obj, model, rule_for(name, lr, config), config, folder, ctx),
                                 lambda folder=folder: read_json(folder / "row.json")))
            ctx.check()
    print(write_table(out / "central_adaptive.csv", rows))


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


def _one(obj: Objective, model: str, rule, config: Config, folder: Path, ctx) -> dict:
    assert obj.theta0 is not None  # a module's objective starts at its parameters
    theta0 = obj.theta0.to(ctx.device)
    controller = rule.controller()
    clock = time.perf_counter()
    discrete = gradient_descent(obj, theta0, rule.lr, config.steps, controller=controller, states="none",
                                callbacks=[_effective_sharpness(controller, config.every)], progress=ctx.progress)
    discrete.config["seconds"] = time.perf_counter() - clock
    discrete.save(folder / "discrete")
    ctx.check()
    for kind in ("stable", "central"):
        clock = time.perf_counter()
        flow = adaptive_flow(obj, theta0, rule, config.steps, flow=kind, substeps=config.substeps,
                             progress=ctx.progress)
        flow.config["seconds"] = time.perf_counter() - clock
        flow.save(folder / kind)
        ctx.check()
    row = summarise(folder, config, model, _gradient_seconds(obj, theta0))
    write_json(folder / "row.json", row)
    return row


def interior(n: int, sigma: float) -> np.ndarray:
    """Steps whose Gaussian window (±4σ) lies inside [0, n − 1]."""
    radius = int(np.ceil(4 * sigma))
    return np.arange(radius, n - radius)


def summarise(folder: Path, config: Config, model: str, gradient_seconds: float) -> dict:
    """The unit's table row (module docstring)."""
    discrete, central = Trajectory.load(folder / "discrete"), Trajectory.load(folder / "central")
    threshold = central.config["threshold"]
    n = min(len(discrete), len(central)) - 1  # the discrete run's last row takes no step
    steps = interior(n, config.sigma)
    smoothed = gaussian_smoothed(discrete.losses[:n], config.sigma)
    error = np.abs(central.metric("predicted_loss")[steps] - smoothed[steps]) / np.abs(smoothed[steps])
    late = slice(n // 2, n)
    measured = discrete.metric("effective_sharpness")[late]
    measured = measured[np.isfinite(measured)]
    nu_average = gaussian_smoothed(discrete.metric("nu")[:n], config.sigma)
    nu_ratio = central.metric("nu")[steps] / nu_average[steps]
    central_steps = max(len(central) - 1, 1)
    return {"model": model, "rule": central.config["rule"], "η": central.config["lr"],
            "schedule": config.schedule, "β₂": config.beta2,
            "predicted vs smoothed loss, mean rel. error": _fmt(error.mean()) if steps.size else "",
            "max rel. error": _fmt(error.max()) if steps.size else "",
            "discrete λ₁(P⁻¹H)/τ, late median": _fmt(np.median(measured) / threshold) if measured.size else "",
            "central λ₁(P⁻¹H)/τ, late median": _fmt(np.median(central.metric("effective_sharpness")[late]) / threshold),
            "central ν / averaged discrete ν, late median": _fmt(np.median(nu_ratio[steps >= n // 2]))
            if (steps >= n // 2).any() else "",
            "central cost per step (gradient-equivalents)":
                _fmt(central.config["seconds"] / central_steps / gradient_seconds),
            "status (discrete/central)": f"{discrete.status}/{central.status}"}


def _fmt(value: float) -> float:
    return float(f"{float(value):.4g}")


def plot(out: Path, figures: Path) -> list[Path]:
    folders = sorted(p for p in out.iterdir() if p.is_dir() and (p / "row.json").exists())
    with plots.style():
        fig, axes = plots.subplots(3 * len(folders), ncols=3, height=2.6)
        axes = np.asarray(axes).reshape(len(folders), 3)
        for (ax_l, ax_s, ax_n), folder in zip(axes, folders):
            _draw(ax_l, ax_s, ax_n, folder)
        fig.suptitle("central flows of adaptive optimizers against the discrete runs")
        return save_figure(fig, figures, "central_adaptive")


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
    ax_n.semilogy(steps, discrete.metric("nu")[:n], color=plots.color("gd"), lw=0.6, label="discrete ν")
    ax_n.semilogy(np.arange(len(central)), central.metric("nu"), color=plots.color("central"), label="central ν")
    ax_n.semilogy(np.arange(len(stable)), stable.metric("nu"), color=plots.CYCLE[1], label="stable ν")
    ax_l.set_title(f"{folder.name}: loss")
    ax_s.set_title("λ₁(P⁻¹H)")
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
            measured = [t.metric("effective_sharpness")[:n] / threshold for t in discrete]
            keep = np.isfinite(np.asarray(measured)).any(axis=0)
            plots.mean_band(ax_s, steps[keep], np.asarray(measured)[:, keep], color=plots.color("gd"), marker="o",
                            ms=2, label="discrete")
            plots.mean_band(ax_s, steps, [t.metric("effective_sharpness")[:n] / threshold for t in central],
                            color=plots.color("central"), label="central flow")
            ax_s.axhline(1.0, ls=":", color="k")
            ax_l.set_title(f"{unit}: loss")
            ax_s.set_title("λ₁(P⁻¹H) / τ")
            for ax in (ax_l, ax_s):
                ax.set_xlabel("step")
                ax.legend(fontsize=6)
        fig.suptitle(f"central flows of adaptive optimizers, mean ± 1 sd over {len(folders)} seeds")
        return save_figure(fig, figures, "central_adaptive_seeds")
