"""The stochastic sharpness gap: SGD's full-batch λ_max below 2/h against the batch size, measured and predicted.

Liao, Kolomvaki & Kyrillidis ("SGD at the edge of stability: the stochastic sharpness gap", arXiv 2604.21016):
under SGD at rate η the sharpness S = λ_max settles at 2/η − ΔS with ΔS = ηβσ_u²/(4α), where σ_u² = Var_B(u₁ᵀg_B)
is the batch gradient's noise along the top eigenvector u₁, α = −∇Eᵀ∇S the progressive-sharpening rate and
β = ‖∇S‖² the self-stabilization strength (∇S = ∇³E[u₁, u₁]; the definitions of Damian, Nichani & Lee 2023,
arXiv 2209.15594 §4, which the gap paper builds on). Their blog reports gap ∝ b^−1.27 (R² = 0.98) on CIFAR-10
MLPs/CNNs with MSE. Andreyev & Beneventano (arXiv 2412.20553) add that the batch sharpness
E_B[g_BᵀH_Bg_B/‖g_B‖²] is what sits at 2/η.

Here, per model and batch size b (and the full batch b = N as the reference), SGD at rate h on the digits data with
½-MSE; every ``every`` steps at θₙ: λ_max (:class:`analysis.Sharpness`), the batch sharpness over fresh batches with
its ratio-of-means variant (:class:`analysis.BatchSharpness`), the batch sharpness of the very batch each step uses
(:class:`analysis.StepBatchSharpness`,
ten times per measurement interval), and σ_u², α, β, ΔS (:class:`analysis.StochasticGap`).
Every column is the median over the last half of the run. Two gaps, both in units of the edge (× h/2): to the edge,
1 − hλ/2 (the paper's 2/η − S), and to the full-batch run, (λ_N − λ_b)h/2. The log–log slope of each against b is
fitted over the batch sizes where it is positive (:func:`power_law_fit`: least squares, 95% t-interval).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import stats

from analysis import BatchSharpness, Sharpness, StepBatchSharpness, StochasticGap, plots
from analysis.controllers.stochastic import SGDController
from experiments.cli.common import format_table, read_json, save_figure, write_json, write_table
from experiments.cli.context import RunContext
from experiments.zoo.datasets import (
    check_data,
    check_digits_widths,
    fc_net,
    fitted_widths,
    half_mse,
    load_split,
)
from flows import Objective, Trajectory, gradient_descent
from flows.curvature.stochastic import MiniBatches, stochastic_sharpness_gap

ModelName = Literal["fc-tanh", "fc-relu"]
MODELS: tuple[str, ...] = ("fc-tanh", "fc-relu")
PAPER_SLOPE = -1.27
"""The log–log slope of gap against batch size reported for 2604.21016 (CIFAR-10 MLP/CNN, MSE; R² = 0.98)."""


@dataclass
class Config:
    models: tuple[str, ...] = MODELS
    """Digits MLPs to run: fc-tanh (the house model) and fc-relu (same widths, ReLU)."""
    batch_sizes: tuple[int, ...] = (16, 32, 64, 128, 256)
    """SGD batch sizes; the full batch (b = N, plain GD) is run as well, as the reference."""
    lr: float = 0.4
    """SGD's rate h for every run."""
    steps: int = 1000
    """SGD steps per run (the medians are over the last half)."""
    every: int = 100
    """Measure λ_max, the batch sharpness and the gap pieces every this many steps."""
    rel_error: float = 0.05
    """Relative standard error at which the batch-sharpness estimate stops drawing batches."""
    n_train: int = 0
    """Training examples (0: the whole digits training split, N = 1500)."""
    widths: tuple[int, ...] = (64, 200, 200, 10)
    """The MLPs' layer widths (64 inputs, 10 outputs)."""
    data: str = "digits"
    """Data set: 'digits', or a classification set of experiments.zoo.papers (mnist1d, moons, circles, cohen-5k:PATH,
    cf-1k-4class:PATH, eoss-seeded:PATH); the MLP's first and last widths follow it."""

    def validate(self) -> None:
        check_data(self.data)
        check_digits_widths(self.widths)
        if not self.models or any(m not in MODELS for m in self.models):
            raise ValueError(f"models must be a non-empty subset of {MODELS}, got {self.models}")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ValueError(f"batch_sizes must be positive, got {self.batch_sizes}")
        if not (self.lr > 0 and self.rel_error > 0):
            raise ValueError("lr and rel_error must be > 0")
        if self.steps < 2 or self.every < 1 or self.n_train < 0:
            raise ValueError("steps must be ≥ 2, every ≥ 1, n_train ≥ 0")


@dataclass(frozen=True)
class PowerLawFit:
    """log y = intercept + slope·log b by least squares, with the slope's standard error, its 95% t-interval
    (n − 2 degrees of freedom), R² and the points used."""

    slope: float
    intercept: float
    slope_se: float
    low: float
    high: float
    r_squared: float
    points: int


def power_law_fit(sizes, gaps) -> PowerLawFit:
    """Fit gap ∝ b^slope over the points with a positive, finite gap (NaN fields with fewer than 3 such points)."""
    b, g = np.asarray(sizes, dtype=float), np.asarray(gaps, dtype=float)
    keep = np.isfinite(g) & (g > 0) & (b > 0)
    n = int(keep.sum())
    if n < 3 or len(np.unique(b[keep])) < 2:
        return PowerLawFit(*(math.nan,) * 6, n)
    fit = stats.linregress(np.log(b[keep]), np.log(g[keep]))
    half = float(stats.t.ppf(0.975, n - 2)) * fit.stderr
    return PowerLawFit(float(fit.slope), float(fit.intercept), float(fit.stderr), float(fit.slope - half),
                       float(fit.slope + half), float(fit.rvalue ** 2), n)


def run(config: Config, out: Path, ctx: RunContext) -> None:
    split = load_split(config.data, seed=ctx.seed, n_train=config.n_train or None)
    data = split.train
    n = len(data[0])
    sizes = sorted({b for b in config.batch_sizes if b < n} | {n})
    if any(b > n for b in config.batch_sizes):
        raise ValueError(f"batch_sizes must be ≤ N = {n} (the training examples), got {config.batch_sizes}")
    rows = []
    for name in config.models:
        model = fc_net(fitted_widths(config.widths, split), activation=name.removeprefix("fc-"), seed=ctx.seed)
        obj = Objective.from_module(model, half_mse, data, name=f"digits-{name}")
        assert obj.theta0 is not None  # from_module sets it
        theta0 = obj.theta0.to(ctx.device)
        for b in sizes:
            key = f"{name}/b{b}"
            folder = out / name / f"b{b}"
            rows.append(ctx.unit(key, lambda b=b, folder=folder, key=key, model=model, obj=obj, theta0=theta0:
                                 sgd_unit(obj, model, data, theta0, b, config.lr, 0.0, config, folder, ctx, key),
                                 lambda folder=folder: read_json(folder / "row.json")))
    for row in rows:
        reference = next(r for r in rows if r["model"] == row["model"] and r["batch size"] == n)
        row["gap to full batch (×h/2)"] = _round(reference["hλ_max/2"] - row["hλ_max/2"])
    print(write_table(out / "sgd_gap.csv", rows))
    fits = []
    for name in config.models:
        mine = [r for r in rows if r["model"] == name and r["batch size"] < n]
        for column in ("gap to the edge (×h/2)", "gap to full batch (×h/2)", "predicted gap ΔS (×h/2)"):
            fit = power_law_fit([r["batch size"] for r in mine], [r[column] for r in mine])
            fits.append({"model": name, "gap": column, "slope": _round(fit.slope), "slope s.e.": _round(fit.slope_se),
                         "95% interval": f"[{fit.low:.3g}, {fit.high:.3g}]", "R²": _round(fit.r_squared),
                         "points": fit.points, "paper's slope": PAPER_SLOPE})
    print(write_table(out / "sgd_gap_fits.csv", fits))


def sgd_unit(obj: Objective, model, data, theta0, b: int, lr: float, momentum: float, config: Any, folder: Path,
             ctx: RunContext, key: str, gap_terms: bool = True) -> dict:
    """One SGD run (heavy-ball ``momentum``) with λ_max and the batch sharpness, and with ``gap_terms`` the step
    batch sharpness and σ_u², α, β; its row of last-half medians."""
    batches = MiniBatches(model, half_mse, data, b, seed=ctx.unit_seed(key))
    probe = MiniBatches(model, half_mse, data, b, seed=ctx.unit_seed(f"{key}/probe"))
    controller = SGDController(batches)
    monitor = Sharpness(every=config.every)
    callbacks: list = [monitor, BatchSharpness(probe, every=config.every, rel_error=config.rel_error)]
    if gap_terms:
        callbacks += [StochasticGap(monitor, probe, every=config.every, rel_error=0.15, max_samples=128),
                      StepBatchSharpness(controller, every=max(1, config.every // 10))]
    traj = gradient_descent(obj, theta0, lr, config.steps, momentum=momentum, controller=controller, states="none",
                            callbacks=callbacks, progress=ctx.progress)
    ctx.check()
    traj.save(folder / "sgd")
    row = last_half_row(traj, lr)
    row = {"model": obj.name.removeprefix("digits-"), "batch size": b, "momentum": momentum, "h": lr, **row}
    write_json(folder / "row.json", row)
    return row


def last_half_row(traj: Trajectory, lr: float) -> dict[str, Any]:
    """Medians over the measurements in the last half of ``traj``, every curvature as h·(·)/2 (1 is the edge)."""
    half = len(traj) // 2

    def median(name: str) -> float:
        if name not in traj.metrics:
            return math.nan
        values = traj.metric(name)[half:]
        values = values[np.isfinite(values)]
        return float(np.median(values)) if len(values) else math.nan

    alpha, beta, sigma2 = median("sharpening_rate"), median("self_stabilization"), median("projected_noise_variance")
    lam = median("sharpness")
    alphas = traj.metrics.get("sharpening_rate", np.full(len(traj), np.nan))[half:]
    alphas = alphas[np.isfinite(alphas)]
    predicted = stochastic_sharpness_gap(lr, alpha, beta, sigma2)  # NaN where α ≤ 0 or unmeasured
    return {"hλ_max/2": _round(lr * lam / 2),
            "h·batch sharpness/2": _round(lr * median("batch_sharpness") / 2),
            "h·step batch sharpness/2": _round(lr * median("step_batch_sharpness") / 2),
            "h·ratio of means/2": _round(lr * median("batch_sharpness_ratio_of_means") / 2),
            "gap to the edge (×h/2)": _round(1 - lr * lam / 2),
            "predicted gap ΔS (×h/2)": _round(lr * predicted / 2),
            "α": _round(alpha), "β": _round(beta), "σ_u²": _round(sigma2),
            "α > 0 (fraction)": _round(float(np.mean(alphas > 0)) if len(alphas) else math.nan),
            "final loss": _round(float(traj.losses[-1])), "status": traj.status}


def _round(x: float) -> float:
    return float(f"{x:.4g}") if math.isfinite(x) else math.nan


def _rows(out: Path) -> list[dict]:
    return [read_json(p) for p in sorted(out.glob("*/b*/row.json"))]


def plot(out: Path, figures: Path) -> list[Path]:
    return plot_seeds([out], figures, stem="sgd_gap")


def plot_seeds(folders: list[Path], figures: Path, stem: str = "sgd_gap_seeds") -> list[Path]:
    """Per model: hλ/2 and h·BS/2 against b, and the gaps on log–log axes with the pooled fit and the paper's
    slope; over several seeds the mean with a ± 1 sd band. Prints the fits pooled over every seed's points."""
    per_seed = [_rows(f) for f in folders]
    models = list(dict.fromkeys(r["model"] for r in per_seed[0]))
    pooled: list[dict] = []
    with plots.style():
        fig, axes = plots.subplots(2 * len(models), ncols=2, height=3.0)
        for m, name in enumerate(models):
            ax_level, ax_gap = axes[2 * m], axes[2 * m + 1]
            sizes = sorted({r["batch size"] for r in per_seed[0] if r["model"] == name})
            n = max(sizes)

            def table(column: str, name=name, sizes=sizes) -> np.ndarray:
                return np.array([[next((r[column] for r in rows if r["model"] == name and r["batch size"] == b),
                                       math.nan) for b in sizes] for rows in per_seed], dtype=float)

            for i, (column, label) in enumerate((("hλ_max/2", "λ_max (full batch)"),
                                                 ("h·batch sharpness/2", "batch sharpness, fresh batches"),
                                                 ("h·step batch sharpness/2", "batch sharpness, the step's batch"))):
                plots.mean_band(ax_level, sizes, table(column), color=plots.CYCLE[i], marker="o", ms=3, label=label)
            ax_level.axhline(1, ls=":", color="k")
            ax_level.set_xscale("log")
            ax_level.set_title(f"digits {name}, h = {per_seed[0][0]['h']:g}: median of the last half, × h/2")
            ax_level.set_xlabel(f"batch size (N = {n} is GD)")
            small = [b for b in sizes if b < n]
            level = table("hλ_max/2")
            gaps = {"1 − hλ/2": table("gap to the edge (×h/2)"), "(λ_N − λ_b)·h/2": level[:, -1:] - level,
                    "ΔS·h/2, closed form": table("predicted gap ΔS (×h/2)")}
            for i, (label, values) in enumerate(gaps.items()):
                values = values[:, :len(small)]
                colour = plots.CYCLE[i]
                plots.mean_band(ax_gap, small, np.where(values > 0, values, np.nan), color=colour, marker="o", ms=3,
                                log=True, label=label)
                fit = power_law_fit(np.tile(small, len(per_seed)), values.ravel())
                pooled.append({"model": name, "gap": label, "slope": _round(fit.slope),
                               "95% interval": f"[{fit.low:.3g}, {fit.high:.3g}]", "R²": _round(fit.r_squared),
                               "points": fit.points, "paper's slope": PAPER_SLOPE})
                if math.isfinite(fit.slope) and i < 2:
                    grid = np.array([min(small), max(small)], dtype=float)
                    ax_gap.plot(grid, np.exp(fit.intercept) * grid ** fit.slope, "--", color=colour, lw=0.8,
                                label=f"fit: slope {fit.slope:.2f} [{fit.low:.2f}, {fit.high:.2f}]")
                    if i == 0:
                        centre = np.exp(np.mean(np.log(grid)))
                        level = np.exp(fit.intercept) * centre ** fit.slope
                        ax_gap.plot(grid, level * (grid / centre) ** PAPER_SLOPE, ":", color="k", lw=0.8,
                                    label=f"paper's slope {PAPER_SLOPE}")
            ax_gap.set_xscale("log")
            ax_gap.set_xticks(small, [str(b) for b in small])
            ax_gap.minorticks_off()
            ax_gap.set_title("gap (positive points; log–log)")
            ax_gap.set_xlabel("batch size")
            for ax in (ax_level, ax_gap):
                ax.legend(fontsize=6)
        seeds = f", mean ± 1 sd over {len(folders)} seeds" if len(folders) > 1 else ""
        fig.suptitle(f"SGD on digits: the stochastic sharpness gap{seeds}")
        print("log–log fits pooled over the seeds' points:\n" + format_table(pooled))
        return save_figure(fig, figures, stem)

