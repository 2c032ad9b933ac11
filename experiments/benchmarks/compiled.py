"""Benchmark: the compiled curvature products (``hvp_method="compiled"``) against the eager ones.

For each anchor model, in one process: the compile time of the first compiled call, then interleaved rounds of
(g, Hv) by double backward (driftlab's default), by eager forward-over-reverse and compiled; and of the k(k+1)/2
pair third derivatives ∇(uᵢᵀHuⱼ), eager and compiled. Medians, as milliseconds and as multiples of one gradient,
and the largest difference of each result from the double-backward one relative to the largest entry of the latter
(the two eager methods' difference shows the round-off of the dtype). Run with
``driftlab run bench-compiled``.
"""
from __future__ import annotations

import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from experiments.benchmarks.harness import command_line
from experiments.cli.common import print_benchmark, write_benchmark
from experiments.cli.context import RunContext
from experiments.cli.threads import pinned_threads
from experiments.zoo.anchors import ANCHORS, anchor
from flows import Objective

STEM = "bench_compiled"


@dataclass
class Config:
    anchors: tuple[str, ...] = ("digits-mlp", "cnn", "mlp-1m")
    """Anchor models (experiments.zoo.anchors)."""
    k: int = 3
    """Columns of the third derivatives: k(k+1)/2 pair vectors per call."""
    rounds: int = 5
    """Interleaved timing rounds (the median is reported)."""
    threads: int = 1
    """Torch and BLAS threads, pinned for the measurement (0: torch's current count)."""
    backend: str = "inductor"
    """The torch.compile backend of the compiled products."""

    def validate(self) -> None:
        unknown = [a for a in self.anchors if a not in ANCHORS]
        if not self.anchors or unknown:
            raise ValueError(f"anchors must be a non-empty subset of {ANCHORS}, got {self.anchors}")
        if self.k < 1:
            raise ValueError(f"k must be ≥ 1, got {self.k}")
        if self.rounds < 1:
            raise ValueError(f"rounds must be ≥ 1, got {self.rounds}")
        if self.threads < 0:
            raise ValueError(f"threads must be ≥ 0, got {self.threads}")


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _difference(ours: Tensor, eager: Tensor) -> float:
    return float((ours - eager).abs().max() / eager.abs().max().clamp_min(torch.finfo(eager.dtype).tiny))


def measure_anchor(name: str, config: Config, device: torch.device) -> list[dict]:
    """The rows of one anchor model: one per (product, method)."""
    a = anchor(name)
    a.model.to(device)
    data = (a.data[0].to(device), a.data[1].to(device))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        objs = {method: Objective.from_module(a.model, a.loss_fn, data, hvp_method=method, name=name)
                for method in ("double_backward", "forward_over_reverse")}
        compiled = Objective.from_module(a.model, a.loss_fn, data, hvp_method="compiled", name=name,
                                         compile=config.backend)
    theta = objs["double_backward"].theta0
    assert theta is not None  # from_module sets it
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(theta.numel(), generator=gen, dtype=theta.dtype).to(device)
    u = torch.linalg.qr(torch.randn(theta.numel(), config.k, generator=gen, dtype=theta.dtype))[0].to(device)
    eager_hv = objs["double_backward"].grad_and_hvp(theta, v)[1]
    eager_t = objs["double_backward"].third_derivatives(theta, u)
    compile_hvp = _seconds(lambda: compiled.grad_and_hvp(theta, v))
    compile_third = _seconds(lambda: compiled.third_derivatives(theta, u))
    if compiled.hvp_method != "compiled":
        raise RuntimeError(f"{name}: the compiled products fell back to eager (see the warning above)")
    pairs = f"{config.k * (config.k + 1) // 2} pair vectors"
    methods: dict[str, Callable[[], object]] = {
        "gradient": lambda: objs["double_backward"].grad(theta),
        "g, Hv: double backward": lambda: objs["double_backward"].grad_and_hvp(theta, v),
        "g, Hv: forward-over-reverse": lambda: objs["forward_over_reverse"].grad_and_hvp(theta, v),
        "g, Hv: compiled": lambda: compiled.grad_and_hvp(theta, v),
        f"{pairs}: eager": lambda: objs["double_backward"].third_derivatives(theta, u),
        f"{pairs}: compiled": lambda: compiled.third_derivatives(theta, u),
    }
    times: dict[str, list[float]] = {label: [] for label in methods}
    for _ in range(config.rounds):
        for label, fn in methods.items():
            times[label].append(_seconds(fn))
    grad_ms = statistics.median(times["gradient"]) * 1e3
    differences = {"g, Hv: forward-over-reverse": _difference(objs["forward_over_reverse"].grad_and_hvp(theta, v)[1],
                                                              eager_hv),
                   "g, Hv: compiled": _difference(compiled.grad_and_hvp(theta, v)[1], eager_hv),
                   f"{pairs}: compiled": _difference(compiled.third_derivatives(theta, u), eager_t)}
    compile_s = {"g, Hv: compiled": compile_hvp, f"{pairs}: compiled": compile_third}
    rows = []
    for label in methods:
        ms = statistics.median(times[label]) * 1e3
        rows.append({"model": name, "parameters": theta.numel(), "dtype": str(theta.dtype).removeprefix("torch."),
                     "operation": label, "ms": round(ms, 3), "x gradient": round(ms / grad_ms, 2),
                     "compile s": round(compile_s[label], 1) if label in compile_s else "",
                     "max rel. difference from double backward": (f"{differences[label]:.1e}" if label in differences
                                                                  else "")})
    return rows


def run(config: Config, out: Path, ctx: RunContext) -> None:
    rows: list[dict] = []
    with pinned_threads(config.threads) as threads:
        for name in config.anchors:
            print(f"bench-compiled: {name} (compiling takes tens of seconds per graph)", flush=True)
            rows += measure_anchor(name, config, ctx.device)
    header = (f"compiled (torch.compile {config.backend}, traced with make_fx) vs eager curvature products, "
              f"{ctx.device}, torch {torch.__version__}, {threads}, median of {config.rounds} interleaved rounds")
    write_benchmark(out, STEM, header, rows)


def plot(out: Path, figures: Path) -> list[Path]:
    """Benchmarks draw no figure: print the saved table."""
    return print_benchmark(out, STEM)


if __name__ == "__main__":
    sys.exit(command_line("bench-compiled"))
