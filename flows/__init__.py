"""flows — driftlab's engine: the objective, its curvature, the dynamics (flows, GD, central flow), the records.

Sub-packages, from the ground up (each imports only those below it; ``flows`` never imports ``analysis`` or
``experiments``): ``validate``/``progress``/``records``/``objective`` < ``curvature`` < ``dynamics``.
"""
# objective
# curvature
from .curvature.density import SpectralDensity, lanczos_quadrature, spectral_density
from .curvature.landscape import Plane, filter_normalized_direction, interpolate, loss_plane, plane_coordinates
from .curvature.precondition import (
    batch_sharpness_threshold,
    objective_preconditioner,
    preconditioner_from,
    stability_threshold,
)
from .curvature.spectrum import (
    Eigenpairs,
    EigenTracker,
    ggn_eigenpairs,
    parameter_eigenpairs,
    sharpness,
    top_eigenpairs,
)
from .curvature.trace import TraceEstimate, hessian_trace, trace

# dynamics
from .dynamics.adaptive import AdaptiveCentralState, AdaptiveFlowKind, adaptive_flow
from .dynamics.central import CentralState
from .dynamics.fields import FIELDS, FLOWS, Flow, get_flow, gf, igr, pf, pf_coefficient, pf_topk, third_order
from .dynamics.gd import Controller, StepContext, StepDecision, gradient_descent
from .dynamics.integrate import METHODS, CentralFlowResult, Comparison, central_flow, compare, integrate, local_error
from .dynamics.options import Recording, Solver, Spectrum
from .dynamics.rules import GD, RULES, Adam, RMSProp, RuleController, ScalarRMSProp, UpdateRule, get_rule
from .dynamics.schedules import Constant, Schedule, StepDecay, WarmupCosine
from .dynamics.sdcp import SDCPSolution, solve_sdcp
from .dynamics.symmetrized import Rod, SymmetrizedCenter, symmetrized_flow
from .objective import toys
from .objective.hessian import HessianOperator
from .objective.objective import BATCHING, HVP_METHODS, Objective

# records
from .progress import Progress
from .records.smoothing import gaussian_smoothed
from .records.trajectory import Recorder, Trajectory, TrajectoryFileError

MOVED_TO_ANALYSIS = ("Midpoints", "OptimizerController", "PreconditionedSharpness")
"""Names ``flows`` exported before 0.3.0 that are measurement callbacks or controllers, now ``analysis``'s."""


def __getattr__(name: str) -> object:
    if name in MOVED_TO_ANALYSIS:
        raise AttributeError(f"flows.{name} moved to analysis.{name} in driftlab 0.3.0 (flows never imports "
                             f"analysis): use `from analysis import {name}`")
    raise AttributeError(f"module 'flows' has no attribute {name!r}")


__all__ = [
    # objective
    "Objective", "HessianOperator", "HVP_METHODS", "BATCHING", "toys",
    # curvature
    "Eigenpairs", "EigenTracker", "sharpness", "top_eigenpairs", "parameter_eigenpairs", "ggn_eigenpairs",
    "TraceEstimate", "trace", "hessian_trace", "SpectralDensity", "lanczos_quadrature", "spectral_density",
    "Plane", "loss_plane", "plane_coordinates", "interpolate", "filter_normalized_direction",
    "objective_preconditioner", "preconditioner_from", "stability_threshold", "batch_sharpness_threshold",
    # dynamics
    "FIELDS", "FLOWS", "Flow", "get_flow", "gf", "igr", "third_order", "pf", "pf_topk", "pf_coefficient",
    "Controller", "StepContext", "StepDecision", "gradient_descent",
    "METHODS", "Comparison", "compare", "integrate", "local_error", "Solver", "Spectrum", "Recording",
    "SDCPSolution", "solve_sdcp", "CentralFlowResult", "CentralState", "central_flow",
    "UpdateRule", "GD", "ScalarRMSProp", "RMSProp", "Adam", "RULES", "get_rule", "RuleController",
    "AdaptiveCentralState", "AdaptiveFlowKind", "adaptive_flow", "Schedule", "Constant", "WarmupCosine", "StepDecay",
    "Rod", "SymmetrizedCenter", "symmetrized_flow",
    # records
    "Trajectory", "Recorder", "TrajectoryFileError", "Progress", "gaussian_smoothed",
]
