"""Event records for detectors: the one event type of driftlab (:mod:`flows.records.events`), and mask helpers.

An :class:`Event` happens at one step (a first crossing, a loss spike); a
:class:`Segment` spans steps ``start..end`` inclusive (a corridor, a hovering
regime). Both carry their times and an ``evidence`` dict; GD and the flows
record their divergence, budget and interrupt events with the same classes, so
:func:`from_dict` round-trips every field of every saved event.
"""
from __future__ import annotations

from flows.records.events import Event, Segment, from_dict

__all__ = ["Event", "Segment", "from_dict", "segments_from_mask"]


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
