"""Data sets and the reference networks, all local: nothing here downloads.

* :func:`digits` — scikit-learn's bundled handwritten digits (1797 × 64),
  standardized per pixel with training statistics, one-hot targets.
* :func:`breast_cancer` — scikit-learn's bundled Wisconsin breast-cancer data (569 × 30, two classes),
  standardized per feature with training statistics.
* :func:`cifar10` — CIFAR-10 read from a local folder in its python format.
* :func:`teacher_student`, :func:`gaussian_mixture` — synthetic data for tests.
* :func:`fc_tanh` — the fully connected tanh network of the EoS experiments.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn


@dataclass
class Split:
    """Inputs and targets of a train and a test split; ``labels`` are class indices."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    labels_train: Tensor
    labels_test: Tensor
    num_classes: int

    @property
    def train(self) -> tuple[Tensor, Tensor]:
        return self.x_train, self.y_train

    @property
    def test(self) -> tuple[Tensor, Tensor]:
        return self.x_test, self.y_test


def _finish(x: np.ndarray, labels: np.ndarray, n_test: int, seed: int, num_classes: int,
            dtype: torch.dtype, n_train: int | None) -> Split:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    test_idx, train_idx = order[:n_test], order[n_test:]
    if n_train is not None:
        if isinstance(n_train, bool) or not isinstance(n_train, int) or not 1 <= n_train <= len(train_idx):
            raise ValueError(f"n_train must be an int in [1, {len(train_idx)}] (the training examples left after "
                             f"n_test = {n_test}), got {n_train!r}")
        train_idx = train_idx[:n_train]
    mean = x[train_idx].mean(0)
    std = x[train_idx].std(0)
    std[std == 0] = 1.0
    x = (x - mean) / std
    xt = torch.as_tensor(x, dtype=dtype)
    lt = torch.as_tensor(labels, dtype=torch.long)
    onehot = torch.nn.functional.one_hot(lt, num_classes).to(dtype)
    tr, te = torch.as_tensor(train_idx), torch.as_tensor(test_idx)
    return Split(xt[tr], onehot[tr], xt[te], onehot[te], lt[tr], lt[te], num_classes)


def breast_cancer(n_test: int = 114, seed: int = 0, dtype: torch.dtype = torch.float64) -> Split:
    """scikit-learn's bundled breast-cancer data (569 × 30, labels 0/1): a seeded split of ``n_test`` test rows,
    features standardized with the training rows' mean and standard deviation, one-hot targets."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    return _finish(bunch.data.astype(np.float64), bunch.target, n_test, seed, 2, dtype, None)


def digits(n_test: int = 297, seed: int = 0, dtype: torch.dtype = torch.float32,
           n_train: int | None = None) -> Split:
    """scikit-learn's 8×8 digits: 1500 train / 297 test by default, standardized, one-hot."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    if not 0 <= n_test < len(bunch.data):
        raise ValueError(f"n_test must be in [0, {len(bunch.data)}), got {n_test}")
    return _finish(bunch.data.astype(np.float64), bunch.target, n_test, seed, 10, dtype, n_train)


def cifar10(root: str | Path, n_train: int | None = None, n_test: int | None = None,
            dtype: torch.dtype = torch.float32) -> Split:
    """CIFAR-10 from ``root`` holding ``data_batch_1..5`` and ``test_batch`` (python format).

    Never downloads: a missing folder raises FileNotFoundError naming it.
    """
    root = Path(root)
    files = [root / f"data_batch_{i}" for i in range(1, 6)] + [root / "test_batch"]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 python batches not found: {missing[0]} "
                                "(download cifar-10-python.tar.gz yourself and extract it there)")

    def read(path: Path) -> tuple[np.ndarray, np.ndarray]:
        with open(path, "rb") as fh:
            d = pickle.load(fh, encoding="bytes")
        return d[b"data"].astype(np.float64) / 255.0, np.asarray(d[b"labels"])

    parts = [read(f) for f in files[:5]]
    x_tr = np.concatenate([p[0] for p in parts])[:n_train]
    l_tr = np.concatenate([p[1] for p in parts])[:n_train]
    x_te, l_te = read(files[5])
    x_te, l_te = x_te[:n_test], l_te[:n_test]
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-8
    to = lambda a: torch.as_tensor(((a - mean) / std).reshape(-1, 3, 32, 32), dtype=dtype)  # noqa: E731
    lt, le = torch.as_tensor(l_tr), torch.as_tensor(l_te)
    oh = lambda lab: torch.nn.functional.one_hot(lab, 10).to(dtype)  # noqa: E731
    return Split(to(x_tr), oh(lt), to(x_te), oh(le), lt, le, 10)


def teacher_student(n: int = 256, d_in: int = 8, d_out: int = 2, width: int = 16, seed: int = 0,
                    dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """Inputs x ~ N(0, I) and targets from a random tanh teacher network."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=gen, dtype=dtype)
    w1 = torch.randn(d_in, width, generator=gen, dtype=dtype) / d_in ** 0.5
    w2 = torch.randn(width, d_out, generator=gen, dtype=dtype) / width ** 0.5
    return x, torch.tanh(x @ w1) @ w2


def gaussian_mixture(n: int = 256, d: int = 2, classes: int = 3, spread: float = 3.0, seed: int = 0,
                     dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """Points around ``classes`` random centres; targets are one-hot."""
    gen = torch.Generator().manual_seed(seed)
    centres = spread * torch.randn(classes, d, generator=gen, dtype=dtype)
    labels = torch.randint(0, classes, (n,), generator=gen)
    x = centres[labels] + torch.randn(n, d, generator=gen, dtype=dtype)
    return x, torch.nn.functional.one_hot(labels, classes).to(dtype)


def fc_tanh(widths: tuple[int, ...] = (64, 200, 200, 10), seed: int = 0,
            dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """Fully connected tanh network (PyTorch default init, seeded): 64-200-200-10 has 55,210 parameters."""
    return fc_net(widths, activation="tanh", seed=seed, dtype=dtype)


ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


def fc_net(widths: tuple[int, ...] = (64, 200, 200, 10), activation: str = "tanh", seed: int = 0,
           dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """Fully connected network with ``activation`` (``"tanh"`` or ``"relu"``) between its linear layers, PyTorch
    default init under ``seed`` (the global RNG is left as it was)."""
    if len(widths) < 2:
        raise ValueError(f"widths needs at least an input and an output size, got {widths}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(ACTIVATIONS[activation]())
    model = nn.Sequential(*layers).to(dtype)
    torch.random.set_rng_state(gen_state)
    return model


DIGITS_FEATURES, DIGITS_CLASSES = 64, 10


def check_digits_widths(widths: tuple[int, ...]) -> None:
    """Layer widths of an MLP on digits: 64 inputs, 10 outputs, every width a positive int (else ValueError)."""
    if len(widths) < 2 or widths[0] != DIGITS_FEATURES or widths[-1] != DIGITS_CLASSES \
            or any(w < 1 for w in widths):
        raise ValueError(f"widths must start with {DIGITS_FEATURES} (the digits' pixels), end with "
                         f"{DIGITS_CLASSES} (the classes) and be ≥ 1 in between, got {','.join(map(str, widths))}")


def half_mse(outputs: Tensor, targets: Tensor) -> Tensor:
    """½‖f − y‖² summed over outputs, averaged over examples (the EoS papers' MSE)."""
    return 0.5 * ((outputs - targets) ** 2).sum(dim=-1).mean()


def _rank_and_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """This rank's examples under torch.distributed (every world-th one; the objective sums the shards),
    all of them on one process."""
    rank, world = _rank_and_world()
    return (x[rank::world], y[rank::world]) if world > 1 else (x, y)


DATA_HELP = ("Data set: 'digits', or a classification set of experiments.zoo.papers (mnist1d, moons, circles, "
             "cohen-5k:PATH, cf-1k-4class:PATH, eoss-seeded:PATH); the MLP's first and last widths follow it.")
CLASSIFICATION_SETS = ("digits", "mnist1d", "moons", "circles")


def check_data(data: str) -> None:
    """ValueError naming the valid choices (and the closest) unless ``data`` names a classification set."""
    from difflib import get_close_matches

    from .papers import CIFAR_FILES, CIFAR_PRESETS

    name, _, path = data.partition(":")
    if name in CIFAR_PRESETS and path:
        missing = [f for f in CIFAR_FILES if not (Path(path).expanduser() / f).is_file()]
        if missing:
            raise ValueError(f"data {data!r}: no CIFAR-10 python batches in {path!r} (missing {missing}; extract "
                             "cifar-10-python.tar.gz there; nothing is downloaded)")
        return
    if name in CLASSIFICATION_SETS and not path:
        return
    valid = list(CLASSIFICATION_SETS) + [f"{n}:PATH" for n in CIFAR_PRESETS]
    close = get_close_matches(name, list(CLASSIFICATION_SETS) + list(CIFAR_PRESETS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    need = f"; {name} is CIFAR-10 and needs the folder of its python batches, {name}:PATH" if name in CIFAR_PRESETS \
        else ""
    raise ValueError(f"data must be a classification set, one of {', '.join(valid)}; got {data!r}{hint}{need}")


def load_split(data: str = "digits", *, seed: int = 0, dtype: torch.dtype = torch.float32,
               n_train: int | None = None) -> Split:
    """The split of a classification set by name: ``digits`` (seeded split, standardized), or a set of
    :mod:`experiments.zoo.papers` as its paper builds it (inputs flattened, one-hot 0/1 targets, the first
    ``n_train`` training examples; ``seed`` does not change it)."""
    check_data(data)
    if data == "digits":
        return digits(seed=seed, dtype=dtype, n_train=n_train)
    from .catalog import paper_data

    paper = paper_data(data)
    if n_train is not None and not 1 <= n_train <= len(paper.x_train):
        raise ValueError(f"n_train must be in [1, {len(paper.x_train)}] for data {data!r}, got {n_train}")
    keep = slice(None) if n_train is None else slice(0, n_train)
    flat = lambda x: x.reshape(len(x), -1).to(dtype)  # noqa: E731
    labels_train, labels_test = paper.y_train[keep].long(), paper.y_test.long()
    return Split(flat(paper.x_train[keep]), paper.one_hot(labels_train, dtype), flat(paper.x_test),
                 paper.one_hot(labels_test, dtype), labels_train, labels_test, paper.num_classes)


def fitted_widths(widths: tuple[int, ...], split: Split) -> tuple[int, ...]:
    """``widths`` with the first and last replaced by the split's input size and class count."""
    return (int(split.x_train.shape[1]), *widths[1:-1], split.num_classes)


def digits_objective(*, seed: int = 0, dtype: torch.dtype = torch.float32,
                     n_train: int | None = None, widths: tuple[int, ...] = (64, 200, 200, 10),
                     batch_size: int | None = None, data: str = "digits"):
    """The flagship objective: full-batch fc-tanh MSE on digits (or ``data``). Returns (objective, split, model).

    With another ``data`` set (:func:`load_split`) the MLP's first and last widths follow it. Under
    ``torch.distributed`` each rank takes every world-th training example and the objective sums over ranks, so
    the numbers equal the one-process ones.
    """
    from flows import Objective

    split = load_split(data, seed=seed, dtype=dtype, n_train=n_train)
    model = fc_tanh(fitted_widths(widths, split), seed=seed, dtype=dtype)
    name = "digits-fc-tanh" if data == "digits" else f"{data.split(':')[0]}-fc-tanh"
    obj = Objective.from_module(model, half_mse, shard(*split.train), batch_size=batch_size, name=name)
    return obj, split, model


def swish_mlp_toy(n: int = 128, d: int = 8, width: int = 16, seed: int = 0,
                  dtype: torch.dtype = torch.float64):
    """The central-flows example (central_flows_jax ``examples/mlp.ipynb``): x ~ N(0, I₈) (128 × 8), y ~ N(0, 1),
    the MLP d→width→width→1 with swish (SiLU), E = mean((f(x) − y)²) (MSE without ½).

    Weights as flax's ``nnx.Linear`` draws them (LeCun normal: a normal truncated at ±2σ, rescaled to variance
    1/fan_in), biases zero; torch's generator, so the draws (not their law) differ from the JAX notebook's.
    433 parameters for the defaults.
    """
    from flows import Objective

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=dtype)
    y = torch.randn(n, generator=gen, dtype=dtype)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(((d, width), (width, width), (width, 1))):
        linear = nn.Linear(a, b, dtype=dtype)
        with torch.no_grad():
            std = (1.0 / a) ** 0.5 / 0.87962566103423978  # the std of a unit normal truncated at ±2
            nn.init.trunc_normal_(linear.weight, std=std, a=-2 * std, b=2 * std, generator=gen)
            linear.bias.zero_()
        layers += [linear] + ([nn.SiLU()] if i < 2 else [])
    model = nn.Sequential(*layers, nn.Flatten(0))
    return Objective.from_module(model, lambda out, target: ((out - target) ** 2).mean(), (x, y),
                                 name="swish-mlp-toy")


def circles_layernorm(n: int = 256, width: int = 32, seed: int = 0, dtype: torch.dtype = torch.float64):
    """scikit-learn's two circles (noise 0.1, factor 0.5, ``n`` points) and the MLP 2→width→width→2 with LayerNorm and
    GELU after each hidden layer, cross-entropy: the flow arena's off-home-ground model (no other experiment uses
    LayerNorm, GELU or this data). 1,346 parameters for the defaults. Its sharpness shoots past 2/h early and falls
    back (a catapult) at the arena's rate h·λ_max(θ₀) = 1.
    """
    from sklearn.datasets import make_circles

    from flows import Objective

    points, labels = make_circles(n_samples=n, noise=0.1, factor=0.5, random_state=seed)
    with torch.random.fork_rng():  # the initialisation's draws without touching the caller's generator
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(2, width), nn.LayerNorm(width), nn.GELU(), nn.Linear(width, width),
                              nn.LayerNorm(width), nn.GELU(), nn.Linear(width, 2)).to(dtype)
    return Objective.from_module(model, nn.functional.cross_entropy,
                                 (torch.tensor(points, dtype=dtype), torch.tensor(labels)), name="circles-layernorm")
