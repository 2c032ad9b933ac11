"""Benchmark: the central flow next to GD for the same steps, part by part, before and after #34's eigen settings.

Each round runs, interleaved and in one process: GD, then the central flow in every variant of ``variants``

- ``before``: the settings before #34: every eigen solve certified by verification rounds
  (``verify_steps=0``), every tracked pair solved to ``eig_tol`` = 1e-3 (``subcritical="tight"``) and blocks of
  products as one batched backward (``Objective(batching="vmap")``, the only way then);
- ``now``: today's defaults (certified once per GD step, sub-critical pairs bounded, ``eig_tol`` = 1e-3);
- ``now-1e-4``: today's defaults at ``eig_tol`` = 1e-4 (the critical pairs solved ten times tighter);
- ``now-vmap``: today's defaults with blocks of products as one batched backward (``batching="vmap"``), to
  separate what the loop of single products (``batching="auto"`` on the CPU) gives;
- ``now-compiled``: today's defaults on ``Objective(hvp_method="compiled")`` (compiled HVPs and pair vectors; the
  first run's time includes compiling);
- ``reference``: ``before`` at ``eig_tol`` = 1e-7, the yardstick for all;

and reports the median wall time over rounds, × GD, the seconds per part (gradient, eigen tracking, third-derivative
pair vectors, SDCP), the eigen HVPs and pair vectors per GD step and, for every variant, the largest relative
difference of the predicted loss and of hλ₁ and the largest difference in the critical count against ``before``
and against ``reference``. The floor row is what one GD step must cost at least with the critical count k of the
``now`` run: 4 substeps × (one gradient + k HVPs for a Rayleigh–Ritz update + k(k+1)/2 pair vectors), each part
timed at θ₀ in this process.

Models: ``digits``, the fc-tanh MSE MLP of ``eos-digits`` (D = 55,210, float32); ``mnist1d``, a 40-32-32-10 tanh
MLP with cross-entropy on MNIST-1D (D = 2,698, float64; no experiment trains it).
"""
from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from experiments.benchmarks.harness import command_line
from experiments.cli.common import print_benchmark, write_benchmark
from experiments.cli.context import RunContext
from experiments.cli.threads import pinned_threads
from experiments.zoo.datasets import digits_objective, fc_tanh, half_mse, load_split
from flows import Objective, Trajectory, central_flow, gradient_descent, sharpness
from flows.objective.objective import Batching

MODELS = ("digits", "mnist1d")
VARIANTS: dict[str, dict[str, Any]] = {
    "before": {"verify_steps": 0, "subcritical": "tight", "eig_tol": 1e-3, "batching": "vmap"},
    "now": {},
    "now-1e-4": {"eig_tol": 1e-4},
    "reference": {"verify_steps": 0, "subcritical": "tight", "eig_tol": 1e-7, "batching": "vmap"},
    "now-vmap": {"batching": "vmap"},
    "now-compiled": {"hvp_method": "compiled"},  # the defaults on Objective(hvp_method="compiled")
}


@dataclass
class Config:
    model: str = "digits"
    """'digits' (the fc-tanh MSE MLP, float32) or 'mnist1d' (a 40-32-32-10 tanh MLP, cross-entropy, float64)."""
    rate: float = 1.6
    """GD's rate as hλ_max(θ₀): h = rate/λ_max(θ₀)."""
    steps: int = 60
    """GD steps, for GD and for every central-flow run."""
    rounds: int = 1
    """Interleaved rounds (the median is reported)."""
    variants: tuple[str, ...] = ("before", "now")
    """Central-flow settings timed: before, now, now-1e-4, now-vmap, reference, now-compiled (module docstring)."""
    threads: int = 1
    """Torch and BLAS threads, pinned for the measurement (0: torch's current count)"""

    def validate(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown or not self.variants:
            raise ValueError(f"variants must be a non-empty subset of {tuple(VARIANTS)}, got {self.variants!r}")
        if not (self.rate > 0 and self.steps >= 1 and self.rounds >= 1 and self.threads >= 0):
            raise ValueError("rate must be > 0, steps and rounds ≥ 1, threads ≥ 0")


def objective(model: str, hvp_method: str = "double_backward", batching: Batching = "auto") -> Objective:
    """The benchmark's objective by name (:data:`MODELS`)."""
    if model == "digits":
        obj, split, _ = digits_objective(seed=0)
        if hvp_method == "double_backward" and batching == "auto":
            return obj
        assert obj.model is not None  # built from a module
        return Objective.from_module(obj.model, half_mse, split.train, hvp_method=hvp_method, name=obj.name,
                                     batching=batching)
    split = load_split("mnist1d", dtype=torch.float64)
    net = fc_tanh((40, 32, 32, 10), seed=0, dtype=torch.float64)
    return Objective.from_module(net, nn.functional.cross_entropy, (split.x_train, split.labels_train),
                                 name="mnist1d-fc-tanh-ce", hvp_method=hvp_method, batching=batching)


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    clock = time.perf_counter()
    out = fn()
    return time.perf_counter() - clock, out


def _differences(run: Trajectory, base: Trajectory, lr: float) -> tuple[float, float, float]:
    """(max relative difference of the predicted loss, of hλ₁, max |difference| of the critical count)."""
    n = min(len(run), len(base))

    def rel(name: str) -> float:
        a, b = run.metric(name)[:n], base.metric(name)[:n]
        return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))

    return rel("predicted_loss"), rel("sharpness"), float(np.max(np.abs(run.metric("critical")[:n]
                                                                       - base.metric("critical")[:n])))


def unit_costs(obj: Objective, theta: torch.Tensor, rounds: int = 5) -> dict[str, float]:
    """Median seconds of one gradient, one HVP (retained graph) and one pair vector (a third of a 2-vector call)."""
    op = obj.hessian_operator(theta)
    v = torch.randn(obj.dim, dtype=theta.dtype, generator=torch.Generator().manual_seed(0)).to(theta.device)
    u = torch.linalg.qr(torch.randn(obj.dim, 2, dtype=theta.dtype, generator=torch.Generator().manual_seed(1)))[0]
    u = u.to(theta.device)
    grad = statistics.median(_timed(lambda: obj.grad(theta))[0] for _ in range(rounds))
    hvp = statistics.median(_timed(lambda: op @ v)[0] for _ in range(rounds))
    op.release()
    pair = statistics.median(_timed(lambda: obj.third_derivatives(theta, u))[0] for _ in range(rounds)) / 3
    return {"gradient": grad, "hvp": hvp, "pair": pair}


def measure(config: Config, device: torch.device | str = "cpu", check: Callable[[], None] = lambda: None
            ) -> tuple[list[dict], str]:
    """The table's rows and a line on the model and the units."""
    obj = objective(config.model)
    assert obj.theta0 is not None  # both models are built from modules
    theta0 = obj.theta0.to(device)
    lam0 = sharpness(obj, theta0, tol=1e-6)
    lr = config.rate / lam0
    seconds: dict[str, list[float]] = {name: [] for name in ("gd", *config.variants)}
    runs: dict[str, Trajectory] = {}
    objectives = {("double_backward", "auto"): obj}
    for _ in range(config.rounds):
        seconds["gd"].append(_timed(lambda: gradient_descent(obj, theta0, lr, config.steps, states="none",
                                                             progress=False))[0])
        check()
        for name in config.variants:
            options = dict(VARIANTS[name])
            method = (options.pop("hvp_method", "double_backward"), options.pop("batching", "auto"))
            if method not in objectives:
                objectives[method] = objective(config.model, *method)
            elapsed, runs[name] = _timed(lambda: central_flow(objectives[method], theta0, lr,  # noqa: B023
                                                              config.steps, progress="log",
                                                              **options))  # noqa: B023 (called at once)
            check()
            seconds[name].append(elapsed)
    gd = statistics.median(seconds["gd"])
    units = unit_costs(obj, theta0)
    rows = [{"run": "GD", "seconds": round(gd, 3), "x GD": 1.0}]
    for name in config.variants:
        rows.append(_row(name, statistics.median(seconds[name]), gd, runs, config.steps, lr))
    k = float(runs["now"].metric("critical").mean()) if "now" in runs else 1.0
    floor = config.steps * 4 * (units["gradient"] + k * units["hvp"] + k * (k + 1) / 2 * units["pair"])
    rows.append({"run": f"floor: 4 × (gradient + {k:.2f} HVPs + {k * (k + 1) / 2:.2f} pair vectors) per step",
                 "seconds": round(floor, 3), "x GD": round(floor / gd, 1)})
    columns = list(dict.fromkeys(key for row in rows for key in row))
    rows = [{key: row.get(key, "") for key in columns} for row in rows]  # one header for every row
    line = (f"{obj.name}, D = {obj.dim}, {theta0.dtype}, h = {config.rate:g}/λ₀ = {lr:.4g}, {config.steps} GD steps, "
            f"{config.rounds} interleaved round(s), medians, {theta0.device}; one gradient "
            f"{units['gradient'] * 1e3:.1f} ms, one HVP {units['hvp'] * 1e3:.1f} ms, "
            f"one pair vector {units['pair'] * 1e3:.1f} ms (at θ₀)")
    return rows, line


def _row(name: str, total: float, gd: float, runs: dict[str, Trajectory], steps: int, lr: float) -> dict[str, Any]:
    run = runs[name]
    parts = run.config["central_seconds"]
    row: dict[str, Any] = {"run": f"central flow, {name}", "seconds": round(total, 2), "x GD": round(total / gd, 1)}
    row.update({f"{part} s": round(parts[part], 2) for part in ("eigen", "third", "gradient", "sdcp")})
    row["eigen HVPs per step"] = round(run.config["eigen_matvecs"] / steps, 1)
    row["pair vectors"] = run.config["third_products"]
    row["max critical"] = int(run.metric("critical").max())
    for base in ("before", "reference", "now"):
        if base in runs and base != name:
            loss, lam, crit = _differences(run, runs[base], lr)
            row[f"vs {base}: predicted loss"] = f"{loss:.1e}"
            row[f"vs {base}: hλ₁"] = f"{lam:.1e}"
            row[f"vs {base}: critical"] = int(crit)
    return row


def run(config: Config, out: Path, ctx: RunContext) -> None:
    with pinned_threads(config.threads) as threads:
        rows, line = measure(config, ctx.device, ctx.check)
    write_benchmark(out, f"bench_central_{config.model}", f"{line}; torch {torch.__version__}, {threads}", rows)


def plot(out: Path, figures: Path) -> list[Path]:
    """Benchmarks draw no figure: print the saved tables."""
    paths: list[Path] = []
    for model in MODELS:
        if (out / f"bench_central_{model}.md").exists():
            paths += print_benchmark(out, f"bench_central_{model}")
    return paths


if __name__ == "__main__":
    sys.exit(command_line("bench-central"))
