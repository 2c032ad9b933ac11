"""Vector fields dθ/dt = F(θ) of the continuous models of gradient descent with learning rate h.

Every field has the signature ``field(objective, θ, lr, *, options) -> dθ/dt`` and is
described by a :class:`Flow` record in :data:`FLOWS`, keyed by name (what the
integrator, the plots and the experiments need to know, so none of them tests
names); :data:`FIELDS` maps the names to the bare functions. Notation: g = ∇E(θ), H = ∇²E(θ) with
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
``central``            −g − ½ Σᵢⱼ Xᵢⱼ ∇(uᵢᵀHuⱼ), X from the stability SDCP (hλᵢ > 1.95)   — (time average)
``heavy_ball_gf``      −g/(1−β)  (heavy-ball GD with momentum β, leading order)             O(h²)
``heavy_ball``         −g/(1−β) − h(1+β)/(2(1−β)³) H g                                   O(h³)
``sgd_modified``       −ḡ − (h/2m) Σₖ Hₖ gₖ  over the m batches of an epoch (ḡ = Σₖ gₖ/m)  O(m³h³) per epoch,
                                                                                       in expectation
====================== =============================================================== ==========

The central flow (:mod:`flows.dynamics.central`, Cohen, Damian et al., ICLR 2025) models GD's *time-averaged* path at
the edge of stability rather than its iterates.

The principal flow (PF) is complex when some hλ > 1: log(1−x) = log|1−x| + iπ.
:func:`pf` then accepts complex θ, where g and H are the analytic continuations.
"""
from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..curvature.spectrum import EigenTracker, top_eigenpairs
from ..objective.objective import Objective
from .central import CentralState, central, certification_due, check_verify_steps

KILL_FLOOR = 1e-12  # |1 − hλ| is floored here: hλ = 1 (a one-step kill in GD) decays by 1e-12 per step h


def principal_log(w: Tensor) -> Tensor:
    """The logarithm on the branch arg ∈ (−π/2, 3π/2], so that log(1 − x) = log|1 − x| + iπ for real x > 1.

    The usual principal branch would flip between ±iπ under round-off in the
    imaginary part; this branch is continuous across the negative real axis.
    """
    w = w.to(torch.promote_types(w.dtype, torch.complex64))
    angle = torch.angle(w)
    angle = torch.where(angle <= -math.pi / 2, angle + 2 * math.pi, angle)
    return torch.complex(torch.log(torch.clamp(w.abs(), min=KILL_FLOOR)), angle)


def pf_coefficient(x: Tensor, log_one_minus_x: Tensor | None = None) -> Tensor:
    """c(x) = log(1 − x)/x, complex, with c(0) = −1 (series near 0) and x = 1 floored (finite).

    ``log_one_minus_x`` is the branch of log(1 − x) to use (from a
    :class:`LogBranch` that continues it along a path); by default the branch
    of :func:`principal_log`, whose cut lies on Re x = 1, Im x > 0.

    Regimes of Re c along real x: x < 0 growth (saddle escape), 0 < x < 1
    monotone decay, 1 < x < 2 oscillating decay (Re c < 0), x > 2 oscillating
    divergence (Re c > 0).
    """
    x = torch.as_tensor(x)
    xc = x.to(torch.promote_types(x.dtype, torch.complex64))
    small = xc.abs() < 1e-4
    safe = torch.where(small, torch.ones_like(xc), xc)
    series = -1 - xc / 2 - xc ** 2 / 3 - xc ** 3 / 4
    log = principal_log(1 - safe) if log_one_minus_x is None else log_one_minus_x.to(xc.dtype)
    if log_one_minus_x is not None:  # another branch near x = 0 adds 2πik/x to the principal series
        shift = log - principal_log(1 - xc)
        series = series + torch.where(shift == 0, torch.zeros_like(xc), shift / torch.where(xc == 0, safe, xc))
    return torch.where(small, series, log / safe)


BRANCHES = ("principal", "continued")


class LogBranch:
    """log(1 − xᵢ) along a path of eigenvalue sets x(t) ∈ Cⁿ, watching the branch cut.

    The complex PF state of a non-quadratic objective has a complex-symmetric
    Hessian whose eigenvalues x = hλ leave the real axis and can cross the cut
    of :func:`principal_log` (Re x = 1, Im x > 0), where log(1 − x) jumps by
    2πi. Every branch log(1 − x) + 2πik reproduces GD at t = n·h on a
    quadratic; they differ in how many turns the state makes between steps.

    Each call matches the new eigenvalues to the previous call's (nearest
    assignment) and detects a crossing of the cut (the principal value moved
    by more than π since the previous call). ``mode``:

    * ``"principal"`` (default): return the principal branch (the least
      rotation per step, the best match to GD measured on the bundled toys);
      the field then has a jump at the cut, and each crossing is counted.
    * ``"continued"``: add the multiple of 2πi that keeps each log(1 − xᵢ)
      continuous with the previous call (analytic continuation along the
      path; the first call is principal, log|1 − x| + iπ for real x > 1).
      Paths that wind around the branch point x = 1 then accumulate turns.

    ``crossings`` counts cut crossings, ``first_crossing`` holds (t, x) of the
    first. Colliding eigenvalues (an exceptional point) cannot be told apart.
    """

    def __init__(self, mode: str = "principal") -> None:
        if mode not in BRANCHES:
            raise ValueError(f"branch mode must be one of {BRANCHES}, got {mode!r}")
        self.mode = mode
        self.reset()

    def reset(self) -> None:
        """Forget the path (a new integration starts)."""
        self._x: Tensor | None = None
        self._log: Tensor | None = None
        self._turns: Tensor | None = None
        self.crossings = 0
        self.first_crossing: tuple[float | None, complex] | None = None

    def __call__(self, x: Tensor, t: float | None = None) -> Tensor:
        """log(1 − x) for eigenvalues ``x`` (n,) on this path's branch; same order as ``x``."""
        x = torch.as_tensor(x)
        x = x.to(torch.promote_types(x.dtype, torch.complex64))
        log = principal_log(1 - x)
        turns = torch.zeros(x.shape, dtype=log.real.dtype, device=x.device)
        if self._x is not None and self._log is not None and self._turns is not None and self._x.shape == x.shape:
            cost = (x[:, None] - self._x[None, :]).abs()
            match_t = cost.argmin(dim=1)
            if torch.unique(match_t).numel() != match_t.numel():  # nearest is not one-to-one: assign
                from scipy.optimize import linear_sum_assignment

                match_t = torch.as_tensor(linear_sum_assignment(cost.detach().cpu().numpy())[1], device=x.device)
            needed = torch.round((self._log[match_t].imag - log.imag) / (2 * math.pi))
            crossed = needed != self._turns[match_t]
            if bool(crossed.any()):
                self.crossings += int(crossed.sum())
                if self.first_crossing is None:
                    self.first_crossing = (t, complex(x[crossed][0]))
            if self.mode == "continued":
                turns = needed
                log = log + 2j * math.pi * turns
        self._x = x.detach().clone()
        self._log = log.detach().clone()
        self._turns = turns
        return log


# ----------------------------------------------------------------- fields
def gf(objective: Objective, theta: Tensor, lr: float) -> Tensor:
    """Gradient flow: θ' = −∇E(θ)."""
    return -objective.grad(theta)


def igr(objective: Objective, theta: Tensor, lr: float) -> Tensor:
    """Implicit gradient regularization flow: θ' = −g − (h/2) H g."""
    g, hg = objective.grad_and_hessian_grad(theta)
    return -g - 0.5 * lr * hg


def third_order(objective: Objective, theta: Tensor, lr: float) -> Tensor:
    """Third-order modified flow: θ' = −g − (h/2)Hg − h²[(1/3)H²g + (1/12)∇(gᵀH(θ)g)|_{g fixed}]."""
    op = objective.hessian_operator(theta)
    g = op.gradient
    hg = op @ g
    h2g = op @ hg
    op.release()
    t = objective.third_derivative(theta, g)
    return -g - 0.5 * lr * hg - lr ** 2 * (h2g / 3 + t / 12)


def pf(objective: Objective, theta: Tensor, lr: float, *, branch: LogBranch | None = None,
       t: float | None = None) -> Tensor:
    """Exact principal flow θ' = c(hH) g from the dense Hessian (small D).

    Real θ: H = U Λ Uᵀ (eigh), θ' = U c(hΛ) Uᵀ g, complex as soon as some
    hλ > 1. Complex θ: H is complex symmetric, H = V Λ V⁻¹ (eig), θ' = V c(hΛ) V⁻¹ g.
    The result is always complex (the PF state lives in Cᴰ).

    Along a path, pass one ``branch`` (a :class:`LogBranch`) to every call:
    it counts crossings of the branch cut (complex eigenvalues crossing
    Re hλ = 1 with Im hλ > 0) and, in ``"continued"`` mode, continues
    log(1 − hλᵢ) analytically so the field stays continuous there
    (``integrate`` passes one). Without it each call uses the principal branch.
    """
    g = objective.grad(theta)
    h = objective.hessian(theta)
    if not theta.is_complex():
        lam, u = torch.linalg.eigh(h)
        x = lr * lam
        coeff = pf_coefficient(x, None if branch is None else branch(x, t))
        return (u.to(coeff.dtype) * coeff) @ (u.T.to(coeff.dtype) @ g.to(coeff.dtype))
    lam, v = torch.linalg.eig(h)
    x = lr * lam
    coeff = pf_coefficient(x, None if branch is None else branch(x, t))
    return v @ (coeff * torch.linalg.solve(v, g.to(v.dtype)))


def _top_pairs(objective: Objective, theta: Tensor, k: int, tracker: EigenTracker | None, tol: float,
               t: float | None, refresh: float, lr: float, verify_steps: float):
    if tracker is None:
        return top_eigenpairs(objective, theta, k, tol=tol)
    stale = (tracker.last is None or t is None or refresh <= 0
             or abs(t - tracker.stamp) >= refresh)
    if not stale:
        return tracker.last
    tracker.stamp = -math.inf if t is None else t
    certify = tracker.verify and (tracker.last is None
                                  or certification_due(t, tracker.certified, verify_steps, lr))
    pairs = tracker.update(objective, theta, verify=certify)
    if certify:
        tracker.certified = tracker.stamp
    return pairs


def pf_topk(objective: Objective, theta: Tensor, lr: float, *, k: int = 10,
            tracker: EigenTracker | None = None, tol: float = 1e-4, t: float | None = None,
            refresh: float = 0.0, rest: str = "gf", verify_steps: float = 1.0) -> Tensor:
    """Top-k principal flow θ' = −g + Σ_{i≤k} Re(c(hλᵢ)+1)(gᵀuᵢ)uᵢ (real θ).

    The top-k eigenpairs come from ``tracker`` (warm-started along the path)
    or a fresh :func:`~flows.top_eigenpairs` solve. The rest of the spectrum
    is treated as gradient flow (c ≈ −1, ``rest="gf"``, the PF paper's choice)
    or, with ``rest="igr"``, to first order as the IGR flow (c ≈ −1 − hλ/2):
    θ' = −g − (h/2)Hg + Σ_{i≤k} Re(c(hλᵢ) + 1 + hλᵢ/2)(gᵀuᵢ)uᵢ, one HVP more.
    With a tracker, time ``t`` and ``refresh`` > 0, the eigenpairs are
    re-solved only when the flow time moved by ≥ ``refresh`` since the last
    solve (the gradient is always fresh): ``refresh = lr`` solves about once
    per GD step. A tracker's solves are certified (its verification rounds
    for missed or repeated eigenvalues, ``EigenTracker(verify=True)``) once
    per ``verify_steps`` GD steps of flow time, as the central flow's are;
    the solves between are warm solves from the certified set (0: certify
    every solve).
    """
    if theta.is_complex():
        raise TypeError("pf_topk integrates the real part: θ must be real")
    if rest not in ("gf", "igr"):
        raise ValueError(f"rest must be 'gf' or 'igr', got {rest!r}")
    verify_steps = check_verify_steps(verify_steps)
    pairs = _top_pairs(objective, theta, k, tracker, tol, t, refresh, lr, verify_steps)
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


def pf_topk_igr(objective: Objective, theta: Tensor, lr: float, *, k: int = 10,
                tracker: EigenTracker | None = None, tol: float = 1e-4, t: float | None = None,
                refresh: float = 0.0, verify_steps: float = 1.0) -> Tensor:
    """Top-k PF with the rest of the spectrum as IGR: :func:`pf_topk` with ``rest="igr"``."""
    return pf_topk(objective, theta, lr, k=k, tracker=tracker, tol=tol, t=t, refresh=refresh, rest="igr",
                   verify_steps=verify_steps)


def _check_momentum(momentum: float) -> float:
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
        raise ValueError(f"momentum must be a number in [0, 1), got {momentum!r}")
    return float(momentum)


def heavy_ball_gf(objective: Objective, theta: Tensor, lr: float, *, momentum: float = 0.9) -> Tensor:
    """Heavy-ball GD's leading-order flow θ' = −g/(1−β) (flow time t = n·h; the effective rate h/(1−β))."""
    return -objective.grad(theta) / (1 - _check_momentum(momentum))


def heavy_ball(objective: Objective, theta: Tensor, lr: float, *, momentum: float = 0.9) -> Tensor:
    """Heavy-ball GD's first-order modified flow, θₙ₊₁ = θₙ − h∇E(θₙ) + β(θₙ − θₙ₋₁) at t = n·h.

        θ' = −g/(1−β) − h(1+β)/(2(1−β)³) H g = −(1/(1−β)) ∇[E + h(1+β)/(4(1−β)²) ‖∇E‖²].

    Backward error analysis on the attractive invariant manifold of the two-step map (Kovachki & Stuart,
    "Continuous time analysis of momentum methods", JMLR 2021), derived here to first order: the one-step
    displacement δ(θ) = −hg/(1−β) − βh²Hg/(1−β)³ + O(h³) matched to the flow's
    Taylor series. Against GD at the effective rate h/(1−β), whose regulariser is (h/(4(1−β)))‖∇E‖², the
    regulariser is (1+β)/(1−β) times stronger: Ghosh et al. 2023 (arXiv 2302.00849). β = 0 gives IGR. Local
    error O(h³) from a point on the manifold (:func:`flows.dynamics.integrate.heavy_ball_local_error`).
    """
    beta = _check_momentum(momentum)
    g, hg = objective.grad_and_hessian_grad(theta)
    return -g / (1 - beta) - lr * (1 + beta) / (2 * (1 - beta) ** 3) * hg


def sgd_modified(objective: Objective, theta: Tensor, lr: float, *, epoch: Objective) -> Tensor:
    """SGD's modified flow over one epoch of m batches (Smith, Dherin, Barrett, De 2021, arXiv 2101.12176).

    Their modified loss for random shuffling, checked here by exact averaging over all m! batch orders:
    with random shuffling the *mean* SGD iterate after the epoch follows, to O(m³h³),

        θ' = −∇E_SGD,   E_SGD = E + (h/4m) Σₖ ‖∇E_k‖²,   i.e. θ' = −ḡ − (h/2m) Σₖ H_k g_k,

    with E_k the k-th batch's loss and E = Σₖ E_k/m. ``epoch`` is an Objective whose m pieces are E_k/m
    (:meth:`flows.curvature.stochastic.MiniBatches.epoch`); ``objective`` is not read (the loss is the epoch's own).
    Flow time t = n·h for n SGD steps: one epoch is t = m·h.
    """
    m = len(epoch.pieces)
    epoch.check_second_order(theta)
    leaf = theta.detach().clone().requires_grad_(True)
    mean_grad = torch.zeros_like(theta)
    correction = torch.zeros_like(theta)
    with torch.enable_grad():
        for piece in epoch.pieces:
            (g,) = torch.autograd.grad(piece(leaf), leaf, create_graph=True)
            (hg,) = torch.autograd.grad(g, leaf, grad_outputs=g.detach())
            mean_grad += g.detach()
            correction += hg
    # pieces are E_k/m: ∇E_k = m·∇piece, H_k g_k = m²·H_piece g_piece
    return -mean_grad - (lr / (2 * m)) * m * m * correction


# ----------------------------------------------------------------- the flow records
STIFFNESS_MODELS = ("gradient", "igr", "principal")


def _branch_option(options: dict) -> dict:
    """pf: ``branch`` is a mode name for the user, a :class:`LogBranch` (one per path) for the field."""
    options = dict(options)
    options["branch"] = LogBranch(options.get("branch", "principal"))
    return options


def _central_option(options: dict) -> dict:
    """central: the caller's settings become one :class:`~flows.dynamics.central.CentralState` per path."""
    return {"state": CentralState(**options)}


def _central_summary(options: dict) -> dict:
    return options["state"].summary()


def _central_metrics(options: dict) -> dict[str, float]:
    return options["state"].metrics()


def _no_summary(options: dict) -> dict:
    return {}


@dataclass(frozen=True)
class Flow:
    """A continuous model of GD with rate h: its field and what integrating and drawing it needs.

    Attributes:
        name: registry key (``integrate(..., flow=name)``).
        field: ``field(objective, θ, lr, **kwargs) -> dθ/dt``.
        label: legend text.
        order: p in ‖θ_flow(h) − θ_GD(h)‖ = O(hᵖ) for one step on a general objective
            (backward error analysis; the PF is exact on quadratics and at least third order).
        complex_state: the state lives in Cᴰ (θ is promoted to complex).
        eigenpairs: the field takes top-k eigenpairs (``k``, ``tracker``, ``tol``, ``refresh``).
        timed: the field takes the flow time ``t`` (eigenpair refresh, branch tracking).
        options: what a caller may set through ``integrate(..., flow_options=...)``.
        stiffness: the model of the largest rate |∂F/∂θ| given |λ|max (see :meth:`rate`).
        prepare: turns the caller's ``flow_options`` into the field's keywords, once per path.
        summary: what a finished path adds to its trajectory's config, from the prepared keywords.
        metrics: the row a field evaluation measured, from the prepared keywords (None: the integrator records the
            loss and gradient norm itself). Recorded at each output time from the evaluation at that very state.
        worst: names in ``metrics`` recorded as their worst (largest) value over the evaluations that led to the
            output time (the solver's steps and stages since the previous one), not only the one at it.
    """

    name: str
    field: Callable[..., Tensor]
    label: str
    order: int
    complex_state: bool = False
    eigenpairs: bool = False
    timed: bool = False
    options: tuple[str, ...] = ()
    stiffness: str = "gradient"
    prepare: Callable[[dict], dict] = dict
    summary: Callable[[dict], dict] = _no_summary
    metrics: Callable[[dict], dict[str, float]] | None = None
    worst: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.stiffness not in STIFFNESS_MODELS:
            raise ValueError(f"stiffness must be one of {STIFFNESS_MODELS}, got {self.stiffness!r}")

    @functools.cached_property
    def keywords(self) -> tuple[str, ...]:
        """Every keyword the field accepts."""
        return tuple(n for n, p in inspect.signature(self.field).parameters.items() if p.kind is p.KEYWORD_ONLY)

    def __call__(self, objective: Objective, theta: Tensor, lr: float, **kwargs: object) -> Tensor:
        """The field at θ; an unknown keyword raises a TypeError naming the valid ones."""
        unknown = sorted(set(kwargs) - set(self.keywords))
        if unknown:
            raise TypeError(f"flow {self.name!r} takes no option(s) {unknown}; valid: "
                            f"{', '.join(self.keywords) or 'none'}")
        return self.field(objective, theta, lr, **kwargs)

    def rate(self, lam: float, lr: float) -> float:
        """Largest rate of the field for an extreme eigenvalue λ.

        |λ| (gradient), |λ|(1 + h|λ|/2 + (h|λ|)²/3) (igr and higher BEA), max(|λ|, |c(hλ)λ|) (principal).
        """
        a = abs(lam)
        if self.stiffness == "principal":
            return max(a, float(abs(pf_coefficient(torch.tensor(lr * lam)) * lam)))
        if self.stiffness == "igr":
            return a * (1 + lr * a / 2 + (lr * a) ** 2 / 3)
        return a


FLOWS: dict[str, Flow] = {flow.name: flow for flow in (
    Flow("gf", gf, "GF", 2),
    Flow("igr", igr, "IGR (1st-order BEA)", 3, stiffness="igr"),
    Flow("third_order", third_order, "3rd-order BEA", 4, stiffness="igr"),
    Flow("pf", pf, "PF", 3, complex_state=True, timed=True, options=("branch",), stiffness="principal",
         prepare=_branch_option),
    Flow("pf_topk", pf_topk, "PF top-k", 2, eigenpairs=True, timed=True, options=("rest", "verify_steps"),
         stiffness="principal"),
    Flow("pf_topk_igr", pf_topk_igr, "PF top-k + IGR rest", 3, eigenpairs=True, timed=True,
         options=("verify_steps",), stiffness="principal"),
    Flow("central", central, "central flow", 2, timed=True,
         options=("substeps", "critical", "track", "eig_tol", "max_k", "eig_refresh", "verify_steps",
                  "subcritical"),
         prepare=_central_option, summary=_central_summary, metrics=_central_metrics,
         worst=("infeasibility", "complementarity")),
    Flow("heavy_ball_gf", heavy_ball_gf, "heavy-ball GF", 2, options=("momentum",)),
    Flow("heavy_ball", heavy_ball, "heavy-ball modified flow", 3, options=("momentum",), stiffness="igr"),
    Flow("sgd_modified", sgd_modified, "SGD modified flow", 3, options=("epoch",), stiffness="igr"),
)}
FIELDS: dict[str, Callable[..., Tensor]] = {name: flow.field for name, flow in FLOWS.items()}


def get_flow(name: str) -> Flow:
    """The flow registered under ``name`` (ValueError naming the valid choices otherwise)."""
    if name not in FLOWS:
        raise ValueError(f"unknown flow {name!r}; valid choices: {', '.join(FLOWS)}")
    return FLOWS[name]


def get_field(name: str) -> Flow:
    """The vector field registered under ``name``: its :class:`Flow`, called like the field (strict keywords)."""
    return get_flow(name)
