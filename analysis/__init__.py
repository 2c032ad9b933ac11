"""analysis — what reads runs and steers them: measurement callbacks and detectors, step controllers, plots.

``analysis`` reads ``flows`` objects; ``flows`` never imports ``analysis``.
"""
from flows.curvature.precondition import batch_sharpness_threshold, stability_threshold

from .controllers import (
    CONTROLLERS,
    PAL,
    Alice,
    Constant,
    ControllerOptimizer,
    CorridorLR,
    DriftAdjustedLR,
    OptimizerController,
    SGDController,
    StepController,
    WNGrad,
    get_controller,
)
from .events import Event, Segment, from_dict
from .monitors import (
    BatchSharpness,
    CorridorDetector,
    EoSDetector,
    EoSReport,
    Midpoints,
    PFLossRate,
    PFStability,
    PreconditionedSharpness,
    Sharpness,
    StepBatchSharpness,
    StochasticGap,
    corridor_score,
    detect_corridors,
    detect_edge_of_stability,
    loss_linearity,
    loss_rate_agreement,
    pf_stability,
    straightness,
)

__all__ = [
    # controllers
    "CONTROLLERS", "get_controller", "StepController", "ControllerOptimizer", "Constant", "CorridorLR",
    "DriftAdjustedLR", "WNGrad", "PAL", "Alice", "OptimizerController", "SGDController",
    # monitors
    "CorridorDetector", "corridor_score", "detect_corridors", "loss_linearity", "straightness",
    "Event", "Segment", "from_dict",
    "EoSDetector", "EoSReport", "PFStability", "PFLossRate", "loss_rate_agreement", "detect_edge_of_stability",
    "pf_stability", "stability_threshold", "Midpoints", "PreconditionedSharpness", "BatchSharpness", "Sharpness",
    "StepBatchSharpness", "StochasticGap", "batch_sharpness_threshold",
]
