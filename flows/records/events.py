"""The one event type of driftlab: what happened at a step (:class:`Event`) or over a stretch (:class:`Segment`).

GD, the integrator and every detector record events through these classes, so
a saved record round-trips every field: ``from_dict(e.to_dict()) == e``. A
record is flat JSON: the structural fields (``kind``, ``step``, ``time`` for an
event; ``kind``, ``start``, ``end``, ``start_time``, ``end_time`` for a segment)
beside the evidence, e.g. ``{"kind": "divergence", "step": 7, "time": 0.7,
"loss": inf, "last_finite_step": 6, "reason": "non-finite"}``. Non-finite
numbers are saved as None (JSON has no inf/NaN).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

EVENT_FIELDS = ("kind", "step", "time")
SEGMENT_FIELDS = ("kind", "start", "end", "start_time", "end_time")


def _check_evidence(evidence: dict[str, Any], reserved: tuple[str, ...]) -> None:
    clash = sorted(set(evidence) & set(EVENT_FIELDS + SEGMENT_FIELDS + ("evidence",)))
    if clash:
        raise ValueError(f"evidence keys {clash} are reserved for the record's own fields {reserved}")


@dataclass
class Event:
    """Something that happened at step ``step`` (time ``time``), with the numbers that show it (``evidence``)."""

    kind: str
    step: int
    time: float
    evidence: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_evidence(self.evidence, EVENT_FIELDS)

    def to_dict(self) -> dict[str, Any]:
        """The event as a JSON-ready dict (``from_dict`` reads it back)."""
        return clean({"kind": self.kind, "step": int(self.step), "time": float(self.time), **self.evidence})


@dataclass
class Segment:
    """A stretch of steps ``start..end`` (inclusive), times ``start_time..end_time``."""

    kind: str
    start: int
    end: int
    start_time: float
    end_time: float
    evidence: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_evidence(self.evidence, SEGMENT_FIELDS)

    @property
    def length(self) -> int:
        """Steps covered, end − start + 1."""
        return self.end - self.start + 1

    def to_dict(self) -> dict[str, Any]:
        """The segment as a JSON-ready dict (``from_dict`` reads it back)."""
        return clean({"kind": self.kind, "start": int(self.start), "end": int(self.end),
                      "start_time": float(self.start_time), "end_time": float(self.end_time), **self.evidence})


def from_dict(record: dict[str, Any]) -> Event | Segment:
    """The Event or Segment a record describes; every other key becomes evidence (nothing is dropped).

    Records of earlier versions, with their evidence nested under ``"evidence"``, load too.
    """
    evidence = dict(record.get("evidence") or {})
    if "start" in record and "end" in record:
        evidence.update({k: v for k, v in record.items() if k not in SEGMENT_FIELDS + ("evidence",)})
        return Segment(record["kind"], int(record["start"]), int(record["end"]), _number(record["start_time"]),
                       _number(record["end_time"]), evidence)
    evidence.update({k: v for k, v in record.items() if k not in EVENT_FIELDS + ("evidence",)})
    return Event(record["kind"], int(record["step"]), _number(record["time"]), evidence)


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def clean(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python numbers, NaN/inf to None."""
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
