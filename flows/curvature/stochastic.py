"""Mini-batch curvature and SGD on an Objective's data: batch sharpness, mini-batch λ_max, gradient-noise scale.

For a model, loss and data set of N examples, a mini-batch B of b examples (drawn without replacement) has the
loss E_B(θ) = loss_fn(f_θ(x_B), y_B), gradient g_B and Hessian H_B. Monte-Carlo estimators over random batches,
each with its standard error, stopping once that error is below ``rel_error`` × |mean| (at least ``min_samples``,
at most ``max_samples`` batches):

* :func:`batch_sharpness` — E_B[g_Bᵀ H_B g_B / ‖g_B‖²], the quantity SGD pins at 2/h (Andreyev & Beneventano,
  "Edge of Stochastic Stability", arXiv 2412.20553); one gradient and one HVP per batch;
* :func:`minibatch_sharpness` — E_B[λ_max(H_B)] (a warm-started Lanczos solve per batch);
* :func:`gradient_noise_scale` — B_simple = tr(Σ)/‖G‖² (McCandlish et al. 2018, arXiv 1812.06162) with Σ the
  per-example gradient covariance (divisor N − 1), from b·N/(N − b)·‖g_B − G‖² per batch (unbiased for sampling
  without replacement: E‖g_B − G‖² = (tr Σ/b)(N − b)/N);
* :func:`projected_noise_variance` — σ_u² = Var_B(uᵀg_B) = E_B[(uᵀ(g_B − G))²] along a unit direction u, the
  gradient noise of SGD at batch size b projected on u (no HVPs).

:func:`self_stabilization` gives the two third-order rates of Damian, Nichani & Lee ("Self-stabilization", arXiv
2209.15594, §4) along the top eigenvector u of H: with ∇S = ∇³E[u, u] (the gradient of the sharpness
S = λ₁), the progressive-sharpening rate α = −∇Eᵀ∇S (the gradient's part along u removed, see there) and
the self-stabilization strength β = ‖∇S‖²;
:func:`stochastic_sharpness_gap` evaluates the closed form ΔS = ηβσ_u²/(4α) of Liao, Kolomvaki & Kyrillidis
("SGD at the edge of stability: the stochastic sharpness gap", arXiv 2604.21016): SGD's full-batch sharpness
settles at 2/η − ΔS.

:class:`SGDController` steps θ ← θ − h g_B through ``gradient_descent``'s runner (one epoch = a fresh shuffle cut
into ⌊N/b⌋ batches, the remainder dropped), so SGD is recorded like GD (full-batch loss per step).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..objective.objective import Objective
from .spectrum import EigenTracker


@dataclass
class BatchEstimate:
    """A Monte-Carlo mean over mini-batches.

    ``mean`` ± ``standard_error`` from ``samples`` batches (``values``), ``hvps`` Hessian-vector products spent,
    ``converged`` when the standard error met the requested fraction.
    """

    mean: float
    standard_error: float
    samples: int
    hvps: int
    converged: bool
    values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    extras: dict[str, float] = field(default_factory=dict)
    """Further estimates from the same batches (:func:`batch_sharpness`: ``ratio_of_means``)."""


class MiniBatches:
    """Random mini-batches of b examples of ``data`` = (inputs, targets), as Objectives or as epochs.

    The loss of a batch is ``loss_fn`` (a mean over the batch) of ``model``; :meth:`draw` gives independent
    batches, :meth:`epoch` a shuffle. ``objective_options`` go to :meth:`Objective.from_module` (e.g.
    ``mode="train"``).
    """

    def __init__(self, model: torch.nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor],
                 data: tuple[Tensor, Tensor], batch_size: int, *, seed: int = 0, **objective_options: Any) -> None:
        if not (isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data)):
            raise TypeError("data must be an (inputs, targets) tuple of tensors")
        n = len(data[0])
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= n:
            raise ValueError(f"batch_size must be an int in [1, {n}] (the data holds {n} examples), got "
                             f"{batch_size!r}")
        self.model = model
        self.loss_fn = loss_fn
        self.data = data
        self.batch_size = batch_size
        self.n, self.options = n, objective_options
        # separate streams: estimators drawing batches never shift the epochs an SGD run sees
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch_generator = torch.Generator().manual_seed(seed + 1_000_003)

    def _objective(self, index: list[Tensor]) -> Objective:
        x, y = self.data
        return Objective.from_module(self.model, self.loss_fn, [(x[i], y[i]) for i in index], **self.options)

    def draw(self, count: int) -> Objective:
        """An Objective whose ``count`` pieces are independent random batches (each without replacement).

        Piece i is E_Bᵢ/count.
        """
        return self._objective([torch.randperm(self.n, generator=self.generator)[:self.batch_size]
                                for _ in range(count)])

    def epoch(self) -> Objective:
        """One epoch: a fresh shuffle cut into ⌊N/b⌋ batches (the remainder dropped); piece i is E_Bᵢ/m."""
        order = torch.randperm(self.n, generator=self.epoch_generator)
        m = self.n // self.batch_size
        return self._objective([order[i * self.batch_size:(i + 1) * self.batch_size] for i in range(m)])


def piece_grad(objective: Objective, index: int, theta: Tensor) -> Tensor:
    """The gradient g_B of the batch behind piece ``index`` of an Objective from :class:`MiniBatches`.

    That is the piece's gradient times the number of pieces.
    """
    leaf = theta.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(objective.pieces[index](leaf), leaf)
    return g * len(objective.pieces)


def piece_grad_and_hvp(objective: Objective, index: int, theta: Tensor, v: Tensor | None = None
                       ) -> tuple[Tensor, Tensor]:
    """(g_B, H_B v) of the batch behind piece ``index`` of an Objective from :class:`MiniBatches` (v defaults to g_B).

    The piece's derivatives times the number of pieces (each piece is E_B/count).
    """
    count = len(objective.pieces)
    objective.check_second_order(theta)
    leaf = theta.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        value = objective.pieces[index](leaf)
        (g,) = torch.autograd.grad(value, leaf, create_graph=True)
        direction = g.detach() if v is None else v.to(g)
        (hv,) = torch.autograd.grad(g, leaf, grad_outputs=direction)
    return g.detach() * count, hv.detach() * count * (count if v is None else 1)


def _estimate(sample: Callable[[Objective, int], float], batches: MiniBatches, rel_error: float, min_samples: int,
              max_samples: int, chunk: int, hvps_per_sample: Callable[[], int]) -> BatchEstimate:
    if not (isinstance(rel_error, (int, float)) and rel_error > 0):
        raise ValueError(f"rel_error must be > 0, got {rel_error!r}")
    if not 2 <= min_samples <= max_samples:
        raise ValueError(f"need 2 ≤ min_samples ≤ max_samples, got {min_samples}, {max_samples}")
    values: list[float] = []
    converged = False
    while len(values) < max_samples:
        objective = batches.draw(min(chunk, max_samples - len(values)))
        for i in range(len(objective.pieces)):
            values.append(sample(objective, i))
            if len(values) >= min_samples:
                arr = np.asarray(values)
                se = float(arr.std(ddof=1) / math.sqrt(len(arr)))
                if se <= rel_error * abs(float(arr.mean())):
                    converged = True
                    break
        if converged:
            break
    arr = np.asarray(values)
    return BatchEstimate(float(arr.mean()), float(arr.std(ddof=1) / math.sqrt(len(arr))), len(arr),
                         hvps_per_sample(), converged, arr)


def batch_sharpness(batches: MiniBatches, theta: Tensor, *, rel_error: float = 0.05, min_samples: int = 8,
                    max_samples: int = 256, chunk: int = 8) -> BatchEstimate:
    """E_B[g_Bᵀ H_B g_B / ‖g_B‖²] ± its standard error (module docstring); one HVP per batch.

    The mean of the ratios is the batch sharpness of Andreyev & Beneventano (their code's default); the ratio of
    the means E_B[g_BᵀH_Bg_B]/E_B[‖g_B‖²] from the same batches is in ``extras["ratio_of_means"]``.
    """
    count = {"hvps": 0}
    quadratic: list[float] = []
    squared: list[float] = []

    def one(objective: Objective, i: int) -> float:
        g, hg = piece_grad_and_hvp(objective, i, theta)
        count["hvps"] += 1
        quadratic.append(float(g @ hg))
        squared.append(float(g @ g))
        return quadratic[-1] / max(squared[-1], torch.finfo(g.dtype).tiny)

    est = _estimate(one, batches, rel_error, min_samples, max_samples, chunk, lambda: count["hvps"])
    tiny = torch.finfo(theta.dtype).tiny
    est.extras["ratio_of_means"] = float(np.mean(quadratic)) / max(float(np.mean(squared)), tiny)
    return est


def step_batch_sharpness(objective: Objective, index: int, theta: Tensor) -> float:
    """g_Bᵀ H_B g_B / ‖g_B‖² of one given batch (piece ``index`` of an Objective from :class:`MiniBatches`).

    With the batch SGD steps on at θₙ this is the curvature the step actually meets; its mean over steps is the
    batch sharpness along the run rather than over fresh batches. One HVP.
    """
    g, hg = piece_grad_and_hvp(objective, index, theta)
    return float(g @ hg) / max(float(g @ g), torch.finfo(g.dtype).tiny)


def minibatch_sharpness(batches: MiniBatches, theta: Tensor, *, rel_error: float = 0.05, min_samples: int = 8,
                        max_samples: int = 64, tol: float = 1e-3) -> BatchEstimate:
    """E_B[λ_max(H_B)] ± its standard error: a Lanczos solve per batch, warm-started from the previous batch."""
    tracker = EigenTracker(k=1, tol=tol)

    def solve(objective: Objective, i: int) -> float:
        piece, count = objective.pieces[i], len(objective.pieces)
        batch = Objective([lambda t: piece(t) * count], objective.dim, name="mini-batch")
        return float(tracker.update(batch, theta).values[0])

    return _estimate(solve, batches, rel_error, min_samples, max_samples, 1, lambda: tracker.total_matvecs)


def gradient_noise_scale(batches: MiniBatches, theta: Tensor, full_gradient: Tensor, *, rel_error: float = 0.1,
                         min_samples: int = 8, max_samples: int = 256, chunk: int = 8) -> BatchEstimate:
    """B_simple = tr(Σ)/‖G‖² ± its standard error, G = ``full_gradient`` (module docstring); no HVPs."""
    b, n = batches.batch_size, batches.n
    if b >= n:
        raise ValueError(f"batch_size must be < N = {n} for the noise scale (a full batch has no noise)")
    norm2 = float(full_gradient @ full_gradient)
    correction = b * n / (n - b)

    def one(objective: Objective, i: int) -> float:
        diff = piece_grad(objective, i, theta) - full_gradient
        return correction * float(diff @ diff) / norm2

    return _estimate(one, batches, rel_error, min_samples, max_samples, chunk, lambda: 0)


def projected_noise_variance(batches: MiniBatches, theta: Tensor, direction: Tensor, full_gradient: Tensor, *,
                             rel_error: float = 0.1, min_samples: int = 16, max_samples: int = 256,
                             chunk: int = 16) -> BatchEstimate:
    """σ_u² = E_B[(uᵀ(g_B − G))²] = Var_B(uᵀg_B) ± its standard error; no HVPs.

    u = ``direction`` (normalised), G = ``full_gradient``. The mean uᵀG is known, so the squared deviations
    average to the variance without a ddof correction. For b drawn without replacement from N,
    σ_u² = (uᵀΣu/b)(N − b)/N with Σ the per-example covariance (divisor N − 1): it falls as 1/b and vanishes at
    b = N.
    """
    u = direction / torch.linalg.vector_norm(direction)
    centre = float(u @ full_gradient)

    def one(objective: Objective, i: int) -> float:
        return (float(u @ piece_grad(objective, i, theta)) - centre) ** 2

    if batches.batch_size == batches.n:  # one batch, the whole set: no noise
        return BatchEstimate(0.0, 0.0, 1, 0, True, np.zeros(1))
    return _estimate(one, batches, rel_error, min_samples, max_samples, chunk, lambda: 0)


def self_stabilization(objective: Objective, theta: Tensor, direction: Tensor, gradient: Tensor | None = None
                       ) -> tuple[float, float, Tensor]:
    """(α, β, ∇S) along the unit top eigenvector u = ``direction`` (module docstring; Damian et al. 2023, §4).

    ∇S = ∇³E(θ)[u, u] (:meth:`Objective.third_derivative`; by the Hellmann–Feynman identity the gradient of a
    simple eigenvalue λ₁ with unit eigenvector u), β = ‖∇S‖² (how fast a step along −∇S lowers the sharpness) and
    α = −g_⊥ᵀ∇S with g_⊥ = g − (uᵀg)u, the gradient (``gradient``, default ∇E(θ)) without its part along u.

    Damian et al. take α = −∇Eᵀ∇S at the point of the constrained trajectory, where GD does not oscillate. At an
    iterate at the edge the gradient carries the oscillation, ≈ xλu for a displacement x along u, whose
    contribution −xλ uᵀ∇S flips sign every step and swamps the sharpening; removing the u-part keeps the
    sharpening rate of the motion across the valley. With uᵀg = 0 both definitions agree.
    """
    u = direction / torch.linalg.vector_norm(direction)
    grad_s = objective.third_derivative(theta, u)
    g = objective.grad(theta) if gradient is None else gradient
    g_across = g - (u @ g) * u
    return -float(g_across @ grad_s), float(grad_s @ grad_s), grad_s


def stochastic_sharpness_gap(lr: float, alpha: float, beta: float, noise_variance: float) -> float:
    """ΔS = η β σ_u² / (4α) (Liao, Kolomvaki & Kyrillidis, arXiv 2604.21016).

    The predicted distance of SGD's equilibrium sharpness below 2/η. NaN where α ≤ 0 (no progressive
    sharpening: the closed form has no equilibrium there).
    """
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if not alpha > 0:
        return math.nan
    return lr * beta * noise_variance / (4 * alpha)


MEASURES = ("batch_sharpness", "minibatch_sharpness", "gradient_noise_scale")


