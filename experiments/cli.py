"""The `driftlab` command line: list, run and plot experiments.

    driftlab list
    driftlab run NAME [--set key=value ...] [--out DIR] [--device cpu|cuda] [--seed N] [--quiet]
    driftlab run NAME --resume DIR
    driftlab plot RESULTS_DIR

Experiments save their work in units (one learning rate, one method, …); the
manifest lists the finished units and the seed each one used. Ctrl-C or SIGTERM
stops the run after saving what is finished (status ``interrupted``);
``--resume DIR`` skips the finished units and computes the rest, with the same
config and seeds, so the final results equal an uninterrupted run's.

Exit status 0 on success, 2 on bad input (one line on stderr, no traceback).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import sys
import tempfile
import typing
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch

from . import registry
from .common import FIGURES, ConfigError, apply_overrides, read_json, resolve_device, write_manifest


T = TypeVar("T")


@dataclass
class RunContext:
    """How an experiment runs: device, seed, progress bars, where figures go, and its finished units."""

    device: torch.device
    seed: int
    progress: bool
    figures: Path
    completed: list[str] = field(default_factory=list)
    seeds: dict[str, int] = field(default_factory=dict)
    stop_requested: bool = False
    on_progress: Callable[[], None] | None = None

    def unit_seed(self, key: str) -> int:
        """The seed of unit ``key``: the run's seed and the key, so a unit's result does not depend on order."""
        return (self.seed * 1_000_003 + zlib.crc32(key.encode())) % 2 ** 31

    def check(self) -> None:
        """Raise KeyboardInterrupt when Ctrl-C/SIGTERM arrived (GD and flows return on it; the run must stop)."""
        if self.stop_requested:
            raise KeyboardInterrupt

    def unit(self, key: str, compute: Callable[[], T], load: Callable[[], T]) -> T:
        """``load()`` when unit ``key`` finished in an earlier (interrupted) run, else seed, ``compute()``, record.

        A unit that was stopped part-way (GD and flows return on Ctrl-C with status
        "interrupted") is not recorded as finished: the run stops here.
        """
        if key in self.completed:
            return load()
        seed = self.unit_seed(key)
        self.seeds[key] = seed
        torch.manual_seed(seed)
        result = compute()
        self.check()
        self.completed.append(key)
        if self.on_progress is not None:
            self.on_progress()
        return result


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        raise SystemExit(_fail(f"{self.prog}: {message}"))


def _fail(message: str) -> int:
    print(f"driftlab: error: {message}", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="driftlab", description="Continuous-time analysis of gradient descent: "
                     "reproduce figures and benchmarks.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("list", help="name and description of every experiment")
    run = sub.add_parser("run", help="run an experiment, save results, draw its figures")
    run.add_argument("name", help="experiment name (see `driftlab list`)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config field (repeatable)")
    run.add_argument("--out", type=Path, default=None, help="results folder (default results/NAME)")
    run.add_argument("--figures", type=Path, default=FIGURES, help="where figures go (default figures/)")
    run.add_argument("--device", default="cpu", help="cpu or cuda")
    run.add_argument("--seed", type=int, default=0, help="random seed (recorded in the manifest)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--resume", type=Path, default=None, metavar="DIR",
                     help="continue an interrupted run in DIR (its config and seed are reused)")
    plot = sub.add_parser("plot", help="redraw figures from a results folder without recomputing")
    plot.add_argument("results", type=Path)
    plot.add_argument("--figures", type=Path, default=FIGURES)
    return parser


def _describe(module) -> str:
    fields = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(module.Config))
    return f"{module.DESCRIPTION}\n    config: {fields}"


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:
        return int(stop.code or 0)
    if args.command == "list":
        for name in registry.names():
            print(f"{name:16s} {registry.get(name).DESCRIPTION}")
        return 0
    if args.command == "plot":
        return _plot(args.results, args.figures)
    return _run(args)


def _config_from(module, saved: dict[str, Any]):
    """The Config dataclass from a manifest's JSON (lists back to tuples)."""
    hints = typing.get_type_hints(module.Config)
    values = {k: tuple(v) if isinstance(v, list) and typing.get_origin(hints.get(k)) is tuple else v
              for k, v in saved.items() if k in hints}
    config = module.Config(**values)
    config.validate()
    return config


def _run(args) -> int:
    previous: dict[str, Any] = {}
    try:
        module = registry.get(args.name)
        device = resolve_device(args.device)
        if args.resume is not None:
            if args.overrides or args.out is not None:
                raise ConfigError("--resume reuses the saved config and folder: drop --set and --out")
            previous = read_json(args.resume / "manifest.json")
            if previous.get("experiment") != args.name:
                raise ConfigError(f"--resume {args.resume}: it holds a {previous.get('experiment')!r} run, "
                                  f"not {args.name!r}")
            config = _config_from(module, previous.get("config", {}))
            seed, out = int(previous.get("seed", 0)), args.resume
        else:
            config = apply_overrides(module.Config(), args.overrides)
            seed, out = args.seed, args.out or Path("results") / args.name
    except (ConfigError, ValueError, TypeError, FileNotFoundError) as err:
        return _fail(str(err))
    rank = _init_distributed(device)
    figures_dir = args.figures
    if rank != 0:  # only rank 0 writes results and figures and prints; the others compute into a scratch folder
        out = Path(tempfile.mkdtemp(prefix=f"driftlab-rank{rank}-"))
        figures_dir = out / "figures"
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as this rank's process
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    ctx = RunContext(device, seed, rank == 0 and not args.quiet and sys.stderr.isatty(), figures_dir,
                     completed=list(previous.get("completed", [])), seeds=dict(previous.get("seeds", {})))

    def manifest(status: str) -> None:
        write_manifest(out, args.name, config, status, seed, device=str(device), completed=ctx.completed,
                       seeds=ctx.seeds)

    ctx.on_progress = lambda: manifest("running")

    def stop(signum, frame) -> None:  # Ctrl-C and SIGTERM: finish writing, then unwind
        ctx.stop_requested = True
        raise KeyboardInterrupt

    handlers = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        manifest("running")
        module.run(config, out, ctx)
        if ctx.stop_requested:
            raise KeyboardInterrupt
    except (ValueError, TypeError) as err:  # bad input that only the computation could detect
        manifest("failed")
        if os.environ.get("DRIFTLAB_DEBUG"):
            raise
        return _fail(f"{args.name}: {err} (the run stopped; DRIFTLAB_DEBUG=1 shows the traceback)".replace("\n", " "))
    except Exception:  # a bug or a failed rank: never leave results that look complete
        manifest("failed")
        raise
    except KeyboardInterrupt:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        manifest("interrupted")
        print(f"driftlab: interrupted; finished units saved in {out}; continue with "
              f"`driftlab run {args.name} --resume {out}`", file=sys.stderr)
        return 130
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    manifest("complete")
    if rank != 0:
        shutil.rmtree(out, ignore_errors=True)
        return 0
    figures = module.plot(out, figures_dir)
    print(f"results: {out}")
    for path in figures:
        print(f"figure:  {path}")
    return 0


def _init_distributed(device: torch.device) -> int:
    """Under ``torchrun`` (WORLD_SIZE > 1): join the process group (gloo on CPU, nccl on CUDA) and return the rank.

    Collectives time out after DRIFTLAB_DIST_TIMEOUT seconds (default 300), so a
    failed rank makes the others fail with an error instead of hanging.
    """
    import datetime

    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=float(os.environ.get("DRIFTLAB_DIST_TIMEOUT", "300")))
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=timeout)
    return dist.get_rank()


def _plot(results: Path, figures: Path) -> int:
    try:
        manifest = read_json(results / "manifest.json")
        module = registry.get(manifest["experiment"])
    except (FileNotFoundError, ValueError, KeyError) as err:
        return _fail(f"cannot read results in {results}: {err}")
    try:
        paths = module.plot(results, figures)
    except (FileNotFoundError, ValueError) as err:
        return _fail(f"cannot plot {results}: {err}")
    for path in paths:
        print(f"figure:  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
