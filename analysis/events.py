"""Typed event records that detectors return: plain dataclasses, serializable with a trajectory.

An :class:`Event` happens at one step (a first crossing, a loss spike); a
:class:`Segment` spans steps ``start..end`` inclusive (a corridor, a hovering
regime). Both carry their times (so they can be drawn on any time axis) and
an ``evidence`` dict of the numbers that triggered them.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Event:
    """Something that happened at step ``step`` (time ``time``)."""

    kind: str
    step: int
    time: float
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))


@dataclass
class Segment:
    """A stretch of steps ``start..end`` (inclusive), times ``start_time..end_time``."""

    kind: str
    start: int
    end: int
    start_time: float
    end_time: float
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))


def from_dict(record: dict[str, Any]) -> Event | Segment:
    """Rebuild an Event or Segment from :meth:`to_dict` output (e.g. ``Trajectory.events``)."""
    if "start" in record and "end" in record:
        return Segment(record["kind"], int(record["start"]), int(record["end"]), float(record["start_time"]),
                       float(record["end_time"]), dict(record.get("evidence", {})))
    return Event(record["kind"], int(record["step"]), float(record["time"]), dict(record.get("evidence", {})))


def _clean(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python numbers, NaN/inf to None."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def segments_from_mask(mask, times, kind: str, min_length: int = 1) -> list[tuple[int, int]]:
    """Maximal runs of True in ``mask`` as (start, end) inclusive index pairs of length ≥ min_length."""
    runs, start = [], None
    for i, flag in enumerate(list(mask) + [False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            if i - start >= min_length:
                runs.append((start, i - 1))
            start = None
    return runs
