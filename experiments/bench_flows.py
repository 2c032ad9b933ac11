"""Benchmark: cost per unit of flow time of GF, IGR and top-k PF on the digits MLP, next to GD.

Each flow is integrated over the same span T = n·h with the same fixed-step
RK4 grid (step h/substeps) from the same point. Cost is reported in seconds
per unit time, in gradient-equivalents (seconds / seconds per gradient, one
process) and as a multiple of GF.
"""
from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from pathlib import Path

import torch

from flows import EigenTracker, gradient_descent, integrate

from .threads import pinned_threads
from .common import print_benchmark, write_benchmark
from .datasets import check_digits_widths, digits_objective

DESCRIPTION = "cost per unit flow time: GF, IGR, PF top-k (k=1, 10) vs GD on the digits MLP"


@dataclass
class Config:
    lr: float = 0.2
    warmup_steps: int = 100
    span_steps: int = 10
    substeps: int = 4
    ks: tuple[int, ...] = (1, 10)

    widths: tuple[int, ...] = (64, 200, 200, 10)
    threads: int = 0  # torch and BLAS threads, pinned for the measurement (0: torch's current count)
    n_train: int = 1500

    def validate(self) -> None:
        check_digits_widths(self.widths)
        if self.threads < 0:
            raise ValueError(f"threads must be ≥ 0, got {self.threads}")
        if self.span_steps < 1 or self.substeps < 1:
            raise ValueError("span_steps and substeps must be ≥ 1")


def measure(config: Config, device: torch.device, check: Callable[[], None] = lambda: None
            ) -> tuple[list[dict], float]:
    """The table's rows and the seconds per gradient; ``check()`` runs after every timed call (it raises to stop:
    GD and the flows return on Ctrl-C with status "interrupted", and a row must never time a cut-short run)."""
    obj, _, _ = digits_objective(widths=config.widths, n_train=config.n_train)
    theta = obj.theta0.to(device)
    for _ in range(config.warmup_steps):
        theta = theta - config.lr * obj.grad(theta)
    grad_times = []
    for _ in range(20):
        t0 = time.perf_counter()
        obj.grad(theta)
        grad_times.append(time.perf_counter() - t0)
    t_grad = statistics.median(grad_times)
    h, span = config.lr, config.lr * config.span_steps
    step = h / config.substeps
    rows: list[dict[str, Any]] = []

    def add(name: str, seconds: float, evals: int, hvps: int | str) -> None:
        per_unit = seconds / span
        rows.append({"method": name, "s per unit time": round(per_unit, 3),
                     "gradient-equivalents per unit time": round(per_unit / t_grad, 1),
                     "field evaluations": evals, "eigen HVPs": hvps})

    t0 = time.perf_counter()
    gradient_descent(obj, theta, h, config.span_steps, states="none")
    check()
    add(f"GD (h = {h:g})", time.perf_counter() - t0, config.span_steps + 1, 0)
    variants: list[tuple[str, dict[str, float], str]] = [("gf", {}, "GF"), ("igr", {}, "IGR")]
    for k in config.ks:
        variants.append(("pf_topk", {"k": k, "eig_refresh": 0.0}, f"PF top-{k}, eigenpairs every evaluation"))
    if config.ks:
        k = max(config.ks)
        variants.append(("pf_topk", {"k": k, "eig_refresh": h}, f"PF top-{k}, eigenpairs once per h"))
    for flow, extra, name in variants:
        tracker = EigenTracker(k=int(extra["k"]), tol=1e-3) if flow == "pf_topk" else None
        if tracker is not None:
            tracker.update(obj, theta)  # the warm start is not charged to the flow
            warm = tracker.total_matvecs
        t0 = time.perf_counter()
        traj = integrate(obj, theta, flow, h, steps=config.span_steps, method="rk4", step_size=step,
                         states="none", tracker=tracker, eig_refresh=extra.get("eig_refresh", 0.0),
                         k=int(extra.get("k", 10)))
        seconds = time.perf_counter() - t0
        check()
        hvps = tracker.total_matvecs - warm if tracker is not None else (
            traj.config["field_evaluations"] if flow == "igr" else 0)
        add(name, seconds, traj.config["field_evaluations"], hvps)
    gf_cost = next(r for r in rows if r["method"] == "GF")["s per unit time"]
    for r in rows:
        r["x GF"] = round(r["s per unit time"] / gf_cost, 2)
    return rows, t_grad


def run(config: Config, out: Path, ctx) -> None:
    with pinned_threads(config.threads) as threads:
        rows, t_grad = measure(config, ctx.device, ctx.check)
    header = (f"digits fc-tanh {'-'.join(map(str, config.widths))} MLP, {config.n_train} examples, "
              f"from GD step {config.warmup_steps} at h = {config.lr:g}, "
              f"span {config.span_steps} h, RK4 step h/{config.substeps}; one gradient = {t_grad * 1e3:.1f} ms; "
              f"{ctx.device}, torch {torch.__version__}, {threads}")
    write_benchmark(out, "bench_flows", header, rows)


def plot(out: Path, figures: Path) -> list[Path]:
    """Benchmarks draw no figure: print the saved table."""
    return print_benchmark(out, "bench_flows")


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(["run", "bench-flows", *sys.argv[1:]]))
