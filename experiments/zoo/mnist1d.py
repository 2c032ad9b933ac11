"""MNIST-1D (Greydanus 2020) generated locally, draw for draw as the ``mnist1d`` package's ``make_dataset``.

The package (optional, not a dependency) downloads in ``get_dataset`` by default, imports ``requests`` when
imported and interpolates with SciPy's legacy ``interp1d``. This generator makes the same numbers with
``numpy.interp`` (linear interpolation, the same formula) and a private ``RandomState`` seeded as the package's
``set_seed`` seeds NumPy's global one, so the caller's global NumPy state is left alone. Each example: the
digit's 12-point template, padded with 36…60 zeros, stretched to 72 points, scaled by 1 ± 0.2, rolled by up to
47 places, the zero padding replaced by Gaussian-smoothed noise (σ = 2 points) of scale 0.25, i.i.d. noise of
scale 0.02 added, sheared by ±0.375 across the signal and subsampled to 40 points. Then the examples are shuffled,
the whole set is standardized by its global mean and standard deviation and split 4,000 / 1,000.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from .papers import PaperData

TEMPLATES = np.asarray([
    [5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5], [5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5],
    [5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5], [5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5],
    [5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5], [5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5],
    [5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5], [5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5],
    [5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5], [5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5]])


def templates() -> np.ndarray:
    """The ten digit templates, each centred, scaled to unit deviation, shifted to start at 0, divided by 6."""
    x = TEMPLATES - TEMPLATES.mean(1, keepdims=True)
    x /= x.std(1, keepdims=True)
    x -= x[:, :1]
    return x / 6.0


def _stretch(x: np.ndarray, points: int) -> np.ndarray:
    return np.interp(np.linspace(0, 1, points), np.linspace(0, 1, len(x)), x)


def _example(template: np.ndarray, rng: np.random.RandomState, padding: tuple[int, int] = (36, 60),
             template_len: int = 12, scale_coeff: float = 0.4, max_translation: int = 48,
             corr_noise: float = 0.25, iid_noise: float = 2e-2, shear: float = 0.75, final: int = 40) -> np.ndarray:
    low, high = padding
    pad = low + int(rng.rand() * (high - low + 1))
    x = np.concatenate([template + 1e-8, np.zeros(pad)])
    x = _stretch(x, template_len + padding[-1])
    x *= 1 + scale_coeff * (rng.rand() - 0.5)
    k = rng.choice(max_translation)
    x = np.concatenate([x[-k:], x[:-k]])
    mask = x != 0
    x = mask * x + (1 - mask) * gaussian_filter(corr_noise * rng.randn(*x.shape), 2)
    x = x + iid_noise * rng.randn(*x.shape)
    x = x - shear * (rng.rand() - 0.5) * np.linspace(-0.5, 0.5, len(x))
    return _stretch(x, final)


def mnist1d(num_samples: int = 5000, train_split: float = 0.8, seed: int = 42) -> PaperData:
    """MNIST-1D with the package's default arguments: 4,000 train / 1,000 test signals of length 40, 10 classes."""
    rng = np.random.RandomState(seed)
    shapes = templates()
    xs, ys = [], []
    for label in range(10):
        for _ in range(num_samples // 10):
            xs.append(_example(shapes[label], rng))
            ys.append(label)
    order = rng.permutation(len(ys))
    x, y = np.stack(xs)[order], np.asarray(ys)[order]
    x = (x - x.mean()) / x.std()
    cut = int(len(y) * train_split)
    return PaperData("mnist1d", torch.from_numpy(x[:cut]), torch.from_numpy(y[:cut]), torch.from_numpy(x[cut:]),
                     torch.from_numpy(y[cut:]), "classification", 10, "greydanus/mnist1d make_dataset (defaults)")
