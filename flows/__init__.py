"""driftlab.flows — the dynamics: objective, Hessian spectra, vector fields, integration, GD, trajectories.

``flows`` never imports ``analysis`` or ``experiments``.
"""
from . import toys
from .objective import HVP_METHODS, Objective
from .operators import HessianOperator

__all__ = ["Objective", "HessianOperator", "HVP_METHODS", "toys"]
