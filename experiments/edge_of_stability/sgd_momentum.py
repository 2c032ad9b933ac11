"""SGD with heavy-ball momentum at the edge: the batch sharpness against 2(1 − β)/h and 2(1 + β)/h.

Andreyev & Beneventano ("Momentum further constrains sharpness at the edge of stochastic stability", arXiv
2604.14108): with v ← βv + g_B, θ ← θ − hv, the batch sharpness E_B[g_BᵀH_Bg_B/‖g_B‖²] plateaus at 2(1 − β)/h for
small batches and at 2(1 + β)/h (the full-batch edge) for large ones. Here every β runs at the same effective rate
h/(1 − β) = ``effective_lr`` (so the small-batch plateau 2(1 − β)/h = 2/``effective_lr`` is the same for every β
and plain SGD's edge), across batch sizes and the full batch, on the digits fc-tanh MLP with ½-MSE; every
``every`` steps λ_max and the batch sharpness over fresh batches at θₙ (:mod:`.sgd_gap`'s unit). Reported per
(β, b): medians over the last half as h·(·)/2, so the small-batch plateau reads 1 − β and the large-batch one
1 + β; the crossover per β is where h·BS/2 crosses 1 between neighbouring batch sizes (log-linear interpolation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis import plots
from experiments.cli.common import number_key, read_json, save_figure, write_table
from experiments.cli.context import RunContext
from experiments.zoo.datasets import (
    check_data,
    check_digits_widths,
    fc_net,
    fitted_widths,
    half_mse,
    load_split,
)
from flows import Objective

from .sgd_gap import sgd_unit


@dataclass
class Config:
    betas: tuple[float, ...] = (0.0, 0.5, 0.9)
    """Heavy-ball momenta β."""
    batch_sizes: tuple[int, ...] = (16, 64, 256)
    """SGD batch sizes; the full batch (b = N, heavy-ball GD) is run as well."""
    effective_lr: float = 0.4
    """h/(1 − β) for every β: h = (1 − β)·effective_lr."""
    steps: int = 1000
    """Steps per run (the medians are over the last half)."""
    every: int = 50
    """Measure λ_max and the batch sharpness every this many steps."""
    rel_error: float = 0.05
    """Relative standard error at which the batch-sharpness estimate stops drawing batches."""
    n_train: int = 0
    """Training examples (0: the whole digits training split, N = 1500)."""
    widths: tuple[int, ...] = (64, 200, 200, 10)
    """The fc-tanh MLP's layer widths (64 inputs, 10 outputs)."""
    data: str = "digits"
    """Data set: 'digits', or a classification set of experiments.zoo.papers (mnist1d, moons, circles, cohen-5k:PATH,
    cf-1k-4class:PATH, eoss-seeded:PATH); the MLP's first and last widths follow it."""

    def validate(self) -> None:
        check_data(self.data)
        check_digits_widths(self.widths)
        if not self.betas or any(not 0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must lie in [0, 1), got {self.betas}")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ValueError(f"batch_sizes must be positive, got {self.batch_sizes}")
        if not (self.effective_lr > 0 and self.rel_error > 0):
            raise ValueError("effective_lr and rel_error must be > 0")
        if self.steps < 2 or self.every < 1 or self.n_train < 0:
            raise ValueError("steps must be ≥ 2, every ≥ 1, n_train ≥ 0")


def run(config: Config, out: Path, ctx: RunContext) -> None:
    split = load_split(config.data, seed=ctx.seed, n_train=config.n_train or None)
    data = split.train
    n = len(data[0])
    if any(b > n for b in config.batch_sizes):
        raise ValueError(f"batch_sizes must be ≤ N = {n} (the training examples), got {config.batch_sizes}")
    sizes = sorted({b for b in config.batch_sizes} | {n})
    model = fc_net(fitted_widths(config.widths, split), activation="tanh", seed=ctx.seed)
    obj = Objective.from_module(model, half_mse, data, name="digits-fc-tanh")
    assert obj.theta0 is not None  # from_module sets it
    theta0 = obj.theta0.to(ctx.device)
    rows = []
    for beta in config.betas:
        h = (1 - beta) * config.effective_lr
        for b in sizes:
            key = f"beta{number_key(beta)}/b{b}"
            folder = out / f"beta{number_key(beta)}" / f"b{b}"
            rows.append(ctx.unit(key, lambda b=b, beta=beta, h=h, folder=folder, key=key:
                                 sgd_unit(obj, model, data, theta0, b, h, beta, config, folder, ctx, key,
                                          gap_terms=False),
                                 lambda folder=folder: read_json(folder / "row.json")))
    table = [_plateau_row(r) for r in rows]
    print(write_table(out / "sgd_momentum.csv", table))
    crossings = [{"β": beta, "h": (1 - beta) * config.effective_lr,
                  "h·BS/2 crosses 1 at batch size": _crossover([r for r in table if r["β"] == beta])}
                 for beta in config.betas]
    print(write_table(out / "sgd_momentum_crossover.csv", crossings))


def _plateau_row(row: dict) -> dict:
    beta = row["momentum"]
    level = row["h·batch sharpness/2"]
    nearer = "small-batch 1 − β" if abs(level - (1 - beta)) <= abs(level - (1 + beta)) else "large-batch 1 + β"
    return {"β": beta, "batch size": row["batch size"], "h": row["h"], "h·batch sharpness/2": level,
            "predicted small-batch 1 − β": 1 - beta, "predicted large-batch 1 + β": 1 + beta,
            "nearer": nearer, "hλ_max/2": row["hλ_max/2"], "final loss": row["final loss"], "status": row["status"]}


def _crossover(rows: list[dict]) -> float:
    """The batch size where h·BS/2 first crosses 1 going up in b (log-linear between neighbours), NaN if none."""
    rows = sorted(rows, key=lambda r: r["batch size"])
    for lo, hi in zip(rows, rows[1:]):
        a, c = lo["h·batch sharpness/2"] - 1, hi["h·batch sharpness/2"] - 1
        if math.isfinite(a) and math.isfinite(c) and a < 0 <= c:
            t = a / (a - c)
            log_b = math.log(lo["batch size"]) + t * math.log(hi["batch size"] / lo["batch size"])
            return float(f"{math.exp(log_b):.3g}")
    return math.nan


def _rows(out: Path) -> list[dict]:
    return [read_json(p) for p in sorted(out.glob("beta*/b*/row.json"))]


def plot(out: Path, figures: Path) -> list[Path]:
    return plot_seeds([out], figures, stem="sgd_momentum")


def plot_seeds(folders: list[Path], figures: Path, stem: str = "sgd_momentum_seeds") -> list[Path]:
    """h·BS/2 and hλ/2 against b per β with the predicted plateaus 1 ∓ β (mean ± 1 sd over seeds)."""
    per_seed = [_rows(f) for f in folders]
    betas = sorted({r["momentum"] for r in per_seed[0]})
    sizes = sorted({r["batch size"] for r in per_seed[0]})
    with plots.style():
        fig, (ax_bs, ax_lam) = plots.subplots(2, ncols=2, height=3.2)
        for i, beta in enumerate(betas):
            colour = plots.CYCLE[i % len(plots.CYCLE)]

            def table(column: str, beta=beta) -> np.ndarray:
                return np.array([[next((r[column] for r in rows if r["momentum"] == beta and r["batch size"] == b),
                                       math.nan) for b in sizes] for rows in per_seed], dtype=float)

            plots.mean_band(ax_bs, sizes, table("h·batch sharpness/2"), color=colour, marker="o", ms=3,
                            label=f"β = {beta:g}")
            plots.mean_band(ax_lam, sizes, table("hλ_max/2"), color=colour, marker="o", ms=3, label=f"β = {beta:g}")
            for ax in (ax_bs, ax_lam):
                ax.axhline(1 - beta, ls=":", color=colour, lw=0.8)
                ax.axhline(1 + beta, ls="--", color=colour, lw=0.8)
        ax_bs.set_title("h · batch sharpness / 2 (dotted 1 − β, dashed 1 + β)")
        ax_lam.set_title("h · λ_max / 2 (full-batch edge at 1 + β)")
        for ax in (ax_bs, ax_lam):
            ax.set_xscale("log")
            ax.set_xlabel(f"batch size (N = {max(sizes)} is heavy-ball GD)")
            ax.legend(fontsize=7)
        seeds = f", mean ± 1 sd over {len(folders)} seeds" if len(folders) > 1 else ""
        first = per_seed[0][0]
        rate = first["h"] / (1 - first["momentum"])
        fig.suptitle(f"SGD with heavy-ball momentum on digits at h/(1 − β) = {rate:.3g}{seeds}")
        return save_figure(fig, figures, stem)
