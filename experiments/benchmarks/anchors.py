"""Benchmark: driftlab against PyHessian, hessian-eigenthings and curvlinops on the anchor models.

Three tables, every library measured in one process with the same threads
(pinned and printed):

* **fresh HVP**: the median over interleaved rounds of (time of one product ÷
  time of a plain autograd gradient in the same round), for driftlab
  (``Objective.grad``, ``hvp`` by double backward and forward-over-reverse) and
  each peer's own fresh product: hessian-eigenthings ``HessianOperator.matvec``,
  PyHessian ``hessian.dataloader_hv_product`` (a dataloader of one batch) and
  curvlinops ``HessianLinearOperator @ v``.
* **top-10 eigenpairs** to ‖Hu − λu‖ ≤ tol·|λ|: driftlab ``top_eigenpairs``
  (cold); hessian-eigenthings ``lanczos`` with ``max_iter`` raised until it
  reaches the tolerance (found untimed first, so the peer gets its best
  setting); scipy ``eigsh`` on curvlinops' ``to_scipy()``; PyHessian
  ``eigenvalues`` (power iteration with deflation, retained graph as it does
  for one batch). Every residual is recomputed with fresh driftlab HVPs; the
  medians of ``eig_rounds`` interleaved rounds are reported, with driftlab's
  share of time spent outside its Hessian products.
* **warm tracking**: ``EigenTracker`` along GD at h = 0.2 from the MLP's and
  the CNN's edge-of-stability points: HVPs per step against 2k + 10.

Peers are optional (``pip install -e '.[bench]'``); a missing one is skipped
with a one-line note. Peers run as a user would call them; where one cannot
(a loss that is not an ``nn.Module``, attention without a second derivative),
the adaptation is stated in the table's notes.
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
from torch import Tensor

from experiments.benchmarks.harness import PEERS, Setup, available_peers, command_line, residuals
from experiments.cli.common import print_benchmark, write_benchmark
from experiments.cli.context import RunContext
from experiments.cli.threads import pinned_threads
from experiments.zoo.anchors import ANCHORS, EOS_ANCHORS, anchor
from flows import EigenTracker, Objective, top_eigenpairs


@dataclass
class Config:
    anchors: tuple[str, ...] = ANCHORS
    """Anchor models of the fresh-HVP table (``experiments.zoo.anchors``)."""
    eig_anchors: tuple[str, ...] = ("digits-eos", "mlp-1m", "transformer")
    """Anchor models of the eigenpair and tracking tables."""
    track_anchors: tuple[str, ...] = EOS_ANCHORS
    """Warm tracking along GD at h = 0.2 from their EoS points."""
    track_steps: int = 30
    """GD steps of the warm-started tracking comparison."""
    threads: int = 0
    """Torch and BLAS threads, pinned for the measurement (0: torch's current count)"""
    rounds: int = 11
    """At least; fast models get more rounds, up to 101 or about min_seconds per model."""
    min_seconds: float = 20.0
    """Fast models get more interleaved rounds, up to 101 or about this many seconds per model."""
    eig_rounds: int = 3
    """Interleaved rounds of each eigensolver timing (the median is reported)."""
    k: int = 10
    """Eigenpairs requested."""
    tol: float = 1e-3
    """Relative residual ‖Hu − λu‖/|λ| every solver must reach."""
    eig_solvers: tuple[str, ...] = ()
    """Time only the eigensolvers whose names contain one of these words (empty: all), e.g. ``driftlab,lanczos``."""

    def validate(self) -> None:
        for name in (*self.anchors, *self.eig_anchors, *self.track_anchors):
            if name not in (*ANCHORS, *EOS_ANCHORS):
                raise ValueError(f"anchors must be among {(*ANCHORS, *EOS_ANCHORS)}, got {name!r}")
        if self.threads < 0:
            raise ValueError(f"threads must be ≥ 0, got {self.threads}")
        if self.rounds < 3 or self.eig_rounds < 1 or self.min_seconds < 0:
            raise ValueError("rounds must be ≥ 3, eig_rounds ≥ 1 and min_seconds ≥ 0")
        if not 0 < self.tol < 1 or self.k < 1:
            raise ValueError("tol must be in (0, 1) and k ≥ 1")


def time_fresh(setup: Setup, rounds: int, check: Callable[[], None], min_seconds: float = 20.0) -> list[dict]:
    """Interleaved rounds (at least ``rounds``, more for fast models: up to 101 or ~``min_seconds`` in all);
    each time divided by the plain gradient's time in the same round."""
    calls, failed = setup.fresh_products(), {}
    for name, call in list(calls.items()):
        try:
            call()  # warm up
        except Exception as err:  # noqa: BLE001 - a peer that cannot handle this model is reported, not fatal
            failed[name] = f"fails: {type(err).__name__}: {str(err).splitlines()[0][:90]}"
            del calls[name]
    times: dict[str, list[float]] = {name: [] for name in calls}
    start = time.perf_counter()
    for call in calls.values():  # one timed warm round decides how many rounds fit in ~min_seconds
        call()
    per_round = time.perf_counter() - start
    for _ in range(max(rounds, min(101, int(min_seconds / max(per_round, 1e-9))))):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
            check()
    base = times["plain autograd gradient"]
    rows = [{"anchor": setup.anchor.name, "D": setup.obj.dim, "rounds": len(times[name]), "method": name,
             "ms": round(statistics.median(t) * 1e3, 2),
             "x gradient": round(statistics.median([a / b for a, b in zip(t, base)]), 3), "note": ""}
            for name, t in times.items()]
    rows += [{"anchor": setup.anchor.name, "D": setup.obj.dim, "rounds": 0, "method": name, "ms": float("nan"),
              "x gradient": float("nan"), "note": why} for name, why in failed.items()]
    return rows


def relative_residuals(obj: Objective, theta: Tensor, values: Tensor, vectors: Tensor) -> float:
    """max ‖Hu − λu‖/|λ| over the pairs, from fresh driftlab HVPs (vectors as columns, normalised here)."""
    return float(residuals(obj, theta, values, vectors / torch.linalg.vector_norm(vectors, dim=0)).max())


Solve = Callable[[], tuple[Tensor, Tensor, int]]  # () → (values (k,), vectors (D, k), HVPs)


class HVPClock:
    """Seconds spent inside driftlab's Hessian products (graph build and products) while active."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> HVPClock:
        from flows.objective.hessian import HessianOperator

        self._saved = {name: getattr(HessianOperator, name) for name in ("_build", "_apply_rows")}
        for name, method in self._saved.items():
            setattr(HessianOperator, name, self._timed(method))
        return self

    def _timed(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
        return timed

    def __exit__(self, *exc: object) -> None:
        from flows.objective.hessian import HessianOperator

        for name, method in self._saved.items():
            setattr(HessianOperator, name, method)


def _counted(op: Any, method: str) -> list[int]:
    """Count calls of ``op.method`` (an instance attribute shadows the class's method)."""
    count = [0]
    original = getattr(op, method)

    def counted(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return original(*args, **kwargs)

    setattr(op, method, counted)
    return count


def eig_solvers(setup: Setup, k: int, tol: float, only: tuple[str, ...] = ()) -> dict[str, Solve]:
    """name → a cold top-k solve from scratch on the anchor (each call builds what it needs, as a user would);
    ``only``: the names that contain one of these words (empty: all)."""
    solvers: dict[str, Solve] = {}

    def wanted(name: str) -> bool:
        return not only or any(word in name for word in only)

    def driftlab(verify: bool) -> tuple[Tensor, Tensor, int]:
        r = top_eigenpairs(setup.obj, setup.theta, k, tol=tol, verify=verify)
        return r.values, r.vectors, r.matvecs
    solvers["driftlab top_eigenpairs (cold)"] = lambda: driftlab(True)
    # without the multiplicity verification: what certifying the k values with multiplicity costs
    solvers["driftlab top_eigenpairs (cold, verify=False)"] = lambda: driftlab(False)
    solvers = {name: solve for name, solve in solvers.items() if wanted(name)}
    if "hessian-eigenthings" in setup.peers and wanted("hessian-eigenthings lanczos"):
        max_iter = _tune_lanczos_steps(setup, k, tol)
        solvers[f"hessian-eigenthings lanczos, max_iter={max_iter}"] = lambda: _he_lanczos(setup, k, tol, max_iter)
    if "hessian-eigenthings" in setup.peers and wanted("scipy eigsh on hessian-eigenthings matvec"):
        solvers["scipy eigsh on hessian-eigenthings matvec"] = lambda: _eigsh(setup, k, tol, "hessian-eigenthings")
    if "curvlinops" in setup.peers and wanted("scipy eigsh on curvlinops to_scipy()"):
        solvers["scipy eigsh on curvlinops to_scipy()"] = lambda: _eigsh(setup, k, tol, "curvlinops")
    if "pyhessian" in setup.peers and wanted("pyhessian eigenvalues (defaults maxIter=100, tol=1e-3)"):
        solvers["pyhessian eigenvalues (defaults maxIter=100, tol=1e-3)"] = lambda: _pyhessian_top(setup, k)
    return solvers


def _he_lanczos(setup: Setup, k: int, tol: float, max_iter: int) -> tuple[Tensor, Tensor, int]:
    import hessian_eigenthings as he

    op = setup._hessian_eigenthings()
    count = _counted(op, "matvec")
    with setup._math_kernel():
        r = he.lanczos(op, k=k, max_iter=max_iter, tol=tol, which="LA", seed=0)
    return r.eigenvalues, r.eigenvectors.T, count[0]


def _tune_lanczos_steps(setup: Setup, k: int, tol: float) -> int:
    """The smallest max_iter (to within 2 steps) with which hessian-eigenthings' Lanczos reaches tol, found
    untimed by a ladder and a bisection, so that the peer is timed at its best setting."""
    def reaches(max_iter: int) -> bool:
        values, vectors, _ = _he_lanczos(setup, k, tol, max_iter)
        return relative_residuals(setup.obj, setup.theta, values, vectors) <= tol

    ladder = [m for m in (2 * k, 3 * k, 4 * k, 6 * k, 8 * k, 12 * k, 20 * k) if m < setup.obj.dim]
    low = k
    for high in ladder:
        if reaches(high):
            break
        low = high
    else:
        return ladder[-1]
    while high - low > 2:
        mid = (low + high) // 2
        low, high = (low, mid) if reaches(mid) else (mid, high)
    return high


def _eigsh(setup: Setup, k: int, tol: float, peer: str) -> tuple[Tensor, Tensor, int]:
    """scipy's ARPACK (tol: ‖r‖ ≤ tol·|λ|) on a peer's fresh product: curvlinops' own ``to_scipy()``, or a
    LinearOperator around hessian-eigenthings' ``matvec``."""
    import numpy as np
    from scipy.sparse.linalg import LinearOperator, eigsh

    if peer == "curvlinops":
        inner, scale = setup._curvlinops().to_scipy(), setup.curvlinops_scale
        product = inner.matvec
    else:
        he_op, scale = setup._hessian_eigenthings(), 1.0

        def product(x: np.ndarray) -> np.ndarray:
            return he_op.matvec(torch.as_tensor(np.ascontiguousarray(x).reshape(-1), dtype=torch.float32)).numpy()
    count = [0]

    def matvec(x: np.ndarray) -> np.ndarray:
        count[0] += 1
        with setup._math_kernel():
            return product(x)

    dim = setup.obj.dim
    values, vectors = eigsh(LinearOperator((dim, dim), matvec=matvec, dtype=np.float32), k=k, which="LA", tol=tol)
    order = np.argsort(-values)
    return (torch.as_tensor(values[order] * scale, dtype=torch.float32),
            torch.as_tensor(np.ascontiguousarray(vectors[:, order]), dtype=torch.float32), count[0])


def _pyhessian_top(setup: Setup, k: int) -> tuple[Tensor, Tensor, int]:
    import pyhessian  # noqa: F401 - its package attribute ``hessian`` is the class; the module is in sys.modules

    ph_module: Any = sys.modules["pyhessian.hessian"]
    modes = [(m, m.training) for m in setup.model.modules()]
    original = ph_module.hessian_vector_product
    count = [0]

    def counted(*args: Any) -> Any:
        count[0] += 1
        return original(*args)

    ph_module.hessian_vector_product = counted
    try:
        with setup._math_kernel():
            ph = ph_module.hessian(setup.model, setup.loss_fn, data=(setup.x, setup.y), cuda=False)
            values, vectors = ph.eigenvalues(top_n=k)
    finally:
        ph_module.hessian_vector_product = original
        for m, flag in modes:
            m.training = flag
        setup.model.zero_grad(set_to_none=True)  # PyHessian leaves create_graph gradients in .grad
    flat = torch.stack([torch.cat([t.reshape(-1) for t in v]) for v in vectors], dim=1)
    return torch.tensor(values, dtype=torch.float32), flat.detach(), count[0]


def time_eigs(setup: Setup, k: int, tol: float, rounds: int, check: Callable[[], None],
              only: tuple[str, ...] = ()) -> list[dict]:
    """Interleaved rounds of every solver (``only``: as in :func:`eig_solvers`); driftlab's share of time outside
    its HVPs is recorded too."""
    solvers = eig_solvers(setup, k, tol, only)
    times: dict[str, list[float]] = {name: [] for name in solvers}
    outside: list[float] = []
    found: dict[str, tuple[float, int, float]] = {}
    for _ in range(rounds):
        for name, solve in solvers.items():
            with HVPClock() as clock:
                start = time.perf_counter()
                values, vectors, hvps = solve()
                seconds = time.perf_counter() - start
            times[name].append(seconds)
            if name.startswith("driftlab"):
                outside.append(1 - clock.seconds / seconds)
            check()
            if name not in found:
                found[name] = (relative_residuals(setup.obj, setup.theta, values, vectors), hvps, float(values[0]))
    return [{"anchor": setup.anchor.name, "method": name, "seconds": round(statistics.median(t), 3),
             "HVPs": found[name][1], "worst relative residual": float(f"{found[name][0]:.2g}"),
             "lambda_1": round(found[name][2], 4),
             "time outside HVPs": f"{100 * statistics.median(outside):.1f}%" if name.startswith("driftlab") else ""}
            for name, t in times.items()]


def time_tracking(setup: Setup, k: int, tol: float, steps: int, lr: float, check: Callable[[], None],
                  verify: bool = True) -> dict:
    """EigenTracker along ``steps`` GD steps at h = ``lr`` from the anchor's point: HVPs per step, seconds per
    step, and the worst relative residual over the whole run (fresh HVPs); ``verify`` as in the tracker."""
    tracker = EigenTracker(k=k, tol=tol, verify=verify)
    theta = setup.theta
    tracker.update(setup.obj, theta)
    costs = []
    seconds = []
    worst = 0.0
    unconverged = 0
    sharp = []
    for _ in range(steps):
        theta = theta - lr * setup.obj.grad(theta)
        start = time.perf_counter()
        pairs = tracker.update(setup.obj, theta)
        seconds.append(time.perf_counter() - start)
        check()
        costs.append(pairs.matvecs)
        unconverged += not pairs.converged
        sharp.append(float(pairs.values[0]))
        worst = max(worst, relative_residuals(setup.obj, theta, pairs.values, pairs.vectors))
    return {"anchor": setup.anchor.name, "D": setup.obj.dim, "k": k, "verify": verify, "GD steps": steps,
            "HVPs per step (mean)": round(statistics.mean(costs), 1), "min": min(costs), "max": max(costs),
            "target 2k+10": 2 * k + 10, "seconds per step (median)": round(statistics.median(seconds), 3),
            "worst relative residual": float(f"{worst:.2g}"), "unconverged": unconverged,
            "λ_max range": f"{min(sharp):.2f}–{max(sharp):.2f} (2/h = {2 / lr:g})"}


def measure(config: Config, check: Callable[[], None], progress: bool = True) -> dict[str, list]:
    peers, notes = available_peers()
    tables: dict[str, list] = {"hvp": [], "top10": [], "tracking": [], "notes": notes}
    for name in dict.fromkeys((*config.anchors, *config.eig_anchors, *config.track_anchors)):
        setup = Setup(anchor(name), peers if name not in config.track_anchors or name in config.anchors
                      or name in config.eig_anchors else [])
        if progress:
            print(f"bench-anchors: {name} (D = {setup.obj.dim})", flush=True)
        if name in config.anchors:
            tables["hvp"] += time_fresh(setup, config.rounds, check, config.min_seconds)
        if name in config.eig_anchors:
            tables["top10"] += time_eigs(setup, config.k, config.tol, config.eig_rounds, check, config.eig_solvers)
        if name in config.track_anchors:
            for verify in (True, False):  # the second: what the multiplicity verification costs along a run
                tables["tracking"].append(time_tracking(setup, config.k, config.tol, config.track_steps, 0.2, check,
                                                        verify=verify))
        notes += [f"{name}: {n}" for n in setup.notes if f"{name}: {n}" not in notes]
    return tables


def run(config: Config, out: Path, ctx: RunContext) -> None:
    with pinned_threads(config.threads) as threads:
        tables = measure(config, ctx.check)
    versions = ", ".join(f"{name} {_version(module)}" for name, module in PEERS.items())
    notes = tables["notes"]
    setup = (f"torch {torch.__version__}, {ctx.device}, float32, {threads}; peers: {versions}"
             + ("; " + "; ".join(notes) if notes else ""))
    if tables["hvp"]:
        write_benchmark(out, "bench_anchors_hvp", f"Fresh HVP cost, median over interleaved rounds (at "
                        f"least {config.rounds}) of (product time ÷ plain gradient time in the same round). {setup}",
                        tables["hvp"])
    if tables["top10"]:
        write_benchmark(out, "bench_anchors_top10", f"Top-{config.k} eigenpairs to relative residual "
                        f"{config.tol:g} (recomputed with fresh HVPs), median of {config.eig_rounds} interleaved "
                        f"rounds. {setup}", tables["top10"])
    if tables["tracking"]:
        write_benchmark(out, "bench_anchors_tracking", f"Warm tracking of the top {config.k} (EigenTracker, tol "
                        f"{config.tol:g}) along GD at h = 0.2 from an EoS point. {setup}", tables["tracking"])


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    dist = {"pyhessian": "pyhessian", "hessian_eigenthings": "hessian-eigenthings",
            "curvlinops": "curvlinops-for-pytorch"}[module]
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def plot(out: Path, figures: Path) -> list[Path]:
    """Benchmarks draw no figure: print the saved tables."""
    for stem in ("bench_anchors_hvp", "bench_anchors_top10", "bench_anchors_tracking"):
        if (out / f"{stem}.md").exists():
            print_benchmark(out, stem)
    return []


if __name__ == "__main__":
    sys.exit(command_line("bench-anchors"))
