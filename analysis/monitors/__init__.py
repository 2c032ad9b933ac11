"""Measurement callbacks and detectors: what ``gradient_descent`` calls each step and what reads a finished run.

* ``sharpness`` — preconditioned and mini-batch sharpness along a run;
* ``stability`` — the edge-of-stability detector and the principal-flow stability view;
* ``corridors`` — the corridor detector;
* ``midpoint`` — GD's second-order midpoints, what the central flow is compared with.
"""
from .corridors import CorridorDetector, corridor_score, detect_corridors, loss_linearity, straightness
from .midpoint import Midpoints
from .sharpness import BatchSharpness, PreconditionedSharpness, Sharpness, StepBatchSharpness, StochasticGap
from .stability import (
    EoSDetector,
    EoSReport,
    PFLossRate,
    PFStability,
    detect_edge_of_stability,
    loss_rate_agreement,
    pf_stability,
)

__all__ = [
    "CorridorDetector", "corridor_score", "detect_corridors", "loss_linearity", "straightness", "Midpoints",
    "BatchSharpness", "PreconditionedSharpness", "Sharpness",
    "StepBatchSharpness", "StochasticGap", "EoSDetector", "EoSReport", "PFLossRate", "PFStability",
    "detect_edge_of_stability", "loss_rate_agreement", "pf_stability",
]
