"""flows — driftlab's dynamics: objective, Hessian spectra, vector fields, integration, GD, trajectories.

``flows`` never imports ``analysis`` or ``experiments``.
"""
from . import toys
from .objective import HVP_METHODS, Objective
from .operators import HessianOperator
from .spectrum import Eigenpairs, EigenTracker, ggn_eigenpairs, parameter_eigenpairs, sharpness, top_eigenpairs
from .fields import FIELDS, FLOWS, Flow, get_flow, gf, igr, pf, pf_coefficient, pf_topk, third_order
from .trajectory import Recorder, Trajectory, TrajectoryFileError
from .gd import Controller, Progress, StepContext, StepDecision, gradient_descent
from .integrate import METHODS, Comparison, compare, integrate, local_error
from .options import Recording, Solver, Spectrum
from .trace import TraceEstimate, hessian_trace, trace
from .density import SpectralDensity, lanczos_quadrature, spectral_density
from .landscape import Plane, filter_normalized_direction, interpolate, loss_plane, plane_coordinates
from .sdcp import SDCPSolution, solve_sdcp
from .central import CentralFlowResult, CentralState, central_flow
from .midpoint import Midpoints, gaussian_smoothed
from .optimizers import (OptimizerController, PreconditionedSharpness, objective_preconditioner,
                         preconditioner_from, stability_threshold)

__all__ = [
    "Objective", "HessianOperator", "HVP_METHODS", "toys",
    "Eigenpairs", "EigenTracker", "sharpness", "top_eigenpairs", "parameter_eigenpairs", "ggn_eigenpairs",
    "TraceEstimate", "trace", "hessian_trace", "SpectralDensity", "lanczos_quadrature", "spectral_density",
    "Plane", "loss_plane", "plane_coordinates", "interpolate", "filter_normalized_direction",
    "SDCPSolution", "solve_sdcp",
    "CentralFlowResult", "CentralState", "central_flow", "Midpoints", "gaussian_smoothed",
    "OptimizerController", "PreconditionedSharpness", "objective_preconditioner", "preconditioner_from",
    "stability_threshold",
    "FIELDS", "FLOWS", "Flow", "get_flow", "gf", "igr", "third_order", "pf", "pf_topk", "pf_coefficient",
    "Trajectory", "Recorder", "TrajectoryFileError",
    "Controller", "Progress", "StepContext", "StepDecision", "gradient_descent",
    "METHODS", "Comparison", "compare", "integrate", "local_error", "Solver", "Spectrum", "Recording",
]
