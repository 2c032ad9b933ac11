"""The data sets of the papers driftlab reproduces, rebuilt locally and exactly as the authors' code builds them.

Nothing downloads. CIFAR-10 is read from the standard python batches (``data_batch_1`` … ``data_batch_5``,
``test_batch``) in a folder the user names; the rest is generated.

CIFAR-10 presets (each reproduces the named code's selection, normalisation and dtype arithmetic):

* ``cohen-5k`` — Cohen et al. 2021 (``locuslab/edge-of-stability``, ``src/cifar.py``, ``src/data.py``): pixels /255
  in float64, centred and divided per pixel-channel by the mean and standard deviation (ddof 0) of all 50,000
  training images, then the first 5,000 training images in file order; the whole test set; float32.
* ``cf-1k-4class`` — the central-flows code (``mahyarjn80/centralflows``, ``src/datasets.py``): the first
  n/c = 250 training images of each of the first c = 4 classes, class by class; (x − 255·mean)/(255·std) with the
  fixed per-channel constants on float32 pixels in 0…255; then both splits shuffled by
  ``numpy.random.default_rng(0).permutation`` (their ``_shuffle``); the test set holds every test image of the c
  classes. Their raw pixels come from Hugging Face's ``cifar10``, built from these same batches in file order.
* ``eoss-seeded`` — the edge-of-stochastic-stability code (``utils/data.py``, ``prepare_cifar10``): 8,192 training
  images chosen by ``default_rng(888).choice(50000, n, replace=False)``, float32 pixels /255 minus
  (0.4914, 0.4822, 0.4465) over (0.2023, 0.1994, 0.2010); the whole test set. The size is that code's
  ``num_data`` argument; 8,192 is driftlab's choice.

Generated sets: ``chebyshev-k-n`` and ``linear-n-d`` (Cohen et al., ``src/synthetic.py``), ``sorting`` and
``copying`` (central flows: vocabulary 4, length 8, 1,000 + 1,000 sequences, ``default_rng(0)``, labels −1 on the
masked first half), ``moons`` and ``circles`` (central flows' scikit-learn settings), ``mnist1d`` (Greydanus 2020,
generated as the ``mnist1d`` package's ``make_dataset`` does with its default arguments; see :func:`mnist1d`).
"""
from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

Task = Literal["classification", "regression", "sequence"]
CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


@dataclass(frozen=True)
class PaperData:
    """A train and a test split as the paper's code builds them.

    Attributes:
        name: the preset's name.
        x_train, y_train, x_test, y_test: inputs and targets; for classification the targets are class indices
            (``one_hot`` gives the MSE targets), for sequences next-token indices with −1 where masked.
        task: ``"classification"``, ``"regression"`` or ``"sequence"``.
        num_classes: classes (classification), vocabulary (sequence) or 0.
        source: where the rule comes from.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    task: Task
    num_classes: int
    source: str

    def sha256(self) -> str:
        """SHA-256 over the four tensors' bytes (C order, their own dtype): equal hashes, equal data."""
        digest = hashlib.sha256()
        for t in (self.x_train, self.y_train, self.x_test, self.y_test):
            digest.update(str((tuple(t.shape), str(t.dtype))).encode())
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def one_hot(self, labels: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """One-hot MSE targets (0/1, as Cohen et al.'s ``make_labels``) of class indices."""
        if self.task != "classification":
            raise ValueError(f"one_hot needs a classification set; {self.name} is a {self.task} set")
        return torch.nn.functional.one_hot(labels.long(), self.num_classes).to(dtype)

    def summary(self) -> str:
        """One line: name, shapes, task, the hash's first 16 hex digits."""
        return (f"{self.name}: train {tuple(self.x_train.shape)}, test {tuple(self.x_test.shape)}, {self.task}"
                f"{f' ({self.num_classes} classes)' if self.num_classes else ''}, sha256 {self.sha256()[:16]}…")


# --------------------------------------------------------------------------------------------------- CIFAR-10
def read_cifar10(root: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images (50000, 32, 32, 3) uint8, labels, test images, labels) from the python batches in ``root``.

    The images are in file order, HWC, as torchvision's ``CIFAR10.data`` holds them. A missing file raises
    FileNotFoundError naming it and the files expected.
    """
    root = Path(root)
    missing = [name for name in CIFAR_FILES if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 python batches not found in {root}: missing {missing}; expected "
                                f"{list(CIFAR_FILES)} (extract cifar-10-python.tar.gz there; nothing downloads)")

    def read(name: str) -> tuple[np.ndarray, np.ndarray]:
        with open(root / name, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return images, np.asarray(batch[b"labels"], dtype=np.int64)

    parts = [read(name) for name in CIFAR_FILES[:5]]
    test = read(CIFAR_FILES[5])
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), test[0], test[1])


def _nchw(x: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def cifar_cohen(root: str | Path, n: int = 5000) -> PaperData:
    """Cohen et al. 2021's ``cifar10-{n}`` (module docstring): first ``n`` in file order, full-train statistics."""
    x_tr, l_tr, x_te, l_te = read_cifar10(root)
    _check_n("n", n, len(x_tr))
    flat_tr = x_tr.reshape(len(x_tr), -1) / 255
    flat_te = x_te.reshape(len(x_te), -1) / 255
    mean = flat_tr.mean(0)
    centred_tr, centred_te = flat_tr - mean, flat_te - mean
    std = centred_tr.std(0)
    train = (centred_tr / std).reshape(-1, 32, 32, 3)
    test = (centred_te / std).reshape(-1, 32, 32, 3)
    return PaperData(f"cohen-{n}", _nchw(train[:n]).float(), torch.from_numpy(l_tr[:n]), _nchw(test).float(),
                     torch.from_numpy(l_te), "classification", 10, "locuslab/edge-of-stability src/cifar.py")


CENTRAL_FLOWS_MEAN = 255 * np.array([0.49139968, 0.48215827, 0.44653124])
CENTRAL_FLOWS_STD = 255 * np.array([0.24703233, 0.24348505, 0.26158768])


def cifar_central_flows(root: str | Path, n: int = 1000, classes: int = 4) -> PaperData:
    """The central-flows code's CIFAR-10 with ``n`` examples of the first ``classes`` classes (module docstring)."""
    x_tr, l_tr, x_te, l_te = read_cifar10(root)
    if isinstance(classes, bool) or not isinstance(classes, int) or not 1 <= classes <= 10:
        raise ValueError(f"classes must be an int in [1, 10], got {classes!r}")
    _check_n("n", n, 5000 * classes)

    def split(x: np.ndarray, labels: np.ndarray, per_class: int | None) -> tuple[np.ndarray, np.ndarray]:
        idx = np.concatenate([np.nonzero(labels == c)[0][:per_class] for c in range(classes)])
        scaled = (x[idx].astype(np.float32) - CENTRAL_FLOWS_MEAN) / CENTRAL_FLOWS_STD
        inputs, targets = scaled.transpose(0, 3, 1, 2).astype(np.float32), labels[idx].astype(np.int64)
        order = np.random.default_rng(0).permutation(len(targets))
        return inputs[order], targets[order]

    train, test = split(x_tr, l_tr, n // classes), split(x_te, l_te, None)
    return PaperData(f"cf-{n}-{classes}class", torch.from_numpy(np.ascontiguousarray(train[0])),
                     torch.from_numpy(train[1]), torch.from_numpy(np.ascontiguousarray(test[0])),
                     torch.from_numpy(test[1]), "classification", classes, "mahyarjn80/centralflows src/datasets.py")


def cifar_eoss(root: str | Path, n: int = 8192, seed: int = 888) -> PaperData:
    """The edge-of-stochastic-stability code's seeded CIFAR-10 subset (module docstring)."""
    x_tr, l_tr, x_te, l_te = read_cifar10(root)
    _check_n("n", n, len(x_tr))
    idx = np.random.default_rng(seed).choice(len(x_tr), n, replace=False)
    mean, std = torch.tensor([0.4914, 0.4822, 0.4465]), torch.tensor([0.2023, 0.1994, 0.2010])

    def norm(x: np.ndarray) -> Tensor:
        return (((torch.from_numpy(x) / 255.0).float() - mean) / std).permute(0, 3, 1, 2).contiguous()

    return PaperData(f"eoss-{n}-seed{seed}", norm(x_tr[idx]), torch.from_numpy(l_tr[idx]), norm(x_te),
                     torch.from_numpy(l_te), "classification", 10,
                     "edge-of-stochastic-stability utils/data.py prepare_cifar10")


def _check_n(name: str, n: int, most: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= most:
        raise ValueError(f"{name} must be an int in [1, {most}], got {n!r}")


# --------------------------------------------------------------------------------------------- generated sets
def chebyshev(k: int = 5, n: int = 20) -> PaperData:
    """``n`` points evenly spaced on [−1, 1] labelled by the Chebyshev polynomial T_k (train = test, as there)."""
    from numpy.polynomial import chebyshev as cheb

    x = torch.linspace(-1, 1, n)
    coefficients = np.zeros(k + 1)
    coefficients[-1] = 1
    y = torch.from_numpy(cheb.chebval(x.numpy(), coefficients)).float()
    return PaperData(f"chebyshev-{k}-{n}", x[:, None], y[:, None], x[:, None].clone(), y[:, None].clone(),
                     "regression", 0, "locuslab/edge-of-stability src/synthetic.py")


def deep_linear(n: int = 50, d: int = 50, seed: int = 0) -> PaperData:
    """The deep-linear task: X = Q·√n (Q from the QR of an n × d Gaussian), Y = X Aᵀ, A Gaussian (train = test)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        x = torch.linalg.qr(torch.randn(n, d))[0] * n ** 0.5
        a = torch.randn(d, d)
    y = x.mm(a.t())
    return PaperData(f"linear-{n}-{d}", x, y, x.clone(), y.clone(), "regression", 0,
                     "locuslab/edge-of-stability src/synthetic.py")


def _sequences(kind: str, n: int = 1000, n_test: int = 1000, vocab: int = 4, length: int = 8) -> PaperData:
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, vocab, size=(n + n_test, length))
    second = np.sort(tokens, axis=1) if kind == "sorting" else tokens
    joined = np.concatenate((tokens, second), axis=1)
    x, y = joined[:, :-1].copy(), joined[:, 1:].copy()
    y[:, : length - 1] = -1  # masked: the loss reads only the second half's predictions
    train = _shuffled(x[:n], y[:n])
    test = _shuffled(x[n:], y[n:])
    return PaperData(kind, *train, *test, "sequence", vocab, "mahyarjn80/centralflows src/datasets.py")


def sorting(n: int = 1000, n_test: int = 1000, vocab: int = 4, length: int = 8) -> PaperData:
    """Next-token prediction of the sorted sequence after the unsorted one (central flows' ``Sorting``)."""
    return _sequences("sorting", n, n_test, vocab, length)


def copying(n: int = 1000, n_test: int = 1000, vocab: int = 4, length: int = 8) -> PaperData:
    """Next-token prediction of a sequence repeated after itself (central flows' ``Copying``)."""
    return _sequences("copying", n, n_test, vocab, length)


def _shuffled(x: np.ndarray, y: np.ndarray) -> tuple[Tensor, Tensor]:
    order = np.random.default_rng(0).permutation(len(y))  # the central-flows loader's _shuffle
    return torch.from_numpy(np.ascontiguousarray(x[order])), torch.from_numpy(np.ascontiguousarray(y[order]))


def moons(n: int = 200, n_test: int = 100, noise: float = 0.2, seed: int = 10) -> PaperData:
    """scikit-learn's two moons as central flows draw them (test set with ``random_state=1000``)."""
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=n, noise=noise, random_state=seed)
    xt, yt = make_moons(n_samples=n_test, noise=noise, random_state=1000)
    train = _shuffled(x.astype(np.float32), y.astype(np.int64))
    test = _shuffled(xt.astype(np.float32), yt.astype(np.int64))
    return PaperData("moons", *train, *test, "classification", 2, "mahyarjn80/centralflows src/datasets.py")


def circles(n: int = 200, n_test: int = 100, noise: float = 0.2, factor: float = 0.8, seed: int = 10) -> PaperData:
    """scikit-learn's two circles as central flows draw them (test set with the same seed, as there)."""
    from sklearn.datasets import make_circles

    x, y = make_circles(n_samples=n, noise=noise, random_state=seed, factor=factor)
    xt, yt = make_circles(n_samples=n_test, noise=noise, random_state=seed, factor=factor)
    train = _shuffled(x.astype(np.float32), y.astype(np.int64))
    test = _shuffled(xt.astype(np.float32), yt.astype(np.int64))
    return PaperData("circles", *train, *test, "classification", 2, "mahyarjn80/centralflows src/datasets.py")


# ------------------------------------------------------------------------------------------------- by name
CIFAR_PRESETS: dict[str, Callable[[Path], PaperData]] = {
    "cohen-5k": lambda root: cifar_cohen(root, 5000),
    "cf-1k-4class": lambda root: cifar_central_flows(root, 1000, 4),
    "eoss-seeded": lambda root: cifar_eoss(root, 8192, 888),
}
