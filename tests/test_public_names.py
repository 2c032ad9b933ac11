"""Every public name of the release before the house re-layout still imports from its package (0.3.0 moved modules,
not names), except the three measurement/controller names that crossed from ``flows`` to ``analysis``: those import
from ``analysis``, and ``flows`` says where they went."""
import importlib

import pytest

FLOWS = [
    "Objective", "HessianOperator", "HVP_METHODS", "toys", "Eigenpairs", "EigenTracker", "sharpness",
    "top_eigenpairs", "parameter_eigenpairs", "ggn_eigenpairs", "TraceEstimate", "trace", "hessian_trace",
    "SpectralDensity", "lanczos_quadrature", "spectral_density", "Plane", "loss_plane", "plane_coordinates",
    "interpolate", "filter_normalized_direction", "SDCPSolution", "solve_sdcp", "CentralFlowResult",
    "CentralState", "central_flow", "gaussian_smoothed", "objective_preconditioner", "preconditioner_from",
    "stability_threshold", "FIELDS", "FLOWS", "Flow", "get_flow", "gf", "igr", "third_order", "pf", "pf_topk",
    "pf_coefficient", "Trajectory", "Recorder", "TrajectoryFileError", "Controller", "Progress", "StepContext",
    "StepDecision", "gradient_descent", "METHODS", "Comparison", "compare", "integrate", "local_error", "Solver",
    "Spectrum", "Recording",
]
MOVED_TO_ANALYSIS = [
    "Midpoints", "OptimizerController", "PreconditionedSharpness",
]
ANALYSIS = [
    "CONTROLLERS", "get_controller", "StepController", "ControllerOptimizer", "Constant", "CorridorLR",
    "DriftAdjustedLR", "WNGrad", "PAL", "Alice", "CorridorDetector", "corridor_score", "detect_corridors",
    "loss_linearity", "straightness", "Event", "Segment", "from_dict", "EoSDetector", "EoSReport", "PFStability",
    "PFLossRate", "loss_rate_agreement", "detect_edge_of_stability", "pf_stability", "stability_threshold",
]
CONTROLLERS = [
    "CONTROLLERS", "get_controller", "StepController", "ControllerOptimizer", "ClosureObjective",
    "optimizer_class", "Constant", "CorridorLR", "DriftAdjustedLR", "WNGrad", "PAL", "Alice", "SPSMax", "ALIG",
    "ConstantOptimizer", "CorridorLROptimizer", "DriftAdjustedLROptimizer", "WNGradOptimizer", "PALOptimizer",
    "AliceOptimizer", "SPSMaxOptimizer", "ALIGOptimizer",
]


@pytest.mark.parametrize("package,names", [("flows", FLOWS), ("analysis", ANALYSIS + MOVED_TO_ANALYSIS),
                                           ("analysis.controllers", CONTROLLERS)])
def test_public_names_import(package, names):
    module = importlib.import_module(package)
    missing = [name for name in names if not hasattr(module, name)]
    assert not missing, missing
    assert set(names) <= set(module.__all__), set(names) - set(module.__all__)


@pytest.mark.parametrize("name", MOVED_TO_ANALYSIS)
def test_a_name_that_moved_to_analysis_says_where(name):
    import flows

    with pytest.raises(AttributeError, match=f"moved to analysis.{name}"):
        getattr(flows, name)


def test_one_stability_threshold():
    import analysis
    import flows

    assert analysis.stability_threshold is flows.stability_threshold
