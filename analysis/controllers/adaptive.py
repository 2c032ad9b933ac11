"""Adaptive step-size methods from the literature: WNGrad, PAL and Alice, on a flat θ."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from flows import StepContext, StepDecision
from flows.validate import check_choice, check_count, check_positive

from .base import StepController, companion

LIMITERS = ("fixed", "sgdm", "adam")
HESSIAN_TERMS = ("zero", "abs", "rms")
GLASS = 3.0 / (4.0 * math.pi)  # α = (3/4π) ρ/|G|


@dataclass(eq=False, repr=False)
class WNGrad(StepController):
    """WNGrad (Wu, Ward & Bottou 2018): b ← b + ‖g‖²/b, then θ ← θ − g/b, with b₀ = 1/``lr``.

    The rate 1/b starts at ``lr`` and shrinks as squared gradient norms
    accumulate (as in the reference PyTorch code, b is updated with the
    current gradient before the step). ``per_row=True`` keeps one b per row
    of each 2-D weight (one per (out, in) slice of a 4-D kernel) as the
    reference code does, and one b per remaining tensor (the reference leaves
    1-D tensors at their initial rate; here they adapt too). The per-row form
    needs the parameter shapes: from ``shapes=``, from
    ``objective.parameter_shapes`` (``Objective.from_module``), or from the
    optimizer's parameters. Records ``b`` (global) or the range of rates.
    """

    name: ClassVar[str] = "wngrad"
    lr: float = 0.1
    per_row: bool = field(default=False, kw_only=True)
    shapes: list[tuple[int, ...]] | None = companion()

    def __post_init__(self) -> None:
        self.lr = check_positive("lr", self.lr)
        if not isinstance(self.per_row, bool):
            raise TypeError(f"per_row must be True or False, got {self.per_row!r}")
        self.shapes = None if self.shapes is None else [tuple(int(n) for n in s) for s in self.shapes]

    def _groups(self, ctx: StepContext) -> tuple[Tensor, int]:
        shapes = self.shapes or getattr(ctx.objective, "parameter_shapes", None)
        if shapes is None:
            raise ValueError("WNGrad(per_row=True) needs the parameter shapes: pass shapes=, or use an objective "
                             "made by Objective.from_module")
        ids, offset = [], 0
        for s in shapes:
            s = tuple(s)
            numel = math.prod(s)
            if len(s) == 2:
                rows, size = s[0], s[1]
            elif len(s) == 4:
                rows, size = s[0] * s[1], s[2] * s[3]
            else:
                rows, size = 1, numel
            ids.append(torch.arange(offset, offset + rows).repeat_interleave(size))
            offset += rows
        group = torch.cat(ids).to(ctx.grad.device)
        if group.numel() != ctx.grad.numel():
            raise ValueError(f"parameter shapes cover {group.numel()} entries, θ has {ctx.grad.numel()}")
        return group, offset

    def decide(self, ctx: StepContext) -> StepDecision:
        """WNGrad's step at θₙ: b grows by ‖g‖²/b (per row with ``per_row``), then the rate is 1/b."""
        g = ctx.grad
        if not self.per_row:
            b = self.state.get("b", 1.0 / self.lr)
            b = b + float(torch.linalg.vector_norm(g)) ** 2 / b
            self.state["b"] = b
            return StepDecision(1.0 / b, None, {"b": b})
        if "group" not in self.state:
            group, n = self._groups(ctx)
            self.state["group"] = group
            self.state["b"] = torch.full((n,), 1.0 / self.lr, dtype=g.real.dtype, device=g.device)
        group, b = self.state["group"], self.state["b"]
        sq = torch.zeros_like(b).index_add_(0, group, (g * g.conj()).real)
        b = b + sq / b
        self.state["b"] = b
        rate = (1.0 / b)[group]
        top = float(rate.max())
        return StepDecision(top, g * (rate / top), {"rate_min": float(rate.min()), "rate_max": top})


@dataclass(eq=False, repr=False)
class PAL(StepController):
    """Parabolic Approximation Line search (Mutschler & Zell 2020).

    Direction d = g + β d_prev (conjugate-gradient-like, d_prev = 0 at first).
    With ‖d‖ and the directional derivative b = −gᵀd/‖d‖, measure the loss at
    θ − μ d/‖d‖ and fit the parabola l(s) = a s² + b s + l₀,
    a = (l_μ − l₀ − bμ)/μ². The step s along −d/‖d‖ is

    * case 1, a > 0, b < 0 (positive curvature): s = α·(−b/2a), the scaled minimum;
    * case 2, a ≤ 0, b < 0 (negative curvature or a line): s = μ;
    * case 3, b ≥ 0 (not a descent direction): s = 0;
    * case 4: s > s_max is clipped to s_max (recorded as ``pal_clipped``).

    Defaults are the reference implementation's: μ = 1, s_max = 3.16,
    β = 0.4, α = 1/0.6. One extra loss evaluation per step, on the same batch.
    A non-finite a or b gives s = 0. Records ``pal_case``, ``pal_a``,
    ``pal_b``, ``pal_step`` (s) and ``pal_clipped``; the rate is s/‖d‖.
    """

    name: ClassVar[str] = "pal"
    mu: float = 1.0
    s_max: float = 3.16
    beta: float = 0.4
    alpha: float = 1 / 0.6
    epsilon: float = 1e-10

    def __post_init__(self) -> None:
        self.mu = check_positive("mu", self.mu)
        self.s_max = check_positive("s_max", self.s_max)
        self.beta = check_positive("beta", self.beta, allow_zero=True)
        self.alpha = check_positive("alpha", self.alpha)
        self.epsilon = check_positive("epsilon", self.epsilon)

    def decide(self, ctx: StepContext) -> StepDecision:
        """PAL's step at θₙ: a parabola through E(θ) and E(θ − μd/‖d‖) along d = g (+ β·previous), its minimum."""
        g = ctx.grad
        if self.beta:
            prev = self.state.get("direction")
            d = g.clone() if prev is None else self.beta * prev + g
            self.state["direction"] = d
            norm = float(torch.linalg.vector_norm(d)) or self.epsilon
            b = -float(torch.dot(g, d)) / norm
        else:
            d = g
            norm = float(torch.linalg.vector_norm(d)) or self.epsilon
            b = -norm
        l0 = float(ctx.loss)
        l_mu = float(ctx.objective.loss(ctx.theta - (self.mu / norm) * d))
        self.evaluations += 1
        a = (l_mu - l0 - b * self.mu) / self.mu ** 2
        clipped = 0.0
        if not (math.isfinite(a) and math.isfinite(b)):
            s, case = 0.0, 0
        elif a > 0 and b < 0:
            s, case = self.alpha * (-b / (2 * a)), 1
        elif b < 0:
            s, case = self.mu, 2
        else:
            s, case = 0.0, 3
        if s > self.s_max:
            s, clipped = self.s_max, 1.0
        info = {"pal_case": float(case), "pal_a": a, "pal_b": b, "pal_step": s, "pal_clipped": clipped,
                "pal_loss_mu": l_mu}
        return StepDecision(s / norm, d, info)


@dataclass(eq=False, repr=False)
class Alice(StepController):
    """Alice (Duersch et al. 2024, "Curvature in the Looking-Glass"), after the public reference code.

    Per coordinate it keeps running averages of the gradient G, the second
    moment V (as Adam), a curvature h and the *glass density* ρ, all measured
    at a look-ahead point ν. On a *sample step* it draws a Rademacher
    perturbation δ = ±σ (σ = ``lr``) and evaluates gradients at ν + δ, ν − δ, ν:

        h = |g₊ − g₋| / 2σ (``hess_comp="abs"``; "rms" averages h², "zero" drops it),
        ρ = 2 (½(g₊ + g₋) − g₀)² / σ,

    otherwise (a *quick step*, ``quick_steps`` of every ``quick_steps + 1``) only
    g₀ = ∇E(ν) updates G and V. Averages use β₁ (G), β₂ (V) and
    β₃ = 1 − (quick_steps + 1)(1 − β₂) (h, ρ), each capped at (n − 1)/n. After
    1/(1 − β₁) warm-up steps, each coordinate moves by

        α = (3/4π) ρ/(|G| + ε),  h_opt = α + h + √(α(α + 2h)) + ε,  Δ = |G|/h_opt,

    Δ clamped to [lr_min, lr_max]·|G|/(√V + ε) (``limit_method="adam"``; "sgdm"
    scales by |G|, "fixed" not at all; NaN → the upper bound), signed −sign(G);
    then ν = μ + ωΔ and μ ← μ + φΔ (φ = 1 − β₁ by default). θ is μ.

    In ``gradient_descent`` the decision is (rate φ, direction −Δ); the
    per-coordinate rates are summarised in ``alice_rate_median``. Rademacher
    draws come from a generator seeded with ``seed``, so the flat and the
    ``torch.optim`` forms take the same steps. Regularisation w1‖θ‖₁ + ½w2‖θ‖²
    enters as in the reference.
    """

    name: ClassVar[str] = "alice"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    w1: float = 0.0
    w2: float = 0.0
    phi: float | None = None
    omega: float = 1.0
    limit_method: str = "adam"
    lr_min: float = 0.0
    lr_max: float | None = None
    hess_comp: str = "abs"
    grad_glass: bool = True
    quick_steps: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        self.lr = check_positive("lr", self.lr)
        betas = self.betas
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2 and all(0 < b < 1 for b in betas)):
            raise ValueError(f"betas must be two numbers in (0, 1), got {betas!r}")
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = check_positive("eps", self.eps)
        self.w1 = check_positive("w1", self.w1, allow_zero=True)
        self.w2 = check_positive("w2", self.w2, allow_zero=True)
        phi = self.phi
        self.phi = 1.0 - self.betas[0] if phi is None else check_positive("phi", phi)
        if not 0 < self.phi < 2:
            raise ValueError(f"phi must be in (0, 2), got {phi!r}")
        self.omega = check_positive("omega", self.omega)
        check_choice("limit_method", self.limit_method, LIMITERS)
        self.lr_min = check_positive("lr_min", self.lr_min, allow_zero=True)
        self.lr_max = 2.0 * self.lr if self.lr_max is None else check_positive("lr_max", self.lr_max)
        if self.lr_min > self.lr_max:
            raise ValueError(f"lr_min={self.lr_min} must not exceed lr_max={self.lr_max}")
        check_choice("hess_comp", self.hess_comp, HESSIAN_TERMS)
        if self.hess_comp == "zero" and not self.grad_glass:
            raise ValueError("hess_comp='zero' with grad_glass=False leaves no curvature term")
        self.grad_glass = bool(self.grad_glass)
        self.quick_steps = check_count("quick_steps", self.quick_steps)
        self.seed = int(self.seed)

    @property
    def warmup(self) -> float:
        """Steps of plain warm-up before the glass term acts: 1/(1 − β₁)."""
        return 1.0 / (1.0 - self.betas[0])

    def _start(self, theta: Tensor) -> None:
        zeros = torch.zeros_like(theta)
        gen = torch.Generator(device=theta.device).manual_seed(self.seed)
        self.state.update(n=0, nu=theta.clone(), G=zeros.clone(), R=zeros.clone(), H=zeros.clone(),
                          V=zeros.clone(), rng=gen.get_state())

    def _rademacher(self, theta: Tensor) -> Tensor:
        gen = torch.Generator(device=theta.device)
        gen.set_state(self.state["rng"])
        z = torch.rand(theta.numel(), generator=gen, dtype=theta.dtype, device=theta.device)
        self.state["rng"] = gen.get_state()
        return torch.where(z < 0.5, -self.lr, self.lr).to(theta.dtype)

    def _regularised(self, g0: Tensor, nu: Tensor) -> Tensor:
        if not (self.w1 or self.w2):
            return g0
        return g0 + torch.where(nu < 0, -self.w1, self.w1) + self.w2 * nu

    def decide(self, ctx: StepContext) -> StepDecision:
        """Alice's step at θₙ (the reference algorithm, coordinate by coordinate, with its quick and full updates)."""
        if "nu" not in self.state:
            self._start(ctx.theta)
        st, obj = self.state, ctx.objective
        mu = ctx.theta
        st["n"] = n = st["n"] + 1
        beta1, beta2 = self.betas
        period = self.quick_steps + 1
        cap = (n - 1.0) / n
        b1, b2 = min(beta1, cap), min(beta2, cap)
        b3 = min(1.0 - period * (1.0 - beta2), cap)
        nu, sigma = st["nu"], self.lr
        sample = n <= self.warmup or n % period == 0
        if sample:
            delta = self._rademacher(mu)
            g_plus = obj.grad(nu + delta)
            g_minus = obj.grad(nu - delta)
            g0 = obj.grad(nu)
            self.evaluations += 3
            h = 0.5 * (g_plus - g_minus) / sigma
            h = h * h + self.w2 ** 2 if self.hess_comp == "rms" else h.abs() + self.w2
            st["H"] = h + b3 * (st["H"] - h)
            rho = 2.0 * (0.5 * (g_plus + g_minus) - g0) ** 2 / sigma
            st["R"] = rho + b3 * (st["R"] - rho)
        else:
            g0 = obj.grad(nu)
            self.evaluations += 1
        v = g0 * g0
        st["V"] = v + b2 * (st["V"] - v)
        g0 = self._regularised(g0, nu)
        st["G"] = g0 + b1 * (st["G"] - g0)
        info = {"alice_sample": float(sample)}
        phi = self.phi
        assert phi is not None  # resolved in __post_init__
        if n <= self.warmup:
            return StepDecision(phi, torch.zeros_like(mu), {**info, "alice_rate_median": 0.0})
        step = self._step(st)
        st["nu"] = mu + self.omega * step
        absg = st["G"].abs()
        rate = torch.where(absg > 0, step.abs() / absg, torch.zeros_like(absg))
        return StepDecision(phi, -step, {**info, "alice_rate_median": float(rate.median())})

    def _step(self, st: dict[str, Any]) -> Tensor:
        """Δ per coordinate (Alg. 3 of the reference): the glass-and-curvature step, clamped, signed for descent."""
        g = st["G"]
        absg = g.abs()
        rho = st["R"] if self.grad_glass else torch.zeros_like(g)
        h = {"zero": torch.zeros_like(g), "abs": st["H"], "rms": st["H"].sqrt()}[self.hess_comp]
        alpha = GLASS * rho / (absg + self.eps)
        h_opt = alpha + h + torch.sqrt(alpha * (alpha + 2.0 * h)) + self.eps
        delta = absg / h_opt
        scale = {"fixed": torch.ones_like(g), "sgdm": absg,
                 "adam": absg / (st["V"].sqrt() + self.eps)}[self.limit_method]
        lo, hi = self.lr_min * scale, self.lr_max * scale
        delta = torch.where(delta < lo, lo, torch.where(delta < hi, delta, hi))  # NaN → upper bound
        return torch.where(g > 0, -delta, delta)
