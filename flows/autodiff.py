"""Hessian-vector products on an autograd graph: double backward, batched, holomorphic for complex θ.

For a scalar E(θ) with a graph, ``graph_hvp`` returns (∇E, ∇²E·v): the gradient
g is taken with ``create_graph=True`` and H v = ∂(gᵀv)/∂θ is its vector-Jacobian
product; v of shape (D,) or (m, D) (batched with ``is_grads_batched``).
"""
from __future__ import annotations

import torch
from torch import Tensor


def graph_hvp(value: Tensor, theta: Tensor, v: Tensor, *, retain_graph: bool) -> tuple[Tensor, Tensor]:
    """(∇value, ∇²value · v) by double backward; handles complex (holomorphic) θ."""
    (g,) = torch.autograd.grad(value, theta, grad_outputs=torch.ones_like(value), create_graph=True)
    if theta.is_complex():
        g = g.conj()  # holomorphic gradient; its vJp is conjugated again below
        hv = vjp(g, theta, v.conj(), retain_graph).conj()
    else:
        hv = vjp(g, theta, v, retain_graph)
    return g.detach(), hv


def vjp(g: Tensor, theta: Tensor, v: Tensor, retain_graph: bool) -> Tensor:
    if not g.requires_grad:  # E is affine in θ: H = 0
        return torch.zeros_like(v)
    if v.ndim == 1:
        (hv,) = torch.autograd.grad(g, theta, grad_outputs=v, retain_graph=retain_graph,
                                    allow_unused=True)
    else:
        (hv,) = torch.autograd.grad(g, theta, grad_outputs=v, retain_graph=retain_graph,
                                    is_grads_batched=True, allow_unused=True)
    return torch.zeros_like(v) if hv is None else hv


def pair_indices(k: int) -> list[tuple[int, int]]:
    """The pairs (i, j), i ≤ j < k, in row-major order: (0,0), (0,1), …, (0,k−1), (1,1), …"""
    return [(i, j) for i in range(k) for j in range(i, k)]


def bilinear_third_derivatives(value: Tensor, theta: Tensor, u: Tensor) -> Tensor:
    """∇_θ(uᵢᵀ ∇²value uⱼ) for every pair i ≤ j of the rows of u (k, D): shape (k(k+1)/2, D), pairs in
    :func:`pair_indices` order, from one graph of ``value``.

    g = ∇value (create_graph), HUᵀ = the k products ∂(gᵀuⱼ)/∂θ in one batched backward (create_graph), then
    all pairs in one more batched backward: pair (i, j) pulls uᵢ back through row j of HU, i.e.
    ∇_θ(uᵢᵀ H uⱼ) with u held fixed. Real θ only.
    """
    k, dim = u.shape
    pairs = pair_indices(k)
    (g,) = torch.autograd.grad(value, theta, create_graph=True)
    if not g.requires_grad:  # E affine in θ
        return torch.zeros(len(pairs), dim, dtype=theta.dtype, device=theta.device)
    (hu,) = torch.autograd.grad(g, theta, grad_outputs=u, is_grads_batched=True, create_graph=True,
                                allow_unused=True)
    if hu is None or not hu.requires_grad:  # E quadratic in θ: no third derivative
        return torch.zeros(len(pairs), dim, dtype=theta.dtype, device=theta.device)
    pulls = torch.zeros(len(pairs), k, dim, dtype=theta.dtype, device=theta.device)
    for p, (i, j) in enumerate(pairs):
        pulls[p, j] = u[i]
    (out,) = torch.autograd.grad(hu, theta, grad_outputs=pulls, is_grads_batched=True, allow_unused=True)
    return torch.zeros(len(pairs), dim, dtype=theta.dtype, device=theta.device) if out is None else out
