"""Benchmark: top-10 Hessian eigenpairs of the digits fc-tanh MLP at an edge-of-stability point.

Side by side in one process, on the same objective and point: driftlab's
Lanczos engine (cold), the engine warm-started along 50 GD steps
(EigenTracker), scipy's eigsh on a LinearOperator (with fresh HVPs per
product, as the edge-of-stability reference code does, and with driftlab's
retained-graph operator), and deflated power iteration as PyHessian does it
(written here from its published algorithm). Every residual in the table is
recomputed independently with fresh HVPs.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from experiments.benchmarks.harness import command_line, residuals
from experiments.cli.common import print_benchmark, write_benchmark
from experiments.cli.context import RunContext
from experiments.cli.threads import pinned_threads
from experiments.zoo.datasets import check_digits_widths, digits_objective
from flows import EigenTracker, Objective, top_eigenpairs


@dataclass
class Config:
    k: int = 10
    """Eigenpairs requested."""
    tol: float = 1e-3
    """Relative residual tolerance."""
    lr: float = 0.2
    """GD's learning rate of the run to the EoS point."""
    warmup_steps: int = 350
    """GD steps to the edge-of-stability point."""
    track_steps: int = 50
    """GD steps of the warm-started tracking comparison."""
    power_tol: float = 1e-3
    """Relative tolerance of deflated power iteration."""
    power_max_iter: int = 100
    """Most iterations per eigenpair of power iteration."""

    widths: tuple[int, ...] = (64, 200, 200, 10)
    """The fc-tanh MLP's layer widths (64 inputs, 10 outputs)."""
    threads: int = 0
    """Torch and BLAS threads, pinned for the measurement (0: torch's current count)"""
    n_train: int = 1500
    """Training examples (digits)."""

    def validate(self) -> None:
        check_digits_widths(self.widths)
        if self.threads < 0:
            raise ValueError(f"threads must be ≥ 0, got {self.threads}")
        if self.k < 1 or self.track_steps < 1 or self.warmup_steps < 0:
            raise ValueError("k and track_steps must be ≥ 1, warmup_steps ≥ 0")


class CountingHVP:
    """Fresh HVP per product, counted (the edge-of-stability reference code's way)."""

    def __init__(self, obj: Objective, theta: torch.Tensor) -> None:
        self.obj = obj
        self.theta = theta
        self.count = 0

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        self.count += 1 if v.ndim == 1 else v.shape[0]
        return self.obj.hvp(self.theta, v)


def scipy_eigsh(obj: Objective, theta: torch.Tensor, k: int, tol: float, retained: bool):
    from scipy.sparse.linalg import LinearOperator, eigsh

    if retained:
        op = obj.hessian_operator(theta)
        lin, count = op.to_scipy(), lambda: op.matvecs
    else:
        hvp = CountingHVP(obj, theta)

        def mv(x):
            t = torch.as_tensor(np.asarray(x).reshape(-1), device=theta.device).to(theta.dtype)
            return hvp(t).cpu().numpy()

        lin, count = LinearOperator((obj.dim, obj.dim), matvec=mv, dtype=np.float32), lambda: hvp.count
    vals, vecs = eigsh(lin, k=k, which="LA", tol=tol)
    order = np.argsort(vals)[::-1]
    return (torch.as_tensor(vals[order].copy(), dtype=theta.dtype, device=theta.device),
            torch.as_tensor(vecs[:, order].copy(), dtype=theta.dtype, device=theta.device), count())


def power_iteration(obj: Objective, theta: torch.Tensor, k: int, tol: float, max_iter: int, seed: int = 0):
    """PyHessian's deflated power iteration: for each i, iterate v ← Hv orthogonalized against
    the found vectors until the Rayleigh quotient changes by < tol relatively (or max_iter)."""
    hvp = CountingHVP(obj, theta)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    values: list[float] = []
    vectors: list[torch.Tensor] = []
    for _ in range(k):
        v = torch.randn(obj.dim, generator=gen, dtype=theta.dtype).to(theta.device)
        v = v / torch.linalg.vector_norm(v)
        lam = None
        for _ in range(max_iter):
            for u in vectors:
                v = v - (u @ v) * u
            v = v / torch.linalg.vector_norm(v)
            hv = hvp(v)
            new = float(v @ hv)
            v = hv / torch.linalg.vector_norm(hv)
            if lam is not None and abs(new - lam) / (abs(lam) + 1e-6) < tol:
                lam = new
                break
            lam = new
        values.append(math.nan if lam is None else lam)
        vectors.append(v)
    vecs = torch.stack(vectors, dim=1)
    vals = torch.tensor(values, dtype=theta.dtype, device=theta.device)
    order = torch.argsort(vals, descending=True)
    return vals[order], vecs[:, order], hvp.count


def measure(config: Config, device: torch.device) -> tuple[list[dict], dict]:
    obj, _, _ = digits_objective(widths=config.widths, n_train=config.n_train)
    theta = obj.theta0.to(device)
    for _ in range(config.warmup_steps):
        theta = theta - config.lr * obj.grad(theta)
    rows = []

    def row(name, seconds, hvps, vals, vecs, note=""):
        res = residuals(obj, theta, vals, vecs)
        rows.append({"method": name, "seconds": round(seconds, 3), "HVPs": hvps,
                     "worst relative residual": float(f"{res.max():.2g}"),
                     "lambda_1": round(float(vals[0]), 4), "lambda_k": round(float(vals[-1]), 4), "note": note})

    top_eigenpairs(obj, theta, 2, tol=1e-1)  # warm up kernels
    t0 = time.perf_counter()
    cold = top_eigenpairs(obj, theta, config.k, tol=config.tol)
    row("driftlab Lanczos, cold", time.perf_counter() - t0, cold.matvecs, cold.values, cold.vectors,
        "converged" if cold.converged else "NOT converged")

    for retained, label in ((False, "scipy eigsh, fresh HVPs (EoS reference code's way)"),
                            (True, "scipy eigsh on driftlab's retained-graph operator")):
        t0 = time.perf_counter()
        vals, vecs, count = scipy_eigsh(obj, theta, config.k, config.tol, retained)
        row(label, time.perf_counter() - t0, count, vals, vecs)

    t0 = time.perf_counter()
    vals, vecs, count = power_iteration(obj, theta, config.k, config.power_tol, config.power_max_iter)
    row(f"deflated power iteration (PyHessian's algorithm, tol {config.power_tol:g})",
        time.perf_counter() - t0, count, vals, vecs)

    tracker = EigenTracker(k=config.k, tol=config.tol)
    tracker.update(obj, theta)
    path = theta
    costs = []
    secs = []
    worst = 0.0
    unconverged = 0
    for _ in range(config.track_steps):
        path = path - config.lr * obj.grad(path)
        t0 = time.perf_counter()
        pairs = tracker.update(obj, path)
        secs.append(time.perf_counter() - t0)
        costs.append(pairs.matvecs)
        unconverged += not pairs.converged
        worst = max(worst, float(residuals(obj, path, pairs.values, pairs.vectors).max()))
    rows.append({"method": f"driftlab EigenTracker, warm, mean over {config.track_steps} GD steps",
                 "seconds": round(float(np.mean(secs)), 3), "HVPs": round(float(np.mean(costs)), 1),
                 "worst relative residual": float(f"{worst:.2g}"), "lambda_1": round(float(pairs.values[0]), 4),
                 "lambda_k": round(float(pairs.values[-1]), 4),
                 "note": f"min {min(costs)}, max {max(costs)} HVPs; {unconverged} unconverged"})
    info = {"lambda_max": float(cold.values[0]), "two_over_h": 2 / config.lr, "dim": obj.dim,
            "track_hvps": costs}
    return rows, info


def run(config: Config, out: Path, ctx: RunContext) -> None:
    with pinned_threads(config.threads) as threads:
        rows, info = measure(config, ctx.device)
    header = (f"top-{config.k} eigenpairs, digits fc-tanh {'-'.join(map(str, config.widths))} "
              f"({info['dim']} parameters, "
              f"{config.n_train} examples), "
              f"after {config.warmup_steps} GD steps at h={config.lr:g} (λ_max = {info['lambda_max']:.3f}, "
              f"2/h = {info['two_over_h']:g}), tol {config.tol:g} (‖Hu−λu‖ ≤ tol·|λ|), {ctx.device}, "
              f"torch {torch.__version__}, {threads}")
    write_benchmark(out, "bench_spectrum", header, rows)


def plot(out: Path, figures: Path) -> list[Path]:
    """Benchmarks draw no figure: print the saved table."""
    return print_benchmark(out, "bench_spectrum")


if __name__ == "__main__":
    sys.exit(command_line("bench-spectrum"))
