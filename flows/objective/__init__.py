"""The objective E(θ) on one flat parameter vector.

From functions and modules, layouts, data-parallel reduction, autodiff helpers, exact norm layers, the Hessian operator,
and the named analytic toys.
"""
from . import toys
from .hessian import HessianOperator
from .objective import BATCHING, HVP_METHODS, Objective

__all__ = ["Objective", "HVP_METHODS", "BATCHING", "HessianOperator", "toys"]
