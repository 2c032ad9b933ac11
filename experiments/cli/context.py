"""How an experiment runs: :class:`RunContext` (device, seed, progress, finished units) and the stop handler.

``run(config, out, ctx)`` receives a :class:`RunContext`; it wraps each unit of work in :meth:`RunContext.unit`,
so that a stopped run keeps its finished units and a resume skips them.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from experiments.cli import folder
from flows import Progress
from flows.progress import progress_line

T = TypeVar("T")


def duration_text(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def log_to_stdout(where: Path) -> Callable[[str], None]:
    """Progress lines for runs whose stderr is not a terminal (no bars there): time, folder, message, flushed."""
    def log(message: str) -> None:
        progress_line(f"{where}: {message}")
    return log


@dataclass
class RunContext:
    """How an experiment runs: device, seed, progress bars, where figures go, and its finished units.

    ``files`` maps each finished unit to the SHA-256 of every file it wrote
    under ``out``; a resume recomputes the units whose files were damaged.
    """

    device: torch.device
    seed: int
    progress: Progress  # True: bars (a terminal); "log": a line a minute inside a unit (a log file); False: none
    figures: Path
    completed: list[str] = field(default_factory=list)
    seeds: dict[str, int] = field(default_factory=dict)
    stop_requested: bool = False
    on_progress: Callable[[], None] | None = None
    out: Path | None = None
    files: dict[str, dict[str, str]] = field(default_factory=dict)
    log: Callable[[str], None] | None = None

    def say(self, message: str) -> None:
        """One progress line (used where no progress bars are drawn: output to a log file rather than a terminal)."""
        if self.log is not None:
            self.log(message)

    def unit_seed(self, key: str) -> int:
        """The seed of unit ``key``: the run's seed and the key, so a unit's result does not depend on order."""
        return (self.seed * 1_000_003 + zlib.crc32(key.encode())) % 2 ** 31

    def check(self) -> None:
        """Raise KeyboardInterrupt when a stop signal arrived (GD and flows return on it; the run must stop)."""
        if self.stop_requested:
            raise KeyboardInterrupt

    def unit(self, key: str, compute: Callable[..., T], load: Callable[..., T]) -> T:
        """``load()`` when unit ``key`` finished in an earlier (interrupted) run, else seed, ``compute()``, record.

        A unit that was stopped part-way (GD and flows return on Ctrl-C with status
        "interrupted") is not recorded as finished: the run stops here. A finished
        unit whose files no longer load is recomputed (with a warning).
        """
        self.check()
        if key in self.completed:
            try:
                return load()
            except (OSError, ValueError, KeyError, TypeError) as err:
                print(f"driftlab: warning: finished unit {key} does not load ({err}); computing it again",
                      file=sys.stderr)
                self.completed.remove(key)
                self.files.pop(key, None)
        seed = self.unit_seed(key)
        self.seeds[key] = seed
        torch.manual_seed(seed)
        before = folder.snapshot(self.out) if self.out is not None else {}
        started = time.monotonic()
        self.say(f"unit {key} started")
        result = compute()
        self.check()
        self.say(f"unit {key} finished in {duration_text(time.monotonic() - started)}")
        if self.out is not None:
            written = folder.written_since(self.out, before)
            for other in self.files.values():  # the last unit to write a file owns it
                for rel in written:
                    other.pop(rel, None)
            self.files[key] = written
        self.completed.append(key)
        if self.on_progress is not None:
            self.on_progress()
        return result

    def verify(self) -> list[str]:
        """Drop the finished units whose recorded files are missing or changed; one warning line each."""
        dropped = []
        for key in list(self.completed):
            why = folder.damaged(self.out, self.files.get(key, {})) if self.out is not None else None
            if why is not None:
                print(f"driftlab: warning: finished unit {key} is damaged ({why}); it will be computed again",
                      file=sys.stderr)
                self.completed.remove(key)
                self.files.pop(key, None)
                dropped.append(key)
        return dropped


class StopSignals:
    """The handler of SIGINT, SIGTERM and SIGHUP: the first signal unwinds (KeyboardInterrupt), later ones only
    record; inside :meth:`shield` (manifest writes) nothing unwinds, so a write is never cut in half."""

    SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.shielded = 0
        self.raised = False
        self.previous: dict[int, Any] = {}

    def __call__(self, signum, frame) -> None:
        self.ctx.stop_requested = True
        if not self.raised and not self.shielded:
            self.raised = True
            raise KeyboardInterrupt

    def install(self) -> None:
        self.previous = {sig: signal.signal(sig, self) for sig in self.SIGNALS}

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def ignore(self) -> None:
        """Ignore later stop signals. A Python handler is not enough once the run is over: at interpreter exit
        CPython resets every signal with a Python handler to SIG_DFL, so a late SIGTERM of a storm would kill the
        process (status -15) after it saved its work and chose its exit status; SIG_IGN survives the exit."""
        for sig in self.previous:
            signal.signal(sig, signal.SIG_IGN)

    @contextlib.contextmanager
    def shield(self) -> Iterator[None]:
        self.shielded += 1
        try:
            yield
        finally:
            self.shielded -= 1
