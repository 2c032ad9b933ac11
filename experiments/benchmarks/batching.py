"""Benchmark: blocks of curvature products as one batched backward (``batching="vmap"``) or as a loop.

For each model, in one process and interleaved round by round: a block of m fresh HVPs (``Objective.hvp`` of an
(m, D) batch), a block of m products through the retained gradient graph (``hessian_operator(θ) @ V``, what warm
eigen solves and Rayleigh–Ritz updates multiply) and the k(k+1)/2 pair vectors ∇(uᵢᵀHuⱼ) of the central flow
(``third_derivatives``), each with ``batching="vmap"`` and ``batching="loop"``. Medians per vector (per pair for
the pair vectors), the ratio vmap ÷ loop, and the largest difference between the two relative to the largest
entry. The models are the anchors of ``experiments.zoo.anchors`` and ``mnist1d``, the 40-32-32-10 tanh MLP with
cross-entropy of ``bench-central``. What ``batching="auto"`` chooses comes from this table. Run with
``driftlab run bench-batching``.
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

from experiments.benchmarks.harness import command_line
from experiments.cli.common import print_benchmark, write_benchmark
from experiments.cli.context import RunContext
from experiments.cli.threads import pinned_threads
from experiments.zoo.anchors import ANCHORS, EOS_ANCHORS, anchor
from experiments.zoo.datasets import fc_tanh, load_split
from flows import Objective
from flows.objective.objective import Batching

STEM = "bench_batching"
COMPARED: tuple[Batching, ...] = ("vmap", "loop")
MODELS = (*ANCHORS, *EOS_ANCHORS, "mnist1d")


@dataclass
class Config:
    models: tuple[str, ...] = ("digits-mlp", "mlp-1m", "transformer", "bn-cnn", "digits-cnn-eos", "mnist1d")
    """Models: anchors (``experiments.zoo.anchors``) or ``mnist1d`` (the MLP of ``bench-central``)."""
    m: int = 12
    """Vectors per block of products (a warm start of k = 10 with 2 spare vectors)."""
    k: int = 5
    """Columns of the pair vectors: k(k+1)/2 per call."""
    rounds: int = 5
    """Interleaved timing rounds (the median is reported)."""
    threads: int = 1
    """Torch and BLAS threads, pinned for the measurement (0: torch's current count)."""

    def validate(self) -> None:
        unknown = [name for name in self.models if name not in MODELS]
        if not self.models or unknown:
            raise ValueError(f"models must be a non-empty subset of {MODELS}, got {self.models}")
        if self.m < 1 or self.k < 1 or self.rounds < 1:
            raise ValueError(f"m, k and rounds must be ≥ 1, got {self.m}, {self.k}, {self.rounds}")
        if self.threads < 0:
            raise ValueError(f"threads must be ≥ 0, got {self.threads}")


def model_objective(name: str, device: torch.device) -> Objective:
    """The benchmark's objective by name (:data:`MODELS`), on ``device``."""
    if name == "mnist1d":
        split = load_split("mnist1d", dtype=torch.float64)
        net = fc_tanh((40, 32, 32, 10), seed=0, dtype=torch.float64).to(device)
        return Objective.from_module(net, torch.nn.functional.cross_entropy,
                                     (split.x_train.to(device), split.labels_train.to(device)), name=name)
    a = anchor(name)
    a.model.to(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Objective.from_module(a.model, a.loss_fn, (a.data[0].to(device), a.data[1].to(device)), name=name)


def _seconds(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure_model(name: str, config: Config, device: torch.device) -> list[dict]:
    """One row per (product, batching) of one model."""
    obj = model_objective(name, device)
    theta = obj.theta0
    assert theta is not None  # from_module sets it
    gen = torch.Generator().manual_seed(0)
    vs = torch.randn(config.m, obj.dim, generator=gen, dtype=theta.dtype).to(device)
    u = torch.linalg.qr(torch.randn(obj.dim, config.k, generator=gen, dtype=theta.dtype))[0].to(device)
    pairs = config.k * (config.k + 1) // 2
    op = obj.hessian_operator(theta)
    products: dict[str, tuple[Callable[[], torch.Tensor], int]] = {
        f"fresh HVPs, block of {config.m}": (lambda: obj.hvp(theta, vs), config.m),
        f"retained graph, block of {config.m}": (lambda: (op @ vs.T).T, config.m),
        f"{pairs} pair vectors (k = {config.k})": (lambda: obj.third_derivatives(theta, u), pairs),
    }
    times: dict[tuple[str, str], list[float]] = {}
    results: dict[tuple[str, str], torch.Tensor] = {}
    for batching in COMPARED:  # warm up, and the results to compare
        obj.batching = batching
        for label, (fn, _) in products.items():
            results[label, batching] = fn()
    for _ in range(config.rounds):
        for label, (fn, _) in products.items():
            for batching in COMPARED:
                obj.batching = batching
                times.setdefault((label, batching), []).append(_seconds(fn, device))
    op.release()
    grad_s = statistics.median(_seconds(lambda: obj.grad(theta), device) for _ in range(config.rounds))
    rows = []
    for label, (_, per) in products.items():
        vmap_s, loop_s = (statistics.median(times[label, b]) / per for b in ("vmap", "loop"))
        looped = results[label, "loop"]
        difference = float((results[label, "vmap"] - looped).abs().max() / looped.abs().max().clamp_min(1e-300))
        rows.append({"model": name, "parameters": obj.dim, "dtype": str(theta.dtype).removeprefix("torch."),
                     "products": label, "vmap ms per vector": round(vmap_s * 1e3, 3),
                     "loop ms per vector": round(loop_s * 1e3, 3), "vmap / loop": round(vmap_s / loop_s, 2),
                     "loop x gradient": round(loop_s / grad_s, 2), "max rel. difference": f"{difference:.1e}"})
    return rows


def run(config: Config, out: Path, ctx: RunContext) -> None:
    rows: list[dict] = []
    with pinned_threads(config.threads) as threads:
        for name in config.models:
            print(f"bench-batching: {name}", flush=True)
            rows += measure_model(name, config, ctx.device)
    header = (f"blocks of curvature products, one batched backward (vmap, is_grads_batched) vs a loop of single "
              f"backward passes, {ctx.device}, torch {torch.__version__}, {threads}, median of {config.rounds} "
              "interleaved rounds")
    write_benchmark(out, STEM, header, rows)


def plot(out: Path, figures: Path) -> list[Path]:
    """Benchmarks draw no figure: print the saved table."""
    return print_benchmark(out, STEM)


if __name__ == "__main__":
    sys.exit(command_line("bench-batching"))
