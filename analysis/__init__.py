"""driftlab.analysis — what we read off trajectories: corridor and edge-of-stability detectors, plots.

``analysis`` reads ``flows`` objects; ``flows`` never imports ``analysis``.
"""
from .corridors import CorridorDetector, corridor_score, detect_corridors, loss_linearity, straightness
from .events import Event, Segment, from_dict
from .stability import (EoSDetector, EoSReport, PFStability, detect_edge_of_stability, pf_stability,
                        stability_threshold)

__all__ = [
    "CorridorDetector", "corridor_score", "detect_corridors", "loss_linearity", "straightness",
    "Event", "Segment", "from_dict",
    "EoSDetector", "EoSReport", "PFStability", "detect_edge_of_stability", "pf_stability", "stability_threshold",
]
