"""Vector fields dθ/dt = F(θ) of the continuous models of gradient descent with learning rate h.

Every field has the signature ``field(objective, θ, lr, **options) -> dθ/dt`` and
lives in :data:`FIELDS`, keyed by name. Notation: g = ∇E(θ), H = ∇²E(θ) with
eigenpairs (λᵢ, uᵢ), h = lr.

====================== =============================================================== ==========
name                   dθ/dt                                                           GD local error
====================== =============================================================== ==========
``gf``                 −g                                                              O(h²)
``igr``                −g − (h/2) H g = −∇[E + (h/4)‖g‖²]                              O(h³)
``third_order``        −g − (h/2)Hg − h²[(1/3)H²g + (1/12)∇(gᵀH(θ)g)|_g fixed]         O(h⁴)
``pf``                 Σᵢ c(hλᵢ)(gᵀuᵢ)uᵢ = c(hH) g,  c(x) = log(1−x)/x                  exact on quadratics
``pf_topk``            −g + Σ_{i≤k} (c(hλᵢ)+1)(gᵀuᵢ)uᵢ, real part                       —
``pf_topk_igr``        −g − (h/2)Hg + Σ_{i≤k} (c(hλᵢ)+1+hλᵢ/2)(gᵀuᵢ)uᵢ, real part        —
====================== =============================================================== ==========

The principal flow (PF) is complex when some hλ > 1: log(1−x) = log|1−x| + iπ.
:func:`pf` then accepts complex θ, where g and H are the analytic continuations.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .objective import Objective
from .spectrum import EigenTracker, top_eigenpairs

KILL_FLOOR = 1e-12  # |1 − hλ| is floored here: hλ = 1 (a one-step kill in GD) decays by 1e-12 per step h


def principal_log(w: Tensor) -> Tensor:
    """log w on the branch arg ∈ (−π/2, 3π/2], so that log(1 − x) = log|1 − x| + iπ for real x > 1.

    The usual principal branch would flip between ±iπ under round-off in the
    imaginary part; this branch is continuous across the negative real axis.
    """
    w = w.to(torch.promote_types(w.dtype, torch.complex64))
    angle = torch.angle(w)
    angle = torch.where(angle <= -math.pi / 2, angle + 2 * math.pi, angle)
    return torch.complex(torch.log(torch.clamp(w.abs(), min=KILL_FLOOR)), angle)


def pf_coefficient(x: Tensor) -> Tensor:
    """c(x) = log(1 − x)/x, complex, with c(0) = −1 (series near 0) and x = 1 floored (finite).

    Regimes of Re c along real x: x < 0 growth (saddle escape), 0 < x < 1
    monotone decay, 1 < x < 2 oscillating decay (Re c < 0), x > 2 oscillating
    divergence (Re c > 0).
    """
    x = torch.as_tensor(x)
    xc = x.to(torch.promote_types(x.dtype, torch.complex64))
    small = xc.abs() < 1e-4
    safe = torch.where(small, torch.ones_like(xc), xc)
    series = -1 - xc / 2 - xc ** 2 / 3 - xc ** 3 / 4
    return torch.where(small, series, principal_log(1 - safe) / safe)


# ----------------------------------------------------------------- fields
def gf(objective: Objective, theta: Tensor, lr: float, **_: object) -> Tensor:
    """Gradient flow: θ' = −∇E(θ)."""
    return -objective.grad(theta)


def igr(objective: Objective, theta: Tensor, lr: float, **_: object) -> Tensor:
    """Implicit gradient regularization flow: θ' = −g − (h/2) H g."""
    g, hg = objective.grad_and_hessian_grad(theta)
    return -g - 0.5 * lr * hg


def third_order(objective: Objective, theta: Tensor, lr: float, **_: object) -> Tensor:
    """Third-order modified flow: θ' = −g − (h/2)Hg − h²[(1/3)H²g + (1/12)∇(gᵀH(θ)g)|_{g fixed}]."""
    op = objective.hessian_operator(theta)
    g = op.gradient
    hg = op @ g
    h2g = op @ hg
    op.release()
    t = objective.third_derivative(theta, g)
    return -g - 0.5 * lr * hg - lr ** 2 * (h2g / 3 + t / 12)


def pf(objective: Objective, theta: Tensor, lr: float, **_: object) -> Tensor:
    """Exact principal flow θ' = c(hH) g from the dense Hessian (small D).

    Real θ: H = U Λ Uᵀ (eigh), θ' = U c(hΛ) Uᵀ g, complex as soon as some
    hλ > 1. Complex θ: H is complex symmetric, H = V Λ V⁻¹ (eig), θ' = V c(hΛ) V⁻¹ g.
    The result is always complex (the PF state lives in Cᴰ).
    """
    g = objective.grad(theta)
    h = objective.hessian(theta)
    if not theta.is_complex():
        lam, u = torch.linalg.eigh(h)
        coeff = pf_coefficient(lr * lam)
        return (u.to(coeff.dtype) * coeff) @ (u.T.to(coeff.dtype) @ g.to(coeff.dtype))
    lam, v = torch.linalg.eig(h)
    coeff = pf_coefficient(lr * lam)
    return v @ (coeff * torch.linalg.solve(v, g.to(v.dtype)))


def _top_pairs(objective: Objective, theta: Tensor, k: int, tracker: EigenTracker | None, tol: float,
               t: float | None, refresh: float):
    if tracker is None:
        return top_eigenpairs(objective, theta, k, tol=tol)
    stale = (tracker.last is None or t is None or refresh <= 0
             or abs(t - getattr(tracker, "stamp", -math.inf)) >= refresh)
    if stale:
        tracker.stamp = t
        return tracker.update(objective, theta)
    return tracker.last


def pf_topk(objective: Objective, theta: Tensor, lr: float, *, k: int = 10,
            tracker: EigenTracker | None = None, tol: float = 1e-4, t: float | None = None,
            refresh: float = 0.0, rest: str = "gf", **_: object) -> Tensor:
    """Top-k principal flow θ' = −g + Σ_{i≤k} Re(c(hλᵢ)+1)(gᵀuᵢ)uᵢ (real θ).

    The top-k eigenpairs come from ``tracker`` (warm-started along the path)
    or a fresh :func:`~flows.top_eigenpairs` solve. The rest of the spectrum
    is treated as gradient flow (c ≈ −1, ``rest="gf"``, the PF paper's choice)
    or, with ``rest="igr"``, to first order as the IGR flow (c ≈ −1 − hλ/2):
    θ' = −g − (h/2)Hg + Σ_{i≤k} Re(c(hλᵢ) + 1 + hλᵢ/2)(gᵀuᵢ)uᵢ, one HVP more.
    With a tracker, time ``t`` and ``refresh`` > 0, the eigenpairs are
    re-solved only when the flow time moved by ≥ ``refresh`` since the last
    solve (the gradient is always fresh): ``refresh = lr`` solves about once
    per GD step.
    """
    if theta.is_complex():
        raise TypeError("pf_topk integrates the real part: θ must be real")
    if rest not in ("gf", "igr"):
        raise ValueError(f"rest must be 'gf' or 'igr', got {rest!r}")
    pairs = _top_pairs(objective, theta, k, tracker, tol, t, refresh)
    u = pairs.vectors
    coeff = pf_coefficient(lr * pairs.values).real + 1
    if rest == "gf":
        g = objective.grad(theta)
        base = -g
    else:
        g, hg = objective.grad_and_hessian_grad(theta)
        base = -g - 0.5 * lr * hg
        coeff = coeff + 0.5 * lr * pairs.values
    return base + u @ (coeff.to(theta.dtype) * (u.T @ g))


def pf_topk_igr(objective: Objective, theta: Tensor, lr: float, **options: object) -> Tensor:
    """Top-k PF with the rest of the spectrum as IGR: :func:`pf_topk` with ``rest="igr"``."""
    options.pop("rest", None)
    return pf_topk(objective, theta, lr, rest="igr", **options)


FIELDS: dict[str, Callable[..., Tensor]] = {
    "gf": gf, "igr": igr, "third_order": third_order, "pf": pf, "pf_topk": pf_topk,
    "pf_topk_igr": pf_topk_igr,
}
COMPLEX_FIELDS = frozenset({"pf"})


def get_field(name: str) -> Callable[..., Tensor]:
    """The vector field registered under ``name``."""
    if name not in FIELDS:
        raise ValueError(f"unknown flow {name!r}; valid choices: {', '.join(FIELDS)}")
    return FIELDS[name]
