"""A recorded series averaged in time: the Gaussian-smoothed loss the central flow is compared with."""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d


def gaussian_smoothed(values: np.ndarray, sigma: float) -> np.ndarray:
    """``values`` convolved in time with a Gaussian of standard deviation ``sigma`` steps.

    As scipy's ``gaussian_filter1d``, edges by reflection; NaN entries are left out of every average.
    """
    values = np.asarray(values, dtype=float)
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive number of steps, got {sigma!r}")
    ok = np.isfinite(values)
    weights = gaussian_filter1d(ok.astype(float), sigma, mode="reflect")
    sums = gaussian_filter1d(np.where(ok, values, 0.0), sigma, mode="reflect")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weights > 1e-12, sums / weights, np.nan)
