"""Hessian-vector products on an autograd graph: double backward, batched, holomorphic for complex θ.

For a scalar E(θ) with a graph, ``graph_hvp`` returns (∇E, ∇²E·v): the gradient
g is taken with ``create_graph=True`` and H v = ∂(gᵀv)/∂θ is its vector-Jacobian
product; v of shape (D,) or (m, D) (batched with ``is_grads_batched``).
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor


def graph_hvp(value: Tensor, theta: Tensor, v: Tensor, *, retain_graph: bool,
              batched: bool = True) -> tuple[Tensor, Tensor]:
    """(∇value, ∇²value · v) by double backward; handles complex (holomorphic) θ."""
    (g,) = torch.autograd.grad(value, theta, grad_outputs=torch.ones_like(value), create_graph=True)
    if theta.is_complex():
        g = g.conj()  # holomorphic gradient; its vJp is conjugated again below
        hv = vjp(g, theta, v.conj(), retain_graph, batched).conj()
    else:
        hv = vjp(g, theta, v, retain_graph, batched)
    return g.detach(), hv


def vjp(g: Tensor, theta: Tensor, v: Tensor, retain_graph: bool, batched: bool = True) -> Tensor:
    """∂(gᵀv)/∂θ for v (D,) or each row of v (m, D).

    One batched backward (``is_grads_batched``), or with ``batched=False`` one backward per row (for graphs whose
    batched double backward fails, e.g. group norm).
    """
    if not g.requires_grad:  # E is affine in θ: H = 0
        return torch.zeros_like(v)
    if v.ndim == 2 and not batched:
        rows = [vjp(g, theta, row, retain_graph or i < len(v) - 1) for i, row in enumerate(v)]
        return torch.stack(rows) if rows else torch.zeros_like(v)
    if v.ndim == 1:
        (hv,) = torch.autograd.grad(g, theta, grad_outputs=v, retain_graph=retain_graph,
                                    allow_unused=True)
    else:
        (hv,) = torch.autograd.grad(g, theta, grad_outputs=v, retain_graph=retain_graph,
                                    is_grads_batched=True, allow_unused=True)
    return torch.zeros_like(v) if hv is None else hv


def graph_nodes(roots: list, stop: set) -> Iterator:
    """Every autograd node reachable from ``roots`` without passing a node of ``stop``, each once.

    ``roots`` are grad_fns; None entries are skipped.
    """
    seen, todo = set(), [r for r in roots if r is not None]
    while todo:
        node = todo.pop()
        if node in seen or node in stop:
            continue
        seen.add(node)
        yield node
        todo.extend(fn for fn, _ in node.next_functions if fn is not None)


def pair_indices(k: int) -> list[tuple[int, int]]:
    """The pairs (i, j), i ≤ j < k, in row-major order: (0,0), (0,1), …, (0,k−1), (1,1), and so on."""
    return [(i, j) for i in range(k) for j in range(i, k)]


def bilinear_third_derivatives(value: Tensor, theta: Tensor, u: Tensor, batched: bool = True) -> Tensor:
    """∇_θ(uᵢᵀ ∇²value uⱼ) for every pair i ≤ j of the rows of u (k, D).

    Shape (k(k+1)/2, D), pairs in :func:`pair_indices` order, from one graph of ``value``.

    g = ∇value (create_graph); then for each j the product Huⱼ = ∂(gᵀuⱼ)/∂θ (create_graph) and one batched
    backward that pulls u₀ … uⱼ back through it: row i is ∇_θ(uᵢᵀ H uⱼ) with u held fixed. Each pair costs one
    pass through one product's graph (a single batched product over all j would make every pair pay for all k
    rows: k³ work instead of k²). Real θ only. ``batched=False``: one backward per pair instead of one batched
    backward per column (for graphs whose batched double backward fails).
    """
    k, dim = u.shape
    pairs = pair_indices(k)
    out = torch.zeros(len(pairs), dim, dtype=theta.dtype, device=theta.device)
    (g,) = torch.autograd.grad(value, theta, create_graph=True)
    if not g.requires_grad:  # E affine in θ
        return out
    index = {pair: p for p, pair in enumerate(pairs)}
    for j in range(k):
        (hu_j,) = torch.autograd.grad(g, theta, grad_outputs=u[j], create_graph=True, retain_graph=True,
                                      allow_unused=True)
        if hu_j is None or not hu_j.requires_grad:  # E quadratic in θ: no third derivative
            return out
        rows = vjp(hu_j, theta, u[: j + 1], j < k - 1, batched) if hu_j.requires_grad else None
        if rows is not None:
            for i in range(j + 1):
                out[index[(i, j)]] = rows[i]
    return out
