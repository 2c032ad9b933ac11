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
