"""driftlab.flows — the dynamics: objective, Hessian spectra, vector fields, integration, GD, trajectories.

``flows`` never imports ``analysis`` or ``experiments``.
"""
from . import toys
from .objective import HVP_METHODS, Objective
from .operators import HessianOperator
from .spectrum import Eigenpairs, EigenTracker, sharpness, top_eigenpairs

__all__ = [
    "Objective", "HessianOperator", "HVP_METHODS", "toys",
    "Eigenpairs", "EigenTracker", "sharpness", "top_eigenpairs",
]
