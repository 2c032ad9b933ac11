"""Curvature at a point: operators, Lanczos, spectra, trace, spectral density, loss landscapes,
preconditioned curvature and mini-batch estimates."""
