"""Benchmark: time per loss, gradient and Hessian-vector product on the digits fc-tanh MLP.

Every method is timed in the same process, interleaved round by round, and
reported as the median over rounds and as a ratio to one gradient. Run with
``driftlab run bench-hvp`` or ``python -m experiments.benchmarks.hvp``.
"""
from __future__ import annotations

import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from experiments.benchmarks.harness import command_line
from experiments.cli.common import print_benchmark, write_benchmark
from experiments.cli.context import RunContext
from experiments.cli.threads import pinned_threads
from experiments.zoo.datasets import check_digits_widths, digits_objective, fc_tanh, half_mse
from flows import Objective


@dataclass
class Config:
    widths: tuple[int, ...] = (64, 200, 200, 10)
    """The fc-tanh MLP's layer widths (64 inputs, 10 outputs)."""
    threads: int = 0
    """Torch and BLAS threads, pinned for the measurement (0: torch's current count)"""
    rounds: int = 25
    """Interleaved timing rounds (the median is reported)."""
    batch_vectors: int = 10
    """Vectors per batched product."""
    dtype: str = "float32"
    """'float32' or 'float64'."""
    n_train: int = 1500
    """Training examples (digits)."""

    def validate(self) -> None:
        check_digits_widths(self.widths)
        if self.threads < 0:
            raise ValueError(f"threads must be ≥ 0, got {self.threads}")
        if self.rounds < 3:
            raise ValueError("rounds must be ≥ 3")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(config: Config, device: torch.device) -> list[dict]:
    dtype = getattr(torch, config.dtype)
    obj, split, _ = digits_objective(dtype=dtype, widths=config.widths, n_train=config.n_train)
    fwd = Objective.from_module(fc_tanh(config.widths, dtype=dtype), half_mse, split.train,
                                hvp_method="forward_over_reverse")
    theta = obj.theta0.to(device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    v = torch.randn(obj.dim, generator=gen, dtype=dtype).to(device)
    vs = torch.randn(config.batch_vectors, obj.dim, generator=gen, dtype=dtype).to(device)
    op = obj.hessian_operator(theta)

    methods = {
        "loss": (lambda: obj.loss(theta), 1),
        "gradient": (lambda: obj.grad(theta), 1),
        "HVP fresh, double backward": (lambda: obj.hvp(theta, v), 1),
        "HVP fresh, forward-over-reverse": (lambda: fwd.hvp(theta, v), 1),
        "g and Hv together (double backward)": (lambda: obj.grad_and_hvp(theta, v), 1),
        f"HVP fresh, {config.batch_vectors} vectors batched, per vector": (lambda: obj.hvp(theta, vs),
                                                                           config.batch_vectors),
        "HVP on retained graph, per vector": (lambda: op @ v, 1),
        f"HVP on retained graph, {config.batch_vectors} batched, per vector": (lambda: op @ vs.T,
                                                                               config.batch_vectors),
    }
    times: dict[str, list[float]] = {name: [] for name in methods}
    peaks: dict[str, float] = {}
    for name, (fn, _) in methods.items():  # warm up, and memory
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        fn()
        _sync(device)
        peaks[name] = (torch.cuda.max_memory_allocated() / 2 ** 20 if device.type == "cuda"
                       else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    for _ in range(config.rounds):
        for name, (fn, _) in methods.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    grad_ms = statistics.median(times["gradient"]) * 1e3
    rows = []
    for name, (_, per) in methods.items():
        ms = statistics.median(times[name]) * 1e3 / per
        rows.append({"operation": name, "ms": round(ms, 3), "x gradient": round(ms / grad_ms, 2),
                     ("peak GPU MiB" if device.type == "cuda" else "process peak RSS MiB"): round(peaks[name], 1)})
    return rows


def run(config: Config, out: Path, ctx: RunContext) -> None:
    with pinned_threads(config.threads) as threads:
        rows = measure(config, ctx.device)
    dims = "-".join(map(str, config.widths))
    n_params = sum(a * b + b for a, b in zip(config.widths[:-1], config.widths[1:]))
    header = (f"digits fc-tanh {dims} ({n_params} parameters), full batch {config.n_train}, {config.dtype}, "
              f"{ctx.device}, torch {torch.__version__}, {threads}, "
              f"median of {config.rounds} interleaved rounds")
    write_benchmark(out, "bench_hvp", header, rows)


def plot(out: Path, figures: Path) -> list[Path]:
    """Benchmarks draw no figure: print the saved table."""
    return print_benchmark(out, "bench_hvp")


if __name__ == "__main__":
    sys.exit(command_line("bench-hvp"))
