"""CLR against its relatives: Polyak-type rates, adaptive rates and a constant-rate sweep, full batch and mini-batch.

The corridor learning rate (arXiv 2402.08818) is Polyak's step with E* = 0. Beside it (uncapped and capped):
SPS_max (Loizou et al. 2021, c = ½, cap γ_b), ALI-G (Berrada et al. 2020, δ = 1e-5, cap η), WNGrad, PAL, Alice,
and constant rates (``rates``; the best of the sweep, by final train loss, is reported as its own row). Two
problems (``problems``): the digits fc-tanh MLP with ½-MSE (non-convex), and logistic regression on scikit-learn's
breast-cancer data (convex; its training split is linearly separable, so inf E = E* = 0 exactly and the Polyak step
with E* = 0 is the exact Polyak step). Each runs full batch for ``steps`` steps and mini-batch (``batch_size``) for
``epochs`` epochs. Reported per run: final and best train loss, E − E* (breast cancer, E* by L-BFGS), test
accuracy, median rate and the fraction of measured steps beyond the edge of stability (hλ_max/2 > 1). Run it over
seeds (``--seeds 0,1,2``) for mean ± sd.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.ticker import NullFormatter

from analysis import plots
from experiments.cli.common import read_json, save_figure, write_json, write_table
from experiments.cli.context import RunContext
from experiments.zoo.training import Schedule, breast_cancer_problem, controller, digits_problem, fullbatch, minibatch

PROBLEMS = ("digits", "breast-cancer")


@dataclass
class Config(Schedule):
    problems: tuple[str, ...] = PROBLEMS
    """Problems: 'digits' (the fc-tanh MLP) and 'breast-cancer' (logistic regression, E* known)."""
    methods: tuple[str, ...] = ("clr", "clr:5", "sps:5", "alig:5", "wngrad:1", "pal", "alice:0.01")
    """Methods, as 'kind[:number]' specs (``experiments.zoo.training``)."""
    digits_rates: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.4)
    """Constant learning rates of the sweep on digits."""
    cancer_rates: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0)
    """Constant learning rates of the sweep on breast cancer."""
    steps: int = 300
    """Full-batch steps per method."""

    def validate(self) -> None:
        super().validate()
        unknown = sorted(set(self.problems) - set(PROBLEMS))
        if unknown or not self.problems:
            raise ValueError(f"problems must be among {PROBLEMS}, got {self.problems}")
        for spec in self.methods:
            controller(spec, digits_problem(0, n_train=8, widths=(64, 2, 10)))  # a bad spec fails here, early
        if any(not h > 0 for h in self.digits_rates + self.cancer_rates) or not self.digits_rates or \
                not self.cancer_rates:
            raise ValueError("digits_rates and cancer_rates must be non-empty and positive")


def _problem(name: str, config: Config, seed: int):
    if name == "digits":
        return digits_problem(seed, config.n_train, config.widths, config.data)
    return breast_cancer_problem(seed)


def specs(name: str, config: Config) -> list[str]:
    rates = config.digits_rates if name == "digits" else config.cancer_rates
    return [f"constant:{h:g}" for h in rates] + list(config.methods)


def run(config: Config, out: Path, ctx: RunContext) -> None:
    rows = []
    for name in config.problems:
        for mode in ("full batch", f"mini-batch {config.batch_size}"):
            mode_rows = []
            for spec in specs(name, config):
                key = f"{name}/{'full' if mode == 'full batch' else 'mini'}/{spec.replace(':', '_')}"
                path = out / f"{key}.json"
                mode_rows.append(ctx.unit(key, lambda spec=spec, name=name, mode=mode, path=path:
                                          _one(name, mode, spec, config, path, ctx),
                                          lambda path=path: read_json(path)))
            rows += _with_best_constant(mode_rows, len(specs(name, config)) - len(config.methods))
    write_json(out / "polyak_summary.json", rows)
    print(write_table(out / "polyak_summary.csv", rows))


def _one(name: str, mode: str, spec: str, config: Config, path: Path, ctx) -> dict:
    problem = _problem(name, config, ctx.seed)
    if mode == "full batch":
        row, _ = fullbatch(problem, spec, config.steps, config.sharpness_every, config.sharpness_every, ctx)
    else:
        row = minibatch(problem, spec, config.epochs, config.batch_size, config.sharpness_every, ctx,
                        ctx.unit_seed(str(path)))["row"]
    row = {"setting": mode, **row}
    write_json(path, row)
    return row


def _with_best_constant(rows: list[dict], constants: int) -> list[dict]:
    """The rows, with the constant rate of lowest final train loss (finite) repeated as "best constant"."""
    finite = [r for r in rows[:constants] if math.isfinite(r["final train loss"]) and r["status"] == "complete"]
    if not finite:
        return rows
    best = dict(min(finite, key=lambda r: r["final train loss"]))
    best["method"] = f"best constant ({best['method']})"
    return rows[:constants] + [best] + rows[constants:]


def _panel(ax, runs: list[list[dict]], problem: str, setting: str, key: str) -> None:
    """Bars of ``key`` per method (mean ± sd over the runs) for one problem and setting."""
    chosen = [[r for r in rows if r["problem"] == problem and r["setting"] == setting] for rows in runs]
    labels = [r["method"] for r in chosen[0]]
    values = np.array([[r[key] for r in rows] for rows in chosen], dtype=float)
    values[values <= 0] = np.nan
    mean = np.exp(np.nanmean(np.log(values), axis=0))  # geometric: losses span decades
    low = np.exp(np.nanmin(np.log(values), axis=0))
    high = np.exp(np.nanmax(np.log(values), axis=0))
    y = np.arange(len(labels))
    colours = [plots.OKABE_ITO["sky"] if lab.startswith(("GD", "SGD")) else plots.OKABE_ITO["blue"]
               if "constant" in lab else plots.OKABE_ITO["vermillion"] for lab in labels]
    ax.barh(y, mean, color=colours, xerr=[mean - low, high - mean], capsize=2)
    ax.set_yticks(y, labels, fontsize=6)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a log axis overlap
    ax.invert_yaxis()
    ax.set(title=f"{problem}, {setting}", xlabel=key + (" (geometric mean, min–max)" if len(runs) > 1 else ""))


def _draw(runs: list[list[dict]], figures: Path) -> list[Path]:
    panels = [(p, s) for p in dict.fromkeys(r["problem"] for r in runs[0])
              for s in dict.fromkeys(r["setting"] for r in runs[0])]
    with plots.style():
        fig, axes = plots.subplots(len(panels), ncols=2, width=4.6, height=3.6)
        for ax, (problem, setting) in zip(axes, panels):
            key = "E − E*" if problem == "breast-cancer" else "final train loss"
            _panel(ax, runs, problem, setting, key)
        fig.suptitle(f"CLR and its relatives{f' over {len(runs)} seeds' if len(runs) > 1 else ''}: "
                     "final train loss (digits) and suboptimality E − E* (breast cancer)")
        return save_figure(fig, figures, "polyak_family")


def plot(out: Path, figures: Path) -> list[Path]:
    return _draw([read_json(out / "polyak_summary.json")], figures)


def plot_seeds(folders: list[Path], figures: Path) -> list[Path]:
    return _draw([read_json(f / "polyak_summary.json") for f in folders], figures)
