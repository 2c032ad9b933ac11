"""Benchmark: the cost of adaptive and stochastic curvature on digits.

Two tables. (1) Warm tracking of λ₁ along a full-batch Adam run: one tracker follows λ₁(P⁻¹H) with each
measured step's P, another follows λ₁(H), both warm-started at the same points; HVPs per update, and their ratio
(the issue's target: preconditioned ≤ 1.2× unpreconditioned). (2) Batch sharpness at batch 64 to a 5% standard
error at three points (θ₀, after 150 GD steps at h = 0.2, and after 350: the edge of stability): mini-batch HVPs
used (target ≤ 32), the estimate and its standard error.
"""
from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from analysis import OptimizerController
from experiments.benchmarks.harness import command_line
from experiments.cli.common import print_benchmark, write_benchmark
from experiments.cli.context import RunContext
from experiments.cli.threads import pinned_threads
from experiments.zoo.datasets import check_digits_widths, digits, fc_tanh, half_mse
from flows import EigenTracker, Recorder, StepContext, StepDecision, gradient_descent
from flows.curvature.stochastic import MiniBatches, batch_sharpness


@dataclass
class Config:
    adam_lr: float = 1e-3
    """Adam's learning rate along the tracked run."""
    adam_steps: int = 300
    """Adam steps tracked."""
    every: int = 10
    """Measure λ₁(P⁻¹H) every this many steps."""
    batch_size: int = 64
    """Examples per batch of the batch-sharpness estimate."""
    rel_error: float = 0.05
    """Relative standard error at which the batch-sharpness estimate stops."""
    gd_points: tuple[int, ...] = (0, 150, 350)
    """GD steps (at gd_lr) after which the batch sharpness is estimated."""
    gd_lr: float = 0.2
    """GD's learning rate for the batch-sharpness points."""
    tol: float = 1e-3
    """Relative eigen-residual tolerance of the trackers."""
    widths: tuple[int, ...] = (64, 200, 200, 10)
    """The fc-tanh MLP's layer widths (64 inputs, 10 outputs)."""
    n_train: int = 0
    """Training examples (0: the whole digits training split)."""
    threads: int = 0
    """Threads for torch and the BLAS pools (0: leave them as they are); printed in the table header."""

    def validate(self) -> None:
        check_digits_widths(self.widths)
        if self.adam_steps < 1 or self.every < 1 or self.batch_size < 1:
            raise ValueError("adam_steps, every and batch_size must be ≥ 1")
        if not (self.adam_lr > 0 and self.gd_lr > 0 and self.rel_error > 0 and self.tol > 0):
            raise ValueError("adam_lr, gd_lr, rel_error and tol must be > 0")
        if any(p < 0 for p in self.gd_points) or self.threads < 0 or self.n_train < 0:
            raise ValueError("gd_points, threads and n_train must be ≥ 0")


def run(config: Config, out: Path, ctx: RunContext) -> None:
    from flows import Objective

    split = digits(seed=ctx.seed, n_train=config.n_train or None)
    model = fc_tanh(config.widths, seed=ctx.seed)
    obj = Objective.from_module(model, half_mse, split.train, name="digits-fc-tanh")
    assert obj.theta0 is not None  # from_module sets it
    theta0 = obj.theta0.to(ctx.device)
    with pinned_threads(config.threads) as threads:
        rows_p = _tracking(obj, theta0, config, ctx)
        rows_b = _batch(obj, model, split.train, theta0, config, ctx)
    head = f"digits fc-tanh {'-'.join(map(str, config.widths))} MLP, {len(split.train[0])} examples, ½-MSE; " \
           f"{ctx.device}, torch {torch.__version__}, {threads}"
    write_benchmark(out, "bench_adaptive_tracking", f"Warm λ₁ tracking along full-batch Adam (h = {config.adam_lr:g}, "
                    f"{config.adam_steps} steps, every {config.every}), tol {config.tol:g}; {head}", rows_p)
    write_benchmark(out, "bench_adaptive_batch", f"Batch sharpness at batch {config.batch_size} to a "
                    f"{config.rel_error:.0%} standard error; {head}", rows_b)


def _tracking(obj, theta0, config: Config, ctx) -> list[dict]:
    ctrl = OptimizerController(torch.optim.Adam, lr=config.adam_lr)
    plain, pre = EigenTracker(k=1, tol=config.tol), EigenTracker(k=1, tol=config.tol)
    counts: dict[str, list[int]] = {"plain": [], "pre": []}

    def measure(step_ctx: StepContext, decision: StepDecision, rec: Recorder) -> None:
        if step_ctx.step % config.every or ctrl.steps_taken != step_ctx.step + 1:
            return
        counts["plain"].append(plain.update(obj, step_ctx.theta).matvecs)
        counts["pre"].append(pre.update(obj, step_ctx.theta, ctrl.preconditioner()).matvecs)

    gradient_descent(obj, theta0, config.adam_lr, config.adam_steps, controller=ctrl, states="none",
                     callbacks=[measure], progress=ctx.progress)
    ctx.check()
    warm_p, warm_q = counts["plain"][1:], counts["pre"][1:]  # the first update of each is a cold solve
    ratio = statistics.mean(warm_q) / statistics.mean(warm_p)
    return [{"tracker": "λ₁(H), warm", "updates": len(warm_p), "HVPs per update (mean)":
             round(statistics.mean(warm_p), 2), "median": statistics.median(warm_p), "× plain": 1.0},
            {"tracker": "λ₁(P⁻¹H) with each step's P, warm", "updates": len(warm_q), "HVPs per update (mean)":
             round(statistics.mean(warm_q), 2), "median": statistics.median(warm_q), "× plain": round(ratio, 3)},
            {"tracker": "cold first solves (plain / preconditioned)", "updates": 1, "HVPs per update (mean)":
             f"{counts['plain'][0]} / {counts['pre'][0]}", "median": "", "× plain": ""}]


def _batch(obj, model, data, theta0, config: Config, ctx) -> list[dict]:
    rows = []
    theta, done = theta0, 0
    for point in sorted(config.gd_points):
        if point > done:
            traj = gradient_descent(obj, theta, config.gd_lr, point - done, states="full", progress=ctx.progress)
            theta = torch.as_tensor(traj.state_matrix()[-1], dtype=theta0.dtype, device=theta0.device)
            done = point
        ctx.check()
        batches = MiniBatches(model, half_mse, data, config.batch_size, seed=ctx.unit_seed(f"point{point}"))
        est = batch_sharpness(batches, theta, rel_error=config.rel_error)
        rows.append({"point": f"GD step {point} at h = {config.gd_lr:g}", "mini-batch HVPs": est.hvps,
                     "batch sharpness": round(est.mean, 4), "standard error": round(est.standard_error, 4),
                     "relative s.e.": f"{est.standard_error / abs(est.mean):.1%}", "reached": est.converged})
    return rows


def plot(out: Path, figures: Path) -> list[Path]:
    """Benchmarks draw no figure: print the saved tables."""
    return print_benchmark(out, "bench_adaptive_tracking") + print_benchmark(out, "bench_adaptive_batch")


if __name__ == "__main__":
    sys.exit(command_line("bench-adaptive"))
