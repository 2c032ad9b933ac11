"""Benchmark: the Hessian kit (spectral density, trace, loss planes) against PyHessian and curvlinops.

Every library runs in one process with the same pinned threads (printed in the headers); timings are medians
over ``rounds`` interleaved rounds. Two tables:

* **density and planes** on the digits MLP at its edge-of-stability point (``digits-eos``): stochastic Lanczos
  quadrature with ``starts`` probes × ``steps`` Lanczos steps by driftlab (``spectral_density``), by curvlinops
  (``lanczos_approximate_spectrum``, Papyan 2020's algorithm, which also spends products on the spectrum's ends)
  and by PyHessian (``hessian.density``); the first two moments tr(Hⁿ)/D are compared with the exact ones on a
  small digits MLP (D = 2,410) whose dense Hessian is formed; and a ``plane`` × ``plane`` exact loss plane,
  batched (``loss_plane``) against one point at a time (``Objective.loss`` in a loop). ``--set model=NAME``
  times another anchor.
* **trace**: Hutch++ and Hutchinson by driftlab and curvlinops (``hutchpp_trace``, ``hutchinson_trace``,
  ``xtrace``) at the same budget of ``matvecs`` products, and PyHessian's ``trace`` (Hutchinson with its own
  stopping rule, defaults maxIter = 100, tol = 1e-3), over ``repeats`` random seeds: the mean relative error
  against the exact trace (small MLP: the dense Hessian's; digits MLP: a reference Hutch++ with
  ``reference_matvecs`` products, whose standard error is printed), the spread of the estimates, products and
  time.

Peers are optional (``make bench-peers``); a missing one is skipped with a one-line note.
"""
from __future__ import annotations

import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from experiments.benchmarks.harness import Setup, available_peers, command_line, median_seconds
from experiments.cli.common import print_benchmark, write_benchmark
from experiments.cli.context import RunContext
from experiments.cli.threads import pinned_threads
from experiments.zoo.anchors import ANCHORS, EOS_ANCHORS, Anchor, anchor, digits_mlp
from experiments.zoo.datasets import half_mse
from flows import SpectralDensity, filter_normalized_direction, hessian_trace, loss_plane, spectral_density


@dataclass
class Config:
    starts: int = 10
    """Random starts of each stochastic Lanczos density."""
    steps: int = 80
    """Lanczos steps per start."""
    plane: int = 41
    """Points per side of the timed loss plane."""
    matvecs: int = 99
    """Hessian-vector products of each trace estimate."""
    reference_matvecs: int = 2997
    """Products of the reference Hutch++ trace on the large model (its standard error is printed)."""
    repeats: int = 5
    """Random seeds per trace estimator (mean error and spread over them)."""
    rounds: int = 3
    """Timing rounds (the median is reported)."""
    threads: int = 0
    """Torch and BLAS threads, pinned (0: torch's current count)"""
    small_widths: tuple[int, ...] = (64, 32, 10)
    """Widths of the small MLP whose dense Hessian gives the exact moments."""
    model: str = "digits-eos"
    """The network timed (an anchor of bench-anchors, or "digits-small")"""
    peers: bool = True
    """Time the installed peers as well (false: driftlab alone)."""

    def validate(self) -> None:
        for name in ("starts", "steps", "repeats", "rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.plane < 2 or self.matvecs < 3 or self.reference_matvecs < self.matvecs or self.threads < 0:
            raise ValueError("plane must be ≥ 2, matvecs ≥ 3, reference_matvecs ≥ matvecs and threads ≥ 0")
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")


MODELS = (*ANCHORS, *EOS_ANCHORS, "digits-small")


def _small_anchor(widths: tuple[int, ...], seed: int) -> Anchor:
    model, data = digits_mlp(widths, seed)
    model = model.double()
    data = (data[0].double(), data[1].double())
    return Anchor("digits-small", f"fc-tanh {'-'.join(map(str, widths))} (float64), ½-MSE, 1500 digits", model,
                  half_mse, data)


def run(config: Config, out: Path, ctx: RunContext) -> None:
    peers, notes = available_peers() if config.peers else ([], ["peers: off (--set peers=false)"])
    peers = [p for p in peers if p in ("pyhessian", "curvlinops")]
    with pinned_threads(config.threads) as threads, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = Setup(_small_anchor(config.small_widths, ctx.seed), peers)
        big = small if config.model == "digits-small" else Setup(anchor(config.model, ctx.seed), peers)
        exact = small.obj.hessian(small.theta)
        truth = _exact_moments(exact)
        density_rows = _density_rows(small, big, truth, config, ctx)
        plane_rows = _plane_rows(big, config, ctx)
        trace_rows = _trace_rows(small, float(truth[1] * small.obj.dim), None, config, ctx)
        reference = hessian_trace(big.obj, big.theta, config.reference_matvecs, seed=10_000)
        trace_rows += _trace_rows(big, reference.value, reference.standard_error, config, ctx)
    head = f"{ctx.device}, torch {torch.__version__}, {threads}" + "".join(f"; {n}" for n in notes + small.notes)
    write_benchmark(out, "bench_hessian_kit_density", f"Spectral density ({config.starts} probes × {config.steps} "
                    f"Lanczos steps) and a {config.plane}×{config.plane} loss plane, medians of {config.rounds} "
                    f"rounds; moments against the dense Hessian of {small.anchor.description}; {head}",
                    density_rows + plane_rows)
    write_benchmark(out, "bench_hessian_kit_trace", f"Trace estimates at {config.matvecs} products, "
                    f"{config.repeats} seeds each; exact trace (dense) on {small.anchor.description}; reference "
                    f"Hutch++ with {config.reference_matvecs} products on {big.anchor.description}; {head}",
                    trace_rows)


def _exact_moments(dense: Tensor) -> np.ndarray:
    """tr(Hⁿ)/D for n = 0, 1, 2 from the eigenvalues of the dense Hessian."""
    values = torch.linalg.eigvalsh(dense).numpy()
    return np.array([np.mean(values ** n) for n in range(3)])


def _density_methods(setup: Setup, config: Config) -> dict[str, Callable[[], tuple[Any, int]]]:
    """name → a call returning (nodes/weights or a gridded density, products spent)."""
    methods: dict[str, Callable[[], tuple[Any, int]]] = {
        "driftlab spectral_density": lambda: _driftlab_density(setup, config)}
    if "curvlinops" in setup.peers:
        methods["curvlinops lanczos_approximate_spectrum"] = lambda: _curvlinops_density(setup, config)
    if "pyhessian" in setup.peers:
        methods["pyhessian density"] = lambda: _pyhessian_density(setup, config)
    return methods


def _driftlab_density(setup: Setup, config: Config) -> tuple[Any, int]:
    d = spectral_density(setup.obj, setup.theta, config.starts, config.steps)
    return d, d.matvecs


def _curvlinops_density(setup: Setup, config: Config) -> tuple[Any, int]:
    from curvlinops.papyan2020traces.spectrum import lanczos_approximate_spectrum

    op = setup._curvlinops()
    count = _count_columns(op)
    grid, density = lanczos_approximate_spectrum(op, config.steps, num_repeats=config.starts)
    return (np.asarray(grid) * setup.curvlinops_scale, np.asarray(density) / setup.curvlinops_scale), count[0]


def _count_columns(op: Any) -> list[int]:
    count, inner = [0], op._matmat

    def counted(x: list[Tensor]) -> list[Tensor]:
        count[0] += int(x[0].shape[-1])
        return inner(x)
    op._matmat = counted
    return count


def _pyhessian_density(setup: Setup, config: Config) -> tuple[Any, int]:
    import pyhessian  # noqa: F401 - the module is in sys.modules

    module: Any = sys.modules["pyhessian.hessian"]
    modes = [(m, m.training) for m in setup.model.modules()]
    original, count = module.hessian_vector_product, [0]

    def counted(*args: Any) -> Any:
        count[0] += 1
        return original(*args)
    module.hessian_vector_product = counted
    try:
        ph = module.hessian(setup.model, setup.loss_fn, data=(setup.x, setup.y), cuda=False)
        nodes, weights = ph.density(iter=config.steps, n_v=config.starts)
    finally:
        module.hessian_vector_product = original
        for m, flag in modes:  # PyHessian calls model.eval() silently
            m.training = flag
        setup.model.zero_grad(set_to_none=True)
    return SpectralDensity(np.asarray(nodes), np.asarray(weights), count[0] + 1), count[0] + 1


def _moments(result: Any) -> tuple[float, float]:
    """(tr H/D, tr H²/D) of a quadrature (nodes/weights) or of a gridded density (trapezoid rule)."""
    if isinstance(result, SpectralDensity):
        return result.moment(1)[0], result.moment(2)[0]
    grid, density = result
    mass = np.trapezoid(density, grid)
    return float(np.trapezoid(grid * density, grid) / mass), float(np.trapezoid(grid ** 2 * density, grid) / mass)


def _density_rows(small: Setup, big: Setup, truth: np.ndarray, config: Config, ctx) -> list[dict]:
    rows = []
    for name in _density_methods(small, config):
        try:
            result, _ = _density_methods(small, config)[name]()
            m1, m2 = _moments(result)
            ctx.check()
            (_, products), seconds = median_seconds(_density_methods(big, config)[name], config.rounds)
        except Exception as err:  # noqa: BLE001 - a peer that fails here is reported, not fatal
            if isinstance(err, KeyboardInterrupt):
                raise
            rows.append(_row("density", name, note=f"fails: {type(err).__name__}: {str(err).splitlines()[0][:80]}"))
            continue
        rows.append(_row("density", name, products=products, seconds=seconds,
                         m1=abs(m1 - truth[1]) / abs(truth[1]), m2=abs(m2 - truth[2]) / abs(truth[2]),
                         target="≤ 1000 products, ≤ 20 s" if name.startswith("driftlab") else ""))
        ctx.check()
    return rows


def _row(task: str, method: str, *, products: float = math.nan, seconds: float = math.nan, m1: float = math.nan,
         m2: float = math.nan, target: str = "", note: str = "") -> dict:
    return {"task": task, "method": method, "products": products, "seconds": round(seconds, 3),
            "rel. error tr H/D (small)": m1, "rel. error tr H²/D (small)": m2, "target": target, "note": note}


def _plane_rows(setup: Setup, config: Config, ctx) -> list[dict]:
    obj = setup.obj
    theta = setup.theta
    n = config.plane
    d1 = filter_normalized_direction(obj, theta, seed=1)
    d2 = filter_normalized_direction(obj, theta, seed=2)
    axis = np.linspace(-1.0, 1.0, n)
    batched, t_batched = median_seconds(lambda: loss_plane(obj, theta, d1, d2, axis, axis), config.rounds)
    ctx.check()

    def one_at_a_time() -> np.ndarray:
        return np.array([[float(obj.loss(theta + a * d1 + b * d2)) for b in axis] for a in axis])
    looped, t_looped = median_seconds(one_at_a_time, 1)
    gap = float(np.max(np.abs(batched.values - looped) / np.maximum(np.abs(looped), 1e-30)))
    return [_row("plane", f"driftlab loss_plane (batched), {n}×{n}", products=n * n, seconds=t_batched,
                 target="≤ 10 s", note=f"max rel. difference to the loop {gap:.1e}"),
            _row("plane", f"Objective.loss one point at a time, {n}×{n}", products=n * n, seconds=t_looped,
                 note=f"batched is {t_looped / t_batched:.1f}× faster")]


def _trace_methods(setup: Setup, config: Config) -> dict[str, Callable[[int], tuple[float, int]]]:
    """name → a call (seed) returning (estimate, products)."""
    m = config.matvecs

    def ours(method: str) -> Callable[[int], tuple[float, int]]:
        def call(seed: int) -> tuple[float, int]:
            t = hessian_trace(setup.obj, setup.theta, m, method, seed=seed)
            return t.value, t.matvecs
        return call
    methods = {"driftlab hutch++": ours("hutch++"), "driftlab hutchinson": ours("hutchinson")}
    if "curvlinops" in setup.peers:
        import curvlinops

        for name in ("hutchpp_trace", "hutchinson_trace", "xtrace"):
            budget = m - m % 2 if name == "xtrace" else m  # XTrace needs an even number of products
            methods[f"curvlinops {name}"] = _curvlinops_trace(setup, getattr(curvlinops, name), budget)
    if "pyhessian" in setup.peers:
        methods["pyhessian trace (maxIter=100, tol=1e-3)"] = lambda seed: _pyhessian_trace(setup, seed)
    return methods


def _curvlinops_trace(setup: Setup, estimator: Callable[..., Tensor], m: int) -> Callable[[int], tuple[float, int]]:
    def call(seed: int) -> tuple[float, int]:
        torch.manual_seed(seed)
        op = setup._curvlinops()
        count = _count_columns(op)
        return float(estimator(op, m)) * setup.curvlinops_scale, count[0]
    return call


def _pyhessian_trace(setup: Setup, seed: int) -> tuple[float, int]:
    import pyhessian  # noqa: F401

    module: Any = sys.modules["pyhessian.hessian"]
    modes = [(m, m.training) for m in setup.model.modules()]
    torch.manual_seed(seed)
    try:
        ph = module.hessian(setup.model, setup.loss_fn, data=(setup.x, setup.y), cuda=False)
        samples = ph.trace()
    finally:
        for m, flag in modes:
            m.training = flag
        setup.model.zero_grad(set_to_none=True)
    return float(np.mean(samples)), len(samples) + 1  # + the gradient it builds first


def _trace_rows(setup: Setup, truth: float, truth_error: float | None, config: Config, ctx) -> list[dict]:
    methods = _trace_methods(setup, config)
    estimates: dict[str, list[float]] = {name: [] for name in methods}
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    products: dict[str, int] = {}
    failed: dict[str, str] = {}
    for seed in range(config.repeats):  # interleaved: every method once per seed
        for name, call in methods.items():
            if name in failed:
                continue
            try:
                start = time.perf_counter()
                value, products[name] = call(seed)
                seconds[name].append(time.perf_counter() - start)
                estimates[name].append(value)
            except Exception as err:  # noqa: BLE001 - reported in the table
                if isinstance(err, KeyboardInterrupt):
                    raise
                failed[name] = f"fails: {type(err).__name__}: {str(err).splitlines()[0][:80]}"
            ctx.check()
    exact = "exact (dense)" if truth_error is None else f"reference {truth:.2f} ± {truth_error:.2f}"
    rows = []
    for name in methods:
        values = np.asarray(estimates[name]) if estimates[name] else np.full(1, math.nan)
        rows.append({"model": f"{setup.anchor.name} (D = {setup.obj.dim:,})", "method": name, "truth": exact,
                     "mean estimate": float(values.mean()),
                     "mean rel. error": float(np.mean(np.abs(values - truth)) / abs(truth)),
                     "spread (sd) / truth": float(values.std(ddof=1) / abs(truth)) if len(values) > 1 else math.nan,
                     "products": products.get(name, math.nan),
                     "median s": round(statistics.median(seconds[name]), 3) if seconds[name] else math.nan,
                     "note": failed.get(name, "")})
    return rows


def plot(out: Path, figures: Path) -> list[Path]:
    """Benchmarks draw no figure: print the saved tables."""
    return print_benchmark(out, "bench_hessian_kit_density") + print_benchmark(out, "bench_hessian_kit_trace")


if __name__ == "__main__":
    sys.exit(command_line("bench-hessian-kit"))
