"""Benchmark: cost per unit of flow time of GF, IGR and top-k PF on the digits MLP, next to GD; the central flow's
cost per GD step at the edge of stability, part by part.

Each flow is integrated over the same span T = n·h with the same fixed-step
RK4 grid (step h/substeps) from the same point. Cost is reported in seconds
per unit time, in gradient-equivalents (seconds / seconds per gradient, one
process) and as a multiple of GF.

The central flow is timed from the edge-of-stability point after ``central_warmup_steps`` GD steps at h (350 at
h = 0.2 on 1500 digits is the ``digits-eos`` anchor, λ_max ≈ 2/h), over ``central_steps`` GD steps of 4 Euler
substeps, split into the gradient, the warm eigen update (threshold mode), the k(k+1)/2 third-derivative pair vectors
and the SDCP; the issue's budget is 4 × (1 gradient + warm eigen update + k(k+1)/2 pair products) per GD step with
≤ 2k + 10 HVPs per eigen update and the SDCP under 5% of the step.
"""
from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from experiments.benchmarks.harness import command_line
from experiments.cli.common import print_benchmark, write_benchmark
from experiments.cli.context import RunContext
from experiments.cli.threads import pinned_threads
from experiments.zoo.datasets import check_digits_widths, digits_objective
from flows import EigenTracker, central_flow, gradient_descent, integrate


@dataclass
class Config:
    lr: float = 0.2
    """GD's learning rate h."""
    warmup_steps: int = 100
    """GD steps before the flows are timed (their common start)."""
    span_steps: int = 10
    """Flow time covered, in GD steps (T = span_steps·h)."""
    substeps: int = 4
    """RK4 steps per GD step."""
    ks: tuple[int, ...] = (1, 10)
    """Eigenpairs of the top-k principal flows timed."""

    widths: tuple[int, ...] = (64, 200, 200, 10)
    """The fc-tanh MLP's layer widths (64 inputs, 10 outputs)."""
    threads: int = 0
    """Torch and BLAS threads, pinned for the measurement (0: torch's current count)"""
    n_train: int = 1500
    """Training examples (digits)."""
    central_warmup_steps: int = 350
    """GD steps at lr before the central flow is timed (350: the digits-eos point)"""
    central_steps: int = 10
    """GD steps of central flow timed (0: no central-flow table)"""

    def validate(self) -> None:
        check_digits_widths(self.widths)
        if self.central_warmup_steps < 0 or self.central_steps < 0:
            raise ValueError("central_warmup_steps and central_steps must be ≥ 0")
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
        traj = integrate(obj, theta, h, flow=flow, steps=config.span_steps, method="rk4", step_size=step,
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


def measure_central(config: Config, device: torch.device, check: Callable[[], None] = lambda: None
                    ) -> tuple[list[dict], float]:
    """The central flow's cost per GD step from the edge-of-stability point, part by part, and the seconds per
    gradient there."""
    obj, _, _ = digits_objective(widths=config.widths, n_train=config.n_train)
    theta = obj.theta0.to(device)
    for _ in range(config.central_warmup_steps):
        theta = theta - config.lr * obj.grad(theta)
    check()
    t_grad = statistics.median(_timed(lambda: obj.grad(theta)) for _ in range(20))
    theta_pair = theta.clone()
    u = torch.linalg.qr(torch.randn(obj.dim, 2, dtype=theta.dtype, device=device))[0]
    t_pair = statistics.median(_timed(lambda: obj.third_derivatives(theta_pair, u)) for _ in range(5)) / 3
    clock = time.perf_counter()
    cf = central_flow(obj, theta, config.lr, config.central_steps, substeps=4, progress=False)
    total = time.perf_counter() - clock
    check()
    clock = time.perf_counter()
    per_step_cf = central_flow(obj, theta, config.lr, config.central_steps, substeps=4, eig_refresh=config.lr,
                               progress=False)
    per_step_total = time.perf_counter() - clock
    check()
    steps = max(len(cf) - 1, 1)
    updates = max(cf.config["evaluations"], 1)
    k_mean = float(cf.metric("k").mean()) if len(cf) else 0.0
    parts = {name: cf.config["central_seconds"].get(key, 0.0) / steps for name, key in (
        ("gradient", "gradient"), ("warm eigen update", "eigen"), ("third-derivative pairs", "third"),
        ("SDCP (terms + solve)", "sdcp"))}
    per_step = total / steps
    budget = 4 * (t_grad + parts["warm eigen update"] / 4 + cf.config["third_products"] / updates * t_pair)
    rows = [{"part": name, "s per GD step": round(sec, 4), "share": f"{sec / per_step:.1%}",
             "gradient-equivalents": round(sec / t_grad, 1)} for name, sec in parts.items()]
    other = per_step - sum(parts.values())
    rows.append({"part": "other (Euler update, bookkeeping)", "s per GD step": round(other, 4),
                 "share": f"{other / per_step:.1%}", "gradient-equivalents": round(other / t_grad, 1)})
    rows.append({"part": "total", "s per GD step": round(per_step, 4), "share": "100%",
                 "gradient-equivalents": round(per_step / t_grad, 1)})
    rows.append({"part": "budget 4 × (gradient + warm eigen update + pairs × one pair)", "s per GD step":
                 round(budget, 4), "share": f"{per_step / budget:.2f}× used", "gradient-equivalents":
                 round(budget / t_grad, 1)})
    rows.append({"part": f"HVPs per eigen update (tracked k = {k_mean:.2f}; budget 2k + 10 = {2 * k_mean + 10:.1f})",
                 "s per GD step": round(cf.config["eigen_matvecs"] / updates, 1), "share": "",
                 "gradient-equivalents": ""})
    rows.append({"part": f"pair vectors per substep (critical directions ≤ {int(cf.metric('critical').max())})",
                 "s per GD step": round(cf.config["third_products"] / updates, 2), "share": "",
                 "gradient-equivalents": ""})
    per_step_seconds = per_step_total / max(len(per_step_cf) - 1, 1)
    per_step_hvps, every_hvps = per_step_cf.config["eigen_matvecs"] / steps, cf.config["eigen_matvecs"] / steps
    rows.append({"part": f"total with eig_refresh = h (a solve per GD step; {per_step_hvps:.1f} "
                         f"eigen HVPs per step against {every_hvps:.1f})",
                 "s per GD step": round(per_step_seconds, 4), "share": f"{per_step_seconds / per_step:.0%} of total",
                 "gradient-equivalents": round(per_step_seconds / t_grad, 1)})
    return rows, t_grad


def _timed(fn: Callable[[], Any]) -> float:
    clock = time.perf_counter()
    fn()
    return time.perf_counter() - clock


def run(config: Config, out: Path, ctx: RunContext) -> None:
    with pinned_threads(config.threads) as threads:
        rows, t_grad = measure(config, ctx.device, ctx.check)
        central = measure_central(config, ctx.device, ctx.check) if config.central_steps else None
    header = (f"digits fc-tanh {'-'.join(map(str, config.widths))} MLP, {config.n_train} examples, "
              f"from GD step {config.warmup_steps} at h = {config.lr:g}, "
              f"span {config.span_steps} h, RK4 step h/{config.substeps}; one gradient = {t_grad * 1e3:.1f} ms; "
              f"{ctx.device}, torch {torch.__version__}, {threads}")
    write_benchmark(out, "bench_flows", header, rows)
    if central is not None:
        rows_c, t_grad_c = central
        header = (f"central flow on the digits fc-tanh {'-'.join(map(str, config.widths))} MLP, {config.n_train} "
                  f"examples, from GD step {config.central_warmup_steps} at h = {config.lr:g}, "
                  f"{config.central_steps} GD steps of 4 Euler substeps; one gradient = {t_grad_c * 1e3:.1f} ms, "
                  f"one pair vector timed as a third of a 2-vector call; {ctx.device}, torch {torch.__version__}, "
                  f"{threads}")
        write_benchmark(out, "bench_flows_central", header, rows_c)


def plot(out: Path, figures: Path) -> list[Path]:
    """Benchmarks draw no figure: print the saved tables."""
    paths = print_benchmark(out, "bench_flows")
    if (out / "bench_flows_central.md").exists():
        paths += print_benchmark(out, "bench_flows_central")
    return paths


if __name__ == "__main__":
    sys.exit(command_line("bench-flows"))
