"""The flat θ ⇄ named parameters layout, written once.

θ ∈ Rᴰ is the concatenation of the flattened trainable parameters in
``named_parameters()`` order: D = Σᵢ numel(pᵢ). :class:`ParameterLayout` maps
between the two forms without copying the model.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ParameterLayout:
    """Names and shapes of the parameters that make up θ (D = Σ prod(shape))."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @classmethod
    def of(cls, model: torch.nn.Module) -> ParameterLayout:
        """The layout of ``model``'s trainable parameters (``requires_grad``), in ``named_parameters()`` order."""
        pairs = [(n, p.shape) for n, p in model.named_parameters() if p.requires_grad]
        return cls(tuple(n for n, _ in pairs), tuple(s for _, s in pairs))

    @classmethod
    def of_tensors(cls, tensors: Sequence[Tensor]) -> ParameterLayout:
        """The layout of a list of tensors (named by position), e.g. an optimizer's parameter group."""
        return cls(tuple(str(i) for i in range(len(tensors))), tuple(t.shape for t in tensors))

    @property
    def sizes(self) -> list[int]:
        """Entries per parameter."""
        return [math.prod(s) for s in self.shapes]

    @property
    def dim(self) -> int:
        """D, the length of the flat θ."""
        return sum(self.sizes)

    def flatten(self, tensors: Sequence[Tensor]) -> Tensor:
        """θ from one tensor per parameter (detached; a new tensor)."""
        return torch.cat([t.detach().reshape(-1) for t in tensors])

    def split(self, theta: Tensor) -> list[Tensor]:
        """θ cut into views shaped like the parameters (shape (D,) in, views out)."""
        if theta.shape != (self.dim,):
            raise ValueError(f"theta must have shape ({self.dim},) for this layout, got {tuple(theta.shape)}")
        return [c.view(s) for c, s in zip(torch.split(theta, self.sizes), self.shapes)]

    def unflatten(self, theta: Tensor) -> dict[str, Tensor]:
        """θ as a name → tensor dict (views), for ``torch.func.functional_call``."""
        return dict(zip(self.names, self.split(theta)))

    def write(self, params: Sequence[Tensor], theta: Tensor) -> None:
        """Copy θ into ``params`` in place (under no_grad)."""
        with torch.no_grad():
            for p, chunk in zip(params, self.split(theta)):
                p.copy_(chunk)
