"""analysis — what driftlab reads off trajectories: corridor and edge-of-stability detectors,
the learning-rate controllers they feed, plots.

``analysis`` reads ``flows`` objects; ``flows`` never imports ``analysis``.
"""
from .corridors import CorridorDetector, corridor_score, detect_corridors, loss_linearity, straightness
from .controllers import (CONTROLLERS, PAL, Alice, Constant, ControllerOptimizer, CorridorLR, DriftAdjustedLR,
                          StepController, WNGrad, get_controller)
from .events import Event, Segment, from_dict
from .stability import (EoSDetector, EoSReport, PFLossRate, PFStability, detect_edge_of_stability,
                        loss_rate_agreement, pf_stability, stability_threshold)

__all__ = [
    "CONTROLLERS", "get_controller", "StepController", "ControllerOptimizer", "Constant", "CorridorLR",
    "DriftAdjustedLR", "WNGrad", "PAL", "Alice",
    "CorridorDetector", "corridor_score", "detect_corridors", "loss_linearity", "straightness",
    "Event", "Segment", "from_dict",
    "EoSDetector", "EoSReport", "PFStability", "PFLossRate", "loss_rate_agreement", "detect_edge_of_stability",
    "pf_stability", "stability_threshold",
]
