"""Shared small models for the tests: a toy, a tanh MLP and a BatchNorm CNN, all float64 and seeded.

Markers: ``slow`` (subprocess and end-to-end runs, minutes) and ``distributed`` (several processes);
``make test PYTEST_ARGS="-m 'not slow'"`` skips the slow ones while iterating. CI runs everything.
``make test`` runs two pytest-xdist workers with one torch thread each (``TEST_JOBS``, ``OMP_NUM_THREADS=1``); a
worker started by ``pytest -n N`` directly also keeps to one torch thread.
"""
import os

import pytest
import torch
from models import fc_tanh, gaussian_mixture, half_mse

from flows import Objective
from flows.objective import toys

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # workers share the cores; more threads per worker oversubscribe them


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def cubic() -> Objective:
    """The 2-D cubic toy (non-quadratic: BEA orders and the PF branch cut show on it)."""
    return toys.get("cubic")


@pytest.fixture
def mlp_objective() -> Objective:
    """fc-tanh 2-8-3 with half-MSE on 64 Gaussian-mixture points (D = 51), float64."""
    x, y = gaussian_mixture(n=64, d=2, classes=3, seed=0)
    return Objective.from_module(fc_tanh((2, 8, 3), seed=0, dtype=torch.float64), half_mse, (x, y))


@pytest.fixture
def cnn_objective() -> Objective:
    """A conv + BatchNorm (train mode) + linear net with cross-entropy on 16 random 1×6×6 images, float64."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 1, 6, 6, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (16,), generator=gen)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Tanh(),
                                torch.nn.Flatten(), torch.nn.Linear(2 * 4 * 4, 3)).to(torch.float64)
    return Objective.from_module(model, torch.nn.functional.cross_entropy, (x, labels))


def _constructed_matrix(eigenvalues, seed: int = 0) -> torch.Tensor:
    """Q diag(λ) Qᵀ with a seeded random orthogonal Q (float64): a symmetric matrix whose spectrum is known."""
    lam = torch.as_tensor(eigenvalues, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(lam), len(lam), generator=gen, dtype=torch.float64))
    return (q * lam) @ q.T


@pytest.fixture
def constructed():
    """``constructed(eigenvalues, seed=0)``: a dense float64 matrix with exactly that spectrum."""
    return _constructed_matrix
