"""Data-parallel full batch with torch.distributed: 1 vs N processes on the same data (gloo, CPU).

Each configuration launches ``world`` processes (``torch.multiprocessing``,
gloo backend, a local TCP rendezvous with a timeout); rank r holds every
world-th training example and ``Objective.from_module`` sums loss, gradient
and HVPs over the ranks. Rank 0 reports the numbers (loss, gradient, one HVP,
top-k eigenvalues, θ after GD steps, float64) and the median wall time per HVP
and per GD step. Threads are split so that all runs use the same number of
cores. On a 2-core machine the point is correctness and overhead, not
speed-up.
"""
from __future__ import annotations

import datetime
import os
import socket
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from experiments.cli.common import print_benchmark, write_benchmark, write_json
from experiments.cli.context import RunContext


@dataclass
class Config:
    worlds: tuple[int, ...] = (1, 2)
    """Process counts compared (each rank holds every world-th example)."""
    n_train: int = 1500
    """Training examples (digits)."""
    widths: tuple[int, ...] = (64, 200, 200, 10)
    """The fc-tanh MLP's layer widths (64 inputs, 10 outputs)."""
    k: int = 3
    """Eigenvalues compared between the process counts."""
    gd_steps: int = 20
    """GD steps compared."""
    rounds: int = 15
    """Timing rounds (the median is reported)."""
    cores: int = 2
    """Cores shared by the ranks (threads per rank = cores/world)."""
    timeout: float = 120.0
    """Seconds before a collective times out (a failed rank makes the others fail)."""

    def validate(self) -> None:
        if not self.worlds or any(w < 1 for w in self.worlds):
            raise ValueError(f"worlds must be positive process counts, got {self.worlds}")
        for name in ("n_train", "k", "gd_steps", "rounds", "cores"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1")
        if not self.timeout > 0:
            raise ValueError("timeout must be > 0 seconds")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, world: int, port: int, cfg: dict, queue) -> None:
    """One rank: build the sharded objective, measure, and (rank 0) put the results on ``queue``."""
    import torch.distributed as dist
    from threadpoolctl import threadpool_limits

    from experiments.cli.threads import describe_threads, load_thread_pools
    from experiments.zoo.datasets import digits, fc_tanh, half_mse
    from flows import Objective, gradient_descent, top_eigenpairs

    load_thread_pools()
    torch.set_num_threads(max(1, cfg["cores"] // world))
    threadpool_limits(limits=max(1, cfg["cores"] // world))  # BLAS pools too: no rank oversubscribes the cores
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=cfg["timeout"]))
    try:
        split = digits(dtype=torch.float64, n_train=cfg["n_train"])
        x, y = split.train
        model = fc_tanh(tuple(cfg["widths"]), dtype=torch.float64)
        obj = Objective.from_module(model, half_mse, (x[rank::world], y[rank::world]))
        theta = obj.theta0
        assert theta is not None  # from_module takes θ0 from the model
        v = torch.randn(obj.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        loss, grad = obj.loss_and_grad(theta)
        hv = obj.hvp(theta, v)
        eig = top_eigenpairs(obj, theta, k=cfg["k"], tol=1e-12)
        gd = gradient_descent(obj, theta, lr=0.1, steps=cfg["gd_steps"], states="none")
        final = theta.clone()
        for _ in range(cfg["gd_steps"]):
            final = final - 0.1 * obj.grad(final)
        hvp_t, step_t = [], []
        for _ in range(cfg["rounds"]):
            dist.barrier()
            t0 = time.perf_counter()
            obj.hvp(theta, v)
            hvp_t.append(time.perf_counter() - t0)
            dist.barrier()
            t0 = time.perf_counter()
            obj.loss_and_grad(theta)
            step_t.append(time.perf_counter() - t0)
        if rank == 0:
            queue.put({"loss": float(loss), "grad": grad.numpy(), "hvp": hv.numpy(), "eigenvalues": eig.values.numpy(),
                       "gd_losses": gd.losses, "theta_after_gd": final.numpy(),
                       "hvp_ms": 1e3 * statistics.median(hvp_t), "gd_step_ms": 1e3 * statistics.median(step_t),
                       "threads": describe_threads()})
    finally:
        dist.destroy_process_group()


def measure(world: int, cfg: dict) -> dict:
    """Launch ``world`` gloo processes on this machine and return rank 0's results."""
    ctx = torch.multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=worker, args=(r, world, port, cfg, queue)) for r in range(world)]
    for p in procs:
        p.start()
    try:
        result = queue.get(timeout=cfg["timeout"] * 3)
    except Exception as err:  # queue.Empty: a rank failed or hung
        raise RuntimeError(f"no result from {world} process(es) within {cfg['timeout'] * 3:.0f} s; "
                           f"exit codes {[p.exitcode for p in procs]}") from err
    finally:
        for p in procs:
            p.join(timeout=cfg["timeout"])
            if p.is_alive():
                p.kill()
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"{world}-process run: ranks exited with codes {[p.exitcode for p in procs]}")
    return result


def run(config: Config, out: Path, ctx: RunContext) -> None:
    cfg = asdict(config)
    results = {w: measure(w, cfg) for w in config.worlds}
    base = results[config.worlds[0]]
    rows = []
    for w, r in results.items():
        rows.append({"processes": w, "threads each": max(1, config.cores // w),
                     "ms per HVP": round(r["hvp_ms"], 2), "ms per GD step": round(r["gd_step_ms"], 2),
                     "HVP × 1-process": round(r["hvp_ms"] / base["hvp_ms"], 2),
                     "max |Δ grad|": float(np.abs(r["grad"] - base["grad"]).max()),
                     "max |Δ HVP|": float(np.abs(r["hvp"] - base["hvp"]).max()),
                     "max |Δ λ|": float(np.abs(r["eigenvalues"] - base["eigenvalues"]).max()),
                     f"max |Δ θ| after {config.gd_steps} GD steps":
                         float(np.abs(r["theta_after_gd"] - base["theta_after_gd"]).max())})
    write_json(out / "scaling_raw.json", {str(w): {k: (v.tolist() if isinstance(v, np.ndarray) else v)
                                                  for k, v in r.items()} for w, r in results.items()})
    write_benchmark(out, "scaling", f"digits fc-tanh {config.widths}, full batch {config.n_train}, float64, "
                                    f"gloo on {config.cores} cores; per process: "
                                    + "; ".join(f"{w} process(es): {r['threads']}" for w, r in results.items()), rows)


def plot(out: Path, figures: Path) -> list[Path]:
    return print_benchmark(out, "scaling")
