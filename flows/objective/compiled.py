"""Compiled curvature products: the HVP and the bilinear third derivatives as compiled graphs.

For one loss piece E_b, the product (∇E_b(θ), ∇²E_b(θ) v) = ``vjp(grad(E_b), θ)`` pulled back along v, and the pair
vector tᵢⱼ = ∇_θ(uᵢᵀ ∇²E_b(θ) uⱼ) = ``grad(θ ↦ ⟨uᵢ, H(θ) uⱼ⟩)`` are traced once into plain ATen graphs with ``make_fx``
(the torch.func transforms run at trace time; the graph has no autograd left in it) and compiled with
``torch.compile``. Reverse mode throughout: every layer with a double backward works, LSTMs included, which have no
forward-mode derivative on the CPU. Compiling the transforms directly fails in inductor on torch 2.13 ("Cannot access
storage of TensorWrapper"), and compiled graphs do not double-backward; tracing first avoids both.

One graph per piece and kind, traced for one vector (D,) or one pair: a batch (m, D) loops over its rows, and the k
columns of ``third_derivatives`` over their k(k+1)/2 pairs, so the graphs do not depend on m or k (each new shape
would mean another compilation, which takes tens of seconds on a CPU). The data of a piece are constants of its
graph. A graph is rebuilt when θ's dtype or device changes. A loss that draws random numbers (fixed dropout masks)
is refused: its seed is set in Python, which a graph does not replay.

Whether this is faster is model- and device-dependent: ``driftlab run bench-compiled`` measures it against the eager
products, and :class:`flows.Objective` uses it only when asked (``hvp_method="compiled"``).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .autodiff import pair_indices

Piece = Callable[[Tensor], Tensor]
Graph = Callable[..., tuple[Tensor, ...]]


def _hvp_function(piece: Piece) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]:
    gradient = torch.func.grad(piece)

    def grad_and_hvp(theta: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        g, pull_back = torch.func.vjp(gradient, theta)  # type: ignore[misc]  # stubs: has_aux
        return g, pull_back(v)[0]  # vᵀH = (Hv)ᵀ: H is symmetric

    return grad_and_hvp


def _pair_function(piece: Piece) -> Callable[[Tensor, Tensor, Tensor], tuple[Tensor]]:
    gradient = torch.func.grad(piece)

    def bilinear(theta: Tensor, a: Tensor, b: Tensor) -> Tensor:
        return torch.dot(a, torch.func.vjp(gradient, theta)[1](b)[0])

    pair_gradient = torch.func.grad(bilinear)

    def pair(theta: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor]:
        return (pair_gradient(theta, a, b),)

    return pair


def _refuse_random_ops(traced: torch.fx.GraphModule) -> None:
    """Raise where the traced graph draws random numbers (dropout with ``stochastic_seed``).

    The seed of such a loss is set in Python at trace time; the graph would draw new numbers at every call, from
    the global generator.
    """
    random = sorted({str(node.target) for node in traced.graph.nodes if node.op == "call_function"
                     and torch.Tag.nondeterministic_seeded in getattr(node.target, "tags", ())})
    if random:
        raise RuntimeError(f"the loss draws random numbers ({', '.join(random)}, e.g. dropout with stochastic_seed); "
                           "a compiled graph would draw new ones at every call")


class CompiledProducts:
    """The compiled per-piece graphs of one objective's HVPs and pair third derivatives, built on first use.

    Args:
        pieces: the objective's loss pieces (E = Σ pieces), each θ ↦ 0-d tensor, deterministic.
        backend: the ``torch.compile`` backend (``"inductor"``; ``"eager"`` runs the traced graphs uncompiled).
    """

    def __init__(self, pieces: Sequence[Piece], backend: str = "inductor") -> None:
        self.pieces = list(pieces)
        self.backend = backend
        self._graphs: dict[tuple[str, int, torch.dtype, torch.device], Graph] = {}

    def _graph(self, kind: str, index: int, example: tuple[Tensor, ...]) -> Graph:
        theta = example[0]
        key = (kind, index, theta.dtype, theta.device)
        if key not in self._graphs:
            from torch.fx.experimental.proxy_tensor import make_fx

            make = _hvp_function if kind == "hvp" else _pair_function
            traced = make_fx(make(self.pieces[index]))(*example)
            _refuse_random_ops(traced)
            compiled = traced if self.backend == "eager" else torch.compile(traced, backend=self.backend,
                                                                            dynamic=False)
            self._graphs[key] = compiled
        return self._graphs[key]

    def grad_and_hvp(self, theta: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """(∇E(θ), ∇²E(θ) v) summed over the pieces; v of shape (D,) or (m, D) (rows one at a time)."""
        rows = v.reshape(-1, v.shape[-1])
        grad = torch.zeros_like(theta)
        hv = torch.zeros_like(rows)
        for index in range(len(self.pieces)):
            graph = self._graph("hvp", index, (theta, rows[0]))
            for r, row in enumerate(rows):
                g_b, hv_b = graph(theta, row.contiguous())
                hv[r] += hv_b
            grad += g_b  # every row's call returns the same gradient: one is kept
        return grad, hv.reshape(v.shape)

    def third_derivatives(self, theta: Tensor, rows: Tensor) -> Tensor:
        """∇_θ(uᵢᵀ ∇²E(θ) uⱼ) for the pairs i ≤ j of the rows u of ``rows`` (k, D): shape (k(k+1)/2, D)."""
        pairs = pair_indices(rows.shape[0])
        out = torch.zeros(len(pairs), theta.numel(), dtype=theta.dtype, device=theta.device)
        for index in range(len(self.pieces)):
            graph = self._graph("pair", index, (theta, rows[0], rows[0]))
            for p, (i, j) in enumerate(pairs):
                out[p] += graph(theta, rows[i], rows[j])[0]
        return out
