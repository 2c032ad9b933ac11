"""The `driftlab` command line: list, show, run and plot experiments.

    driftlab list
    driftlab show NAME
    driftlab run NAME [--set key=value ...] [--out DIR] [--overwrite] [--device cpu|cuda] [--seed N] [--quiet]
    driftlab run NAME --resume DIR
    driftlab run NAME --seeds 0,1,2 [...]   (one run per seed in DIR/seed-N; tables summarised over seeds)
    driftlab plot RESULTS_DIR

Experiments save their work in units (one learning rate, one method, …); the
manifest lists the finished units, the seed each one used and the SHA-256 of
every file each wrote. Ctrl-C, SIGTERM or SIGHUP stops the run after saving
what is finished (status ``interrupted``; later signals only repeat the request,
and never cut a manifest write in half); ``--resume DIR`` checks the finished
units (a damaged one is computed again), skips the intact ones and computes
the rest with the same config and seeds, so the final results equal an
uninterrupted run's. Resume works with the same launch command under torchrun.

A results folder has one owner: a run holds a lock on it, and a fresh run
refuses a non-empty folder unless ``--overwrite`` is given. Temporary files left
by a killed write are removed by the next run or resume.

Progress: bars on a terminal; when stderr is not a terminal (a log file, a
batch job) lines on stdout instead, with the time: one per unit started and
finished (with the folder) and, inside a long GD run or flow, one a minute.
``--quiet`` silences both.

Exit status 0 on success, 2 on bad input (one line on stderr, no traceback).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import signal
import sys
import tempfile
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import torch

from analysis.plots import VENUES
from experiments.cli import folder, registry, seeds
from experiments.cli.common import (
    FIGURES,
    RESULTS_FORMAT,
    ConfigError,
    apply_overrides,
    read_json,
    resolve_device,
    top_level_outputs,
    write_json,
    write_manifest,
)
from experiments.cli.context import RunContext, StopSignals, log_to_stdout
from experiments.cli.figures import plot_trajectories


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        raise SystemExit(_fail(f"{self.prog}: {message}"))


def _fail(message: str) -> int:
    print(f"driftlab: error: {message}", file=sys.stderr)
    return 2


def _folder_argument(text: str) -> Path:
    """A folder named on the command line; an empty name (which would mean the current directory) is refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a folder (an empty name would mean the current directory)")
    return Path(text)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="driftlab", description="Continuous-time analysis of gradient descent: "
                     "reproduce figures and benchmarks.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("list", help="name and description of every experiment")
    show = sub.add_parser("show", help="an experiment's settings: types, defaults, help, runtime of the defaults")
    show.add_argument("name", help="experiment name (see `driftlab list`)")
    run = sub.add_parser("run", help="run an experiment, save results, draw its figures")
    run.add_argument("name", help="experiment name (see `driftlab list`)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config field (repeatable)")
    run.add_argument("--out", type=_folder_argument, default=None, help="results folder (default results/NAME)")
    run.add_argument("--figures", type=Path, default=FIGURES, help="where figures go (default figures/)")
    run.add_argument("--device", default="cpu", help="cpu or cuda")
    run.add_argument("--seed", type=_seed_argument, default=None,
                     help="random seed in [0, 2**32 - 1] (default 0; recorded in the manifest)")
    run.add_argument("--seeds", default=None, metavar="LIST",
                     help="run once per seed (0,1,2 or 0-4) into OUT/seed-N and summarise the tables over seeds")
    run.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")
    run.add_argument("--resume", type=Path, default=None, metavar="DIR",
                     help="continue an interrupted run in DIR (its config and seed are reused)")
    run.add_argument("--overwrite", action="store_true",
                     help="replace the results in a non-empty --out folder (default: refuse)")
    plot = sub.add_parser("plot", help="redraw figures from a results folder without recomputing, or draw saved "
                                       "trajectories (Trajectory.save files)")
    plot.add_argument("results", type=Path, nargs="+",
                      help="a results folder, or one or more saved trajectories (NAME, NAME.npz or NAME.json)")
    plot.add_argument("--figures", type=Path, default=FIGURES)
    plot.add_argument("--metric", default="sharpness",
                      help="trajectories: the curvature series of the EoS figure (default sharpness)")
    plot.add_argument("--venue", default=None, choices=sorted(VENUES),
                      help="trajectories: size the figure for this venue's template")
    plot.add_argument("--column", default=None, choices=("single", "double"),
                      help="trajectories with --venue: one column or both (default: the page's text width)")
    plot.add_argument("--name", default=None, help="trajectories: the figure's file stem (default from the first)")
    board = sub.add_parser("tensorboard", help="export saved trajectories (a results folder or files) to TensorBoard "
                                               "event files (needs the tensorboard extra)")
    board.add_argument("source", type=Path, help="a results folder, or a saved trajectory (NAME, NAME.npz)")
    board.add_argument("--logdir", type=Path, required=True, help="where the event files go (one run per trajectory)")
    return parser


def _export_tensorboard(source: Path, logdir: Path) -> int:
    from experiments.cli.tensorboard import export_results, export_trajectory
    from flows import Trajectory, TrajectoryFileError

    try:
        if source.is_dir():
            names = export_results(source, logdir)
        else:
            export_trajectory(Trajectory.load(source), logdir / source.with_suffix("").name)
            names = [source.with_suffix("").name]
    except (ImportError, ValueError, OSError, TrajectoryFileError) as err:
        return _fail(str(err))
    print(f"tensorboard: {len(names)} run(s) in {logdir}: {', '.join(names[:5])}{' …' if len(names) > 5 else ''}")
    return 0


def main(argv: list[str] | None = None, *, restore_signals: bool | None = None) -> int:
    """The CLI. ``argv=None`` reads ``sys.argv`` as a program does: then the signal handlers stay installed
    (recording only, then ignored) until the process exits, so a late signal of a storm cannot kill it after its
    work is saved; a call with ``argv`` (from Python) restores the caller's handlers, unless ``restore_signals``
    says otherwise."""
    if restore_signals is None:
        restore_signals = argv is not None
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:
        return int(stop.code or 0)
    if args.command == "list":
        width = max(map(len, registry.names()))
        for name in registry.names():
            print(f"{name:{width}s}  {registry.entry(name).description}")
        return 0
    if args.command == "show":
        try:
            print("\n".join(registry.describe(args.name)))
        except ValueError as err:
            return _fail(str(err))
        return 0
    if args.command == "tensorboard":
        return _export_tensorboard(args.source, args.logdir)
    if args.command == "plot":
        if len(args.results) > 1 or not args.results[0].is_dir():
            return plot_trajectories(args.results, args.figures, metric=args.metric, venue=args.venue,
                                     column=args.column, name=args.name)
        if (args.results[0] / seeds.PLAN).exists():
            return _plot_seeds(args.results[0], args.figures)
        return _plot(args.results[0], args.figures)
    if args.seeds is not None or (args.resume is not None and (args.resume / seeds.PLAN).exists()):
        return _run_seeds(args, restore_signals)
    return _run(args, restore_signals)


def _seed_plan(args) -> tuple[Path, list[int], list[str]]:
    """(results folder, seeds, overrides) of a multi-seed run: from --seeds or from the folder's plan on resume."""
    if args.resume is not None:
        if args.overrides or args.out is not None or args.seed is not None or args.overwrite or args.seeds:
            raise ConfigError("--resume reuses the saved plan: drop --set, --out, --seed, --seeds and --overwrite")
        plan = seeds.read_plan(args.resume)
        if plan["experiment"] != args.name:
            raise ConfigError(f"--resume {args.resume}: it holds a {plan['experiment']!r} run, not {args.name!r}")
        return args.resume, [_check_seed(s, "seeds") for s in plan["seeds"]], list(plan.get("overrides", []))
    if args.seed is not None:
        raise ConfigError("--seed and --seeds exclude each other")
    out = args.out or Path("results") / args.name
    apply_overrides(registry.get(args.name).Config(), args.overrides).validate()  # refuse bad input before any run
    if out.exists() and any(p.name != folder.LOCK_NAME for p in out.iterdir()):
        if not args.overwrite:
            raise ConfigError(f"--out {out} is not empty; continue it with --resume {out}, pass --overwrite to "
                              "replace it, or choose another --out")
        if not (out / seeds.PLAN).is_file():
            raise ConfigError(f"--overwrite: {out} holds no driftlab {seeds.PLAN}; refusing to delete what "
                              "driftlab did not write")
        _seed_outputs(out)  # refuses a plan that is not driftlab's
    return out, seeds.parse_seeds(args.seeds), list(args.overrides)


def _seed_outputs(out: Path) -> set[str]:
    """What a run over seeds recorded in ``out/seeds.json`` wrote: its outputs, its seeds' folders, its figures."""
    plan = folder.driftlab_record(out / seeds.PLAN, "plan")
    return set(plan["outputs"]) | {seeds.seed_folder(out, s).name for s in plan["seeds"]} | {"figures"}


def _empty_but_lock(out: Path) -> None:
    """Remove what the run over seeds recorded in the folder's plan wrote, keeping the lock this run holds (and
    refusing, deleting nothing, when anything else is there)."""
    folder.clear_outputs(out, seeds.PLAN, _seed_outputs(out))


def _run_seeds(args, restore_signals: bool) -> int:
    """One run per seed (each resumable on its own), then the tables summarised over seeds and the figures."""
    lock = None
    try:
        module = registry.get(args.name)
        out, plan, overrides = _seed_plan(args)
        folder.check_writable_folder(out, "--out")
        lock = folder.FolderLock(out)  # one multi-seed run owns the folder (each seed's run locks its own)
        lock.acquire()
        if args.overwrite:
            _empty_but_lock(out)
        seeds.write_plan(out, args.name, plan, overrides, args.device)
    except (ConfigError, ValueError, TypeError, FileNotFoundError, OSError) as err:
        if lock is not None:
            lock.release(discard=True)
        return _fail(str(err))
    stopped = {"flag": False}

    def record(signum, frame) -> None:  # between seeds: stop before the next one
        stopped["flag"] = True
    previous = {sig: signal.signal(sig, record) for sig in StopSignals.SIGNALS}
    try:
        for seed in plan:
            target = seeds.seed_folder(out, seed)
            manifest = target / "manifest.json"
            status = read_json(manifest).get("status") if manifest.exists() else None
            if status == "complete":
                continue
            if stopped["flag"]:
                return _seeds_interrupted(args.name, out)
            one = argparse.Namespace(**{**vars(args), "seeds": None, "seed": None if status else seed,
                                        "out": None if status else target, "overrides": [] if status else overrides,
                                        "resume": target if status else None, "overwrite": False,
                                        "figures": out / "figures" / target.name})
            code = _run(one, restore_signals=True)
            if code == 130 or stopped["flag"]:
                return _seeds_interrupted(args.name, out)
            if code != 0:
                return code
        return _summarise_seeds(module, out, [seeds.seed_folder(out, s) for s in plan], args.figures)
    finally:
        lock.release()
        if restore_signals:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        else:
            for sig in previous:
                signal.signal(sig, signal.SIG_IGN)


def _seeds_interrupted(name: str, out: Path) -> int:
    print(f"driftlab: interrupted; finished seeds saved in {out}; continue with `driftlab run {name} --resume {out}`",
          file=sys.stderr)
    return 130


def _summarise_seeds(module, out: Path, folders: list[Path], figures: Path) -> int:
    try:
        seeds.summarise(out, folders)
        seeds.record_outputs(out)
        drawn = (module.plot_seeds(folders, figures) if hasattr(module, "plot_seeds")
                 else module.plot(folders[0], figures))
    except (OSError, ValueError, KeyError) as err:
        return _fail(f"{out}: cannot summarise the seeds ({err}); the runs are complete".replace("\n", " "))
    return _report(out, drawn)


def _plot_seeds(results: Path, figures: Path) -> int:
    try:
        plan = seeds.read_plan(results)
        module = registry.get(plan["experiment"])
        folder.check_writable_folder(figures, "--figures")
    except (FileNotFoundError, ValueError, KeyError, ConfigError) as err:
        return _fail(f"cannot read results in {results}: {err}")
    return _summarise_seeds(module, results, [seeds.seed_folder(results, s) for s in plan["seeds"]], figures)


def _config_from(module, saved: dict[str, Any]):
    """The Config dataclass from a manifest's JSON (lists back to tuples)."""
    hints = typing.get_type_hints(module.Config)
    values = {k: tuple(v) if isinstance(v, list) and typing.get_origin(hints.get(k)) is tuple else v
              for k, v in saved.items() if k in hints}
    config = module.Config(**values)
    config.validate()
    return config


def _run(args, restore_signals: bool) -> int:
    previous: dict[str, Any] = {}
    try:
        module = registry.get(args.name)
        device = resolve_device(args.device)
        timeout = _dist_timeout()
        if args.resume is not None:
            if args.overrides or args.out is not None or args.seed is not None or args.overwrite:
                raise ConfigError("--resume reuses the saved config, seed and folder: "
                                  "drop --set, --out, --seed and --overwrite")
            path = args.resume / "manifest.json"
            previous = folder.validate_manifest(read_json(path), path, for_resume=True)
            if previous["experiment"] != args.name:
                raise ConfigError(f"--resume {args.resume}: it holds a {previous['experiment']!r} run, "
                                  f"not {args.name!r}")
            config = _config_from(module, previous["config"])
            seed, out = _check_seed(previous["seed"], f"{path}: seed"), args.resume
        else:
            config = apply_overrides(module.Config(), args.overrides)
            seed, out = (0 if args.seed is None else args.seed), args.out or Path("results") / args.name
    except (ConfigError, ValueError, TypeError, FileNotFoundError) as err:
        return _fail(str(err))
    rank = _init_distributed(device, timeout)
    bars = rank == 0 and not args.quiet and sys.stderr.isatty()
    lines = rank == 0 and not args.quiet and not bars
    ctx = RunContext(device, seed, True if bars else ("log" if lines else False), args.figures,
                     completed=list(previous.get("completed", [])), seeds=dict(previous.get("seeds", {})),
                     out=out, files={k: dict(v) for k, v in previous.get("files", {}).items()},
                     log=log_to_stdout(out) if lines else None)
    lock = folder.FolderLock(out)
    refusal = None
    if rank == 0:
        refusal = _take_folder(args, out, lock, ctx)
    if not _agree(rank, ctx, refusal):
        return _fail(refusal) if refusal else 2
    if rank != 0:  # only rank 0 writes results and figures and prints; the others compute into a scratch folder
        out = ctx.out = _scratch_copy(rank, out if args.resume is not None else None)
        ctx.figures = out / "figures"
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as this rank's process
    torch.manual_seed(seed)
    stop = StopSignals(ctx)
    started, earlier = time.monotonic(), float(previous.get("seconds", 0.0))

    def manifest(status: str) -> None:
        with stop.shield():
            write_manifest(out, args.name, config, status, seed, device=str(device), completed=ctx.completed,
                           seeds=ctx.seeds, files=ctx.files, seconds=round(earlier + time.monotonic() - started, 1))

    ctx.on_progress = lambda: manifest("running")
    stop.install()
    try:
        status, error = _compute(module, config, out, ctx, manifest)
        try:
            manifest(status)
        except OSError as err:
            return _fail(f"{args.name}: could not record the run's status in {out}: {err}")
        if rank != 0:
            shutil.rmtree(out.parent, ignore_errors=True)  # the rank's whole scratch folder
            return 0 if status == "complete" else (130 if status == "interrupted" else 2)
        if status == "interrupted":
            print(f"driftlab: interrupted; finished units saved in {out}; continue with "
                  f"`driftlab run {args.name} --resume {out}`", file=sys.stderr)
            return 130
        if error is not None:
            if os.environ.get("DRIFTLAB_DEBUG") or not isinstance(error, (ValueError, TypeError, OSError,
                                                                           MemoryError)):
                raise error  # a bug or a failed rank: the manifest says failed, the traceback says where
            return _fail(f"{args.name}: {error} (the run stopped; DRIFTLAB_DEBUG=1 shows the traceback)"
                         .replace("\n", " "))
        return _draw(module, args.name, out, ctx, lambda: manifest(status))
    finally:
        stop.raised = True  # from here on a signal is only recorded
        if restore_signals:
            stop.restore()
        else:
            stop.ignore()
        lock.release()


def _compute(module, config, out: Path, ctx: RunContext, manifest: Callable[[str], None]
             ) -> tuple[str, BaseException | None]:
    """Run the experiment; its final status and the error that ended it (None when it completed)."""
    try:
        manifest("running")
        ctx.check()
        module.run(config, out, ctx)
        ctx.check()
        return "complete", None
    except KeyboardInterrupt:
        return "interrupted", None
    except Exception as err:  # noqa: BLE001 - reported by the caller, after the manifest says failed
        # an error raised while a stop signal unwinds the run is that signal's doing, not a failure
        if isinstance(err, RuntimeError) and "can't allocate memory" in str(err):  # torch's allocator
            err = MemoryError("the run needs more memory than this machine has (torch could not allocate "
                              f"{str(err).split('allocate')[-1].strip(' .:')}); choose a smaller config")
        return ("interrupted", None) if ctx.stop_requested else ("failed", err)


def _draw(module, name: str, out: Path, ctx: RunContext, record: Callable[[], None] | None = None) -> int:
    """Draw the figures of a complete run (then ``record`` the manifest again: drawing may write tables into
    ``out``); an interrupt or a write error here leaves the results complete."""
    redraw = f"the results in {out} are complete; draw the figures with `driftlab plot {out}`"
    try:
        ctx.check()
        figures = module.plot(out, ctx.figures)
        if record is not None:
            record()
    except KeyboardInterrupt:
        print(f"driftlab: interrupted while drawing figures; {redraw}", file=sys.stderr)
        return 130
    except (OSError, ValueError, KeyError) as err:
        return _fail(f"{name}: cannot draw figures ({err}); {redraw}".replace("\n", " "))
    return _report(out, figures)


def _report(out: Path, figures: list[Path]) -> int:
    """Say where the results and figures are; exit status 0."""
    print(f"results: {out}")
    for path in figures:
        print(f"figure:  {path}")
    return 0


def _take_folder(args, out: Path, lock: folder.FolderLock, ctx: RunContext) -> str | None:
    """Rank 0: check the folders, lock ``out``, empty or verify it, clear litter; a one-line refusal or None."""
    try:
        folder.check_writable_folder(out, "--resume" if args.resume is not None else "--out")
        folder.check_writable_folder(args.figures, "--figures")
        lock.acquire()
        if args.resume is None:
            folder.prepare_fresh(out, args.overwrite)
        folder.remove_litter(out, recursive=True)
        folder.remove_litter(args.figures, recursive=False)
        ctx.verify()
    except (ConfigError, OSError) as err:
        lock.release(discard=True)
        return str(err)
    return None


def _agree(rank: int, ctx: RunContext, refusal: str | None) -> bool:
    """Under torchrun, rank 0's verdict on the folder and its list of finished units reach every rank."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return refusal is None
    box: list[Any] = [refusal, ctx.completed, ctx.files]
    dist.broadcast_object_list(box, src=0)
    refusal, ctx.completed, ctx.files = box
    return refusal is None


def _scratch_copy(rank: int, results: Path | None) -> Path:
    """A private folder for a rank ≥ 1; on resume a copy of rank 0's results, so finished units load there too."""
    if results is not None and not results.is_dir():
        raise SystemExit(_fail(f"rank {rank} cannot see the results folder {results} to resume from; "
                               f"resume needs a folder every rank can read"))
    target = Path(tempfile.mkdtemp(prefix=f"driftlab-rank{rank}-")) / "results"
    if results is None:
        target.mkdir()
        return target

    def copy(src: str, dst: str) -> None:
        with contextlib.suppress(FileNotFoundError):  # a temporary file renamed by rank 0 meanwhile
            shutil.copy2(src, dst)

    shutil.copytree(results, target, copy_function=copy,
                    ignore=shutil.ignore_patterns("*.tmp", folder.LOCK_NAME))
    return target


def _check_seed(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2 ** 32:
        raise ConfigError(f"{name} must be an integer in [0, 2**32 - 1], got {value!r}")
    return value


def _seed_argument(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**32 - 1], got {text!r}") from None
    try:
        return _check_seed(value, "--seed")
    except ConfigError:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**32 - 1], got {text}") from None


def _dist_timeout() -> float:
    """DRIFTLAB_DIST_TIMEOUT (seconds, default 300): a finite number > 0, else a ConfigError."""
    text = os.environ.get("DRIFTLAB_DIST_TIMEOUT", "300")
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"DRIFTLAB_DIST_TIMEOUT must be a finite number of seconds > 0, got {text!r}")
    return value


def _init_distributed(device: torch.device, timeout: float) -> int:
    """Under ``torchrun`` (WORLD_SIZE > 1): join the process group (gloo on CPU, nccl on CUDA) and return the rank.

    Collectives time out after ``timeout`` seconds (DRIFTLAB_DIST_TIMEOUT), so a
    failed rank makes the others fail with an error instead of hanging.
    """
    import datetime

    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    return dist.get_rank()


def _plot(results: Path, figures: Path) -> int:
    try:
        path = results / "manifest.json"
        manifest = folder.validate_manifest(read_json(path), path, for_resume=False)
        module = registry.get(manifest["experiment"])
        folder.check_writable_folder(figures, "--figures")
    except (FileNotFoundError, ValueError, KeyError, ConfigError) as err:
        return _fail(f"cannot read results in {results}: {err}")
    try:
        paths = module.plot(results, figures)
        if manifest.get("format") == RESULTS_FORMAT:  # drawing may write tables into the folder: record them
            write_json(path, {**manifest, "outputs": top_level_outputs(results)})
    except (OSError, ValueError, KeyError) as err:
        return _fail(f"cannot plot {results}: {err}".replace("\n", " "))
    for path in paths:
        print(f"figure:  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
