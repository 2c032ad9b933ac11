"""The `driftlab` command line: list, run and plot experiments.

    driftlab list
    driftlab run NAME [--set key=value ...] [--out DIR] [--device cpu|cuda] [--seed N] [--quiet]
    driftlab plot RESULTS_DIR

Exit status 0 on success, 2 on bad input (one line on stderr, no traceback).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from . import registry
from .common import FIGURES, ConfigError, apply_overrides, read_json, resolve_device, write_manifest


@dataclass
class RunContext:
    """How an experiment runs: device, seed, progress bars, where figures go."""

    device: torch.device
    seed: int
    progress: bool
    figures: Path


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


def _run(args) -> int:
    try:
        module = registry.get(args.name)
        config = apply_overrides(module.Config(), args.overrides)
        device = resolve_device(args.device)
    except (ConfigError, ValueError, TypeError) as err:
        return _fail(str(err))
    out = args.out or Path("results") / args.name
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    ctx = RunContext(device, args.seed, not args.quiet and sys.stderr.isatty(), args.figures)
    write_manifest(out, args.name, config, "running", args.seed, device=str(device))
    try:
        module.run(config, out, ctx)
    except KeyboardInterrupt:
        write_manifest(out, args.name, config, "interrupted", args.seed, device=str(device))
        print(f"driftlab: interrupted; partial results in {out}", file=sys.stderr)
        return 130
    write_manifest(out, args.name, config, "complete", args.seed, device=str(device))
    figures = module.plot(out, args.figures)
    print(f"results: {out}")
    for path in figures:
        print(f"figure:  {path}")
    return 0


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
