"""The anchor models of the speed benchmarks: five networks of the kinds users analyse.

Each anchor is a seeded ``(model, loss_fn, (inputs, targets))`` triple with a
one-line description; inputs are either the bundled digits data or seeded
Gaussian images of CIFAR shape (3×32×32), so nothing is downloaded.

============  ==========================================================  ==========
name          network and loss                                            parameters
============  ==========================================================  ==========
digits-mlp    fc-tanh 64-200-200-10, ½-MSE, 1500 digits                       55,210
digits-eos    the same after 350 GD steps at h = 0.2 (an EoS point)           55,210
digits-cnn-eos  conv-tanh ×2 + linear on 8×8 digits, ½-MSE, 150 GD steps       12,730
              at h = 0.2 (an EoS point)
cnn           2×(conv3×3-ReLU-maxpool) + 2048-32-10, cross-entropy,           70,986
              1024 CIFAR-shaped inputs
mlp-1m        fc-tanh 64-1000-1000-10, ½-MSE, 1500 digits                  1,076,010
bn-cnn        2×(conv3×3-BatchNorm(train)-ReLU-maxpool) + linear,             13,082
              cross-entropy, 512 CIFAR-shaped inputs
transformer   embedding 32 + one pre-norm encoder block (4 heads, MLP 64)     11,434
              + mean pool + linear, cross-entropy, 512 sequences of 16
============  ==========================================================  ==========
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from experiments.zoo.datasets import digits, fc_tanh, half_mse


@dataclass
class Anchor:
    """A benchmark model: ``loss_fn(model(inputs), targets)`` is the full-batch loss."""

    name: str
    description: str
    model: nn.Module
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    data: tuple[Tensor, Tensor]

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)


def _images(n: int, seed: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def _seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return build()
    finally:
        torch.random.set_rng_state(state)


def digits_mlp(widths: tuple[int, ...], seed: int) -> tuple[nn.Module, tuple[Tensor, Tensor]]:
    split = digits(seed=seed, dtype=torch.float32)
    return fc_tanh(widths, seed=seed), split.train


def _gradient_descent(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], data: tuple[Tensor, Tensor],
                      lr: float, steps: int) -> None:
    """Full-batch GD on the module's own parameters (in place: the anchor owns this model)."""
    params: list[Tensor] = [p for p in model.parameters() if p.requires_grad]
    for _ in range(steps):
        grads = torch.autograd.grad(loss_fn(model(data[0]), data[1]), params)
        with torch.no_grad():
            torch._foreach_add_(params, grads, alpha=-lr)


def _cnn(batch_norm: bool) -> nn.Module:
    def block(c_in: int, c_out: int) -> list[nn.Module]:
        norm: list[nn.Module] = [nn.BatchNorm2d(c_out)] if batch_norm else []
        return [nn.Conv2d(c_in, c_out, 3, padding=1), *norm, nn.ReLU(), nn.MaxPool2d(2)]

    if batch_norm:
        return nn.Sequential(*block(3, 16), *block(16, 16), nn.Flatten(), nn.Linear(16 * 8 * 8, 10))
    return nn.Sequential(*block(3, 16), *block(16, 32), nn.Flatten(), nn.Linear(32 * 8 * 8, 32), nn.Tanh(),
                         nn.Linear(32, 10))


class TinyTransformer(nn.Module):
    """Token embedding → one pre-norm ``nn.TransformerEncoderLayer`` → mean over positions → linear."""

    def __init__(self, vocab: int = 64, width: int = 32, heads: int = 4, hidden: int = 64,
                 length: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(0.02 * torch.randn(length, width))
        self.block = nn.TransformerEncoderLayer(width, heads, hidden, dropout=0.0, batch_first=True,
                                                norm_first=True)
        self.head = nn.Linear(width, classes)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.head(self.block(self.embed(tokens) + self.position).mean(dim=1))


def _sequences(n: int, length: int, vocab: int, seed: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (n, length), generator=gen)
    return tokens, tokens[:, :4].sum(dim=1) % 10  # a label the tokens determine


def anchor(name: str, seed: int = 0) -> Anchor:
    """Build the anchor model ``name`` (one of :data:`ANCHORS`) with seeded weights and data."""
    if name == "digits-mlp":
        model, data = digits_mlp((64, 200, 200, 10), seed)
        return Anchor(name, "fc-tanh 64-200-200-10, ½-MSE, 1500 digits", model, half_mse, data)
    if name == "digits-eos":  # the digits MLP at an edge-of-stability point: 350 GD steps at h = 0.2
        model, data = digits_mlp((64, 200, 200, 10), seed)
        _gradient_descent(model, half_mse, data, lr=0.2, steps=350)
        return Anchor(name, "fc-tanh 64-200-200-10 after 350 GD steps at h = 0.2 (λ_max ≈ 2/h), ½-MSE, "
                      "1500 digits", model, half_mse, data)
    if name == "digits-cnn-eos":  # the digits CNN (½-MSE) at an edge-of-stability point: 150 GD steps at h = 0.2
        from experiments.edge_of_stability.eos_digits import small_cnn

        split = digits(seed=seed, dtype=torch.float32)
        data = (split.x_train.reshape(-1, 1, 8, 8), split.y_train)
        model = small_cnn(1, 8, 16, seed=seed)
        _gradient_descent(model, half_mse, data, lr=0.2, steps=150)
        return Anchor(name, "conv-tanh ×2 + linear (16 channels) on 8×8 digits after 150 GD steps at h = 0.2 "
                      "(λ_max ≈ 2/h), ½-MSE, 1500 images", model, half_mse, data)
    if name == "mlp-1m":
        model, data = digits_mlp((64, 1000, 1000, 10), seed)
        return Anchor(name, "fc-tanh 64-1000-1000-10, ½-MSE, 1500 digits", model, half_mse, data)
    if name in ("cnn", "bn-cnn"):
        bn = name == "bn-cnn"
        model = _seeded(seed, lambda: _cnn(bn))
        n = 512 if bn else 1024
        what = "2×(conv-BatchNorm(train)-ReLU-pool)+linear" if bn else "2×(conv-ReLU-pool)+2048-32-10"
        return Anchor(name, f"{what}, cross-entropy, {n} CIFAR-shaped inputs", model, nn.CrossEntropyLoss(),
                      _images(n, seed))
    if name == "transformer":
        model = _seeded(seed, TinyTransformer)
        return Anchor(name, "embedding 32 + pre-norm encoder block (4 heads) + linear, cross-entropy, "
                      "512 sequences of 16", model, nn.CrossEntropyLoss(), _sequences(512, 16, 64, seed))
    raise ValueError(f"anchor must be one of {(*ANCHORS, *EOS_ANCHORS)}, got {name!r}")


ANCHORS = ("digits-mlp", "cnn", "mlp-1m", "bn-cnn", "transformer")
EOS_ANCHORS = ("digits-eos", "digits-cnn-eos")  # trained to an edge-of-stability point at h = 0.2
