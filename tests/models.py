"""The small models and data sets that the tests of ``flows`` and ``analysis`` use.

These tests never import ``experiments`` (the layers below it are tested on their own), so the few zoo pieces
they need are written here once more, the same constructions as ``experiments.zoo.datasets`` (same seeds, same
numbers): a change to the experiments' zoo cannot move a threshold of an engine test.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from flows import Objective


def half_mse(outputs: Tensor, targets: Tensor) -> Tensor:
    """½‖f − y‖² summed over outputs, averaged over examples."""
    return 0.5 * ((outputs - targets) ** 2).sum(dim=-1).mean()


def fc_tanh(widths: tuple[int, ...] = (64, 200, 200, 10), seed: int = 0,
            dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """A fully connected tanh network, PyTorch's default initialization under ``seed`` (global RNG restored)."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.Tanh())
    model = nn.Sequential(*layers).to(dtype)
    torch.random.set_rng_state(state)
    return model


def teacher_student(n: int = 256, d_in: int = 8, d_out: int = 2, width: int = 16, seed: int = 0,
                    dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """x ~ N(0, I) and targets of a random tanh teacher."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=gen, dtype=dtype)
    w1 = torch.randn(d_in, width, generator=gen, dtype=dtype) / d_in ** 0.5
    w2 = torch.randn(width, d_out, generator=gen, dtype=dtype) / width ** 0.5
    return x, torch.tanh(x @ w1) @ w2


def gaussian_mixture(n: int = 256, d: int = 2, classes: int = 3, spread: float = 3.0, seed: int = 0,
                     dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """Points around ``classes`` random centres, one-hot targets."""
    gen = torch.Generator().manual_seed(seed)
    centres = spread * torch.randn(classes, d, generator=gen, dtype=dtype)
    labels = torch.randint(0, classes, (n,), generator=gen)
    x = centres[labels] + torch.randn(n, d, generator=gen, dtype=dtype)
    return x, torch.nn.functional.one_hot(labels, classes).to(dtype)


def digits(n_test: int = 297, seed: int = 0, dtype: torch.dtype = torch.float32,
           n_train: int | None = None) -> tuple[Tensor, Tensor]:
    """scikit-learn's 8×8 digits: the training rows (1500 by default) of a seeded split, standardized with the
    training rows' statistics, one-hot targets."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.data.astype(np.float64)
    order = np.random.default_rng(seed).permutation(len(x))
    train = order[n_test:] if n_train is None else order[n_test:n_test + n_train]
    std = x[train].std(0)
    std[std == 0] = 1.0
    x = (x - x[train].mean(0)) / std
    labels = torch.as_tensor(bunch.target[train], dtype=torch.long)
    return torch.as_tensor(x[train], dtype=dtype), torch.nn.functional.one_hot(labels, 10).to(dtype)


def digits_objective(*, seed: int = 0, dtype: torch.dtype = torch.float32, n_train: int | None = None,
                     widths: tuple[int, ...] = (64, 200, 200, 10)) -> tuple[Objective, nn.Sequential]:
    """Full-batch fc-tanh ½-MSE on digits: (objective, model)."""
    model = fc_tanh(widths, seed=seed, dtype=dtype)
    return Objective.from_module(model, half_mse, digits(seed=seed, dtype=dtype, n_train=n_train),
                                 name="digits-fc-tanh"), model


def write_cifar_batches(folder, per_batch: int = 8, seed: int = 0):
    """CIFAR-10's python format, written here: 5 training batches and a test batch of random uint8 images."""
    import pickle

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, per_batch).tolist(), b"batch_label": name.encode()}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)
    return folder
