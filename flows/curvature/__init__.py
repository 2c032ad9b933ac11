"""Curvature at a point.

Operators, Lanczos, spectra, trace, spectral density, loss landscapes, preconditioned curvature and mini-batch
estimates.
"""
