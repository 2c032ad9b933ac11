"""driftlab's figures: the gallery's house style and venue presets, and figures of the objects a user holds.

* :mod:`.house` — the style (Okabe–Ito colours, labels from the flow records), ``style(venue=…, column=…)``,
  small drawing helpers used by the experiments (``mean_band``, ``contour``, ``subplots``).
* :mod:`.runs` — ``eos`` (a GD Trajectory or several), ``comparison`` (a :class:`flows.Comparison`),
  ``central_flow`` (a central-flow Trajectory, with GD beside it).
* :mod:`.curvature` — ``density`` / ``spectral_density`` (SLQ density with its error band), ``loss_plane``.

Every figure function returns the Figure, accepts ``ax=`` and writes nothing.
"""
import matplotlib.pyplot as plt  # noqa: F401  (plots.plt: the experiments build legend handles with it)

from .curvature import density, loss_plane, spectral_density
from .house import (
    CYCLE,
    METHOD_COLORS,
    METHOD_LABELS,
    OKABE_ITO,
    STYLE,
    VENUES,
    Column,
    Venue,
    VenueTemplate,
    close,
    color,
    contour,
    label,
    mean_band,
    style,
    subplots,
    venue_rc,
)
from .runs import central_flow, comparison, eos, mark_events, panels

__all__ = [
    "CYCLE", "METHOD_COLORS", "METHOD_LABELS", "OKABE_ITO", "STYLE", "VENUES", "Column", "Venue", "VenueTemplate",
    "close", "color", "contour", "label", "mean_band", "style", "subplots", "venue_rc",
    "eos", "comparison", "central_flow", "mark_events", "panels", "density", "loss_plane", "spectral_density",
]
