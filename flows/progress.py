"""Progress output for long calls: a tqdm bar on stderr, or a line on stdout at most once a minute.

Every runner takes ``progress`` (see :data:`Progress`); nothing in driftlab runs for minutes without showing it.
"""
from __future__ import annotations

import time
from time import monotonic


class _NoBar:
    def update(self, n: float = 1) -> None:
        pass

    def set_postfix(self, **_: object) -> None:
        pass

    def close(self) -> None:
        pass


Progress = bool | None | str
"""``True``: a bar; ``None``: a bar once a call has run 2 s; ``False``: nothing; ``"log"``: a line on stdout at
most once a minute (for output that goes to a log file, where a bar would be one endless line)."""


LOG_EVERY = 60.0


class _LogLines:
    """Progress as occasional stdout lines: "driftlab [HH:MM:SS] GD: 120/300 (40%), 1.1 min, ETA 1.6 min".

    The ETA divides the work left by the rate *since the last line*, not the run's mean rate: a run whose steps
    grow dearer (the central flow slows from 230 to 75 steps a minute as critical directions appear) gets an
    estimate from its current pace.
    """

    def __init__(self, total: float, desc: str) -> None:
        self.total = total
        self.desc = desc
        self.n = 0.0
        self.n_last = 0.0
        self.postfix = ""
        self.start = self.last = monotonic()

    def update(self, n: float = 1) -> None:
        self.n += n
        self._maybe_print()

    def set_postfix(self, refresh: bool = True, **values: object) -> None:
        self.postfix = "".join(f", {k}={v}" for k, v in values.items())
        self._maybe_print()

    def _maybe_print(self) -> None:
        now = monotonic()
        if now - self.last >= LOG_EVERY:
            share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
            line = f"{self.desc}: {self.n:g}/{self.total:g}{share}, {(now - self.start) / 60:.1f} min"
            eta = eta_seconds(self.total - self.n, self.n - self.n_last, now - self.last)
            if eta is not None:
                line += f", ETA {eta / 60:.1f} min"
            self.last = now
            self.n_last = self.n
            progress_line(line + self.postfix)

    def close(self) -> None:
        pass


def eta_seconds(left: float, done: float, seconds: float) -> float | None:
    """Seconds to finish ``left`` units at the recent pace ``done`` units in ``seconds`` (None: no pace yet)."""
    if not (done > 0 and seconds > 0) or left < 0:
        return None
    return left * seconds / done


def progress_line(message: str) -> None:
    """One progress line on stdout, flushed: "driftlab [HH:MM:SS] message"."""
    print(f"driftlab [{time.strftime('%H:%M:%S')}] {message}", flush=True)


def check_progress(progress: object) -> Progress:
    """``progress`` as given when it is one of :data:`Progress`'s values, else a ValueError naming them."""
    if progress is True or progress is False or progress is None or progress == "log":
        return progress
    raise ValueError(f"progress must be True, False, None or 'log', got {progress!r}")


def progress_bar(total: float, enabled: Progress, desc: str):
    """A tqdm bar on stderr; ``enabled=None`` shows it only once the loop has run for 2 s (see :data:`Progress`)."""
    enabled = check_progress(enabled)
    if enabled is False:
        return _NoBar()
    if enabled == "log":
        return _LogLines(total, desc)
    from tqdm.auto import tqdm

    auto = enabled is None  # quiet for short calls, and at most one line a second in a log
    return tqdm(total=round(total, 6), desc=desc, leave=False, delay=2.0 if auto else 0.0,
                mininterval=1.0 if auto else 0.1)
