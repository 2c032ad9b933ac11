"""Edge of stability: sharpness λ_max against the GD stability limit 2/h.

GD on a quadratic is stable along an eigen-direction iff hλ < 2; with heavy-ball
momentum β the limit is λ < 2(1+β)/h. On neural networks, full-batch GD shows
*progressive sharpening* (λ_max rises towards 2/h), a *first crossing*, and
then *hovering* around 2/h while the loss keeps falling non-monotonically
(Cohen et al. 2021). The principal flow explains the per-direction behaviour
through Re c(hλ), c(x) = log(1 − x)/x: hλ > 1 oscillates, hλ > 2 diverges.

:class:`EoSDetector` reads this off a trajectory with a recorded ``sharpness``
metric (offline) or runs as a ``gradient_descent`` callback (online).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from flows import (
    EigenTracker,
    Objective,
    Recorder,
    StepContext,
    StepDecision,
    Trajectory,
    pf_coefficient,
    sharpness,
    stability_threshold,
)
from flows.curvature.precondition import BATCH_REGIMES, BatchRegime
from flows.records.archive import load_record, save_record
from flows.validate import check_count, check_positive

from ..controllers.optimizers import OptimizerController
from ..events import Event, Segment, from_dict
from .sharpness import Sharpness

BAND = 0.1  # hovering: |λ_max − 2/h| ≤ 10% of 2/h
HOVER_FRACTION = 0.5  # … for at least half of the measured steps after the crossing
SPIKE_RELATIVE = 0.01  # a rise of the two-step-averaged loss by > 1% counts as a spike
SEPARATION_RELATIVE = 0.1  # GD and GF separate when their distance is 10% of the way GD travelled


@dataclass
class PFStability:
    """Per-eigendirection PF view: x = hλᵢ, Re c(x) and the regime flags.

    ``growth`` = Re(c(x))·x/h = log|1 − x|/h is the rate at which the direction's
    gradient component grows (> 0) or decays (< 0) along the PF.
    """

    x: np.ndarray
    re_c: np.ndarray
    growth: np.ndarray
    oscillatory: np.ndarray  # hλ > 1
    divergent: np.ndarray  # hλ > 2


def pf_stability(eigenvalues, lr: float) -> PFStability:
    """Re c(hλᵢ) and the oscillation/divergence flags for eigenvalues ``eigenvalues`` (any shape)."""
    lam = np.asarray(eigenvalues, dtype=float)
    x = lr * lam
    c = pf_coefficient(torch.as_tensor(x, dtype=torch.float64)).numpy()
    return PFStability(x, c.real, (c * x).real / lr, x > 1, x > 2)


@dataclass
class EoSReport:
    """What :meth:`EoSDetector.detect` found. Events and segments are also listed in ``events``.

    ``progressive_sharpening`` is True (a significant rising trend before the crossing), False (tested, not
    significant) or None: *undetermined*, when the ``sharpening_points`` measurements before the crossing
    cannot give a one-sided Kendall p below ``sharpening_p`` whatever they are (the smallest p of n points is
    1/n!, ``sharpening_min_p``: 4 points cannot go below 1/24 = 0.042); measure sharpness more often.
    """

    threshold: float
    progressive_sharpening: bool | None
    sharpening_slope: float
    first_crossing: int | None
    hovering: bool
    hover_fraction: float
    spikes: list[int]
    separation_step: int | None
    events: list[Event | Segment] = field(default_factory=list)
    sharpening_points: int = 0
    sharpening_min_p: float = 1.0

    def summary(self) -> str:
        """The findings in a few lines, as a reader of a paper would state them."""
        sharpening = {True: "yes", False: "no (not significant)", None: (
            f"undetermined ({self.sharpening_points} points before the crossing; measure more often)")}
        lines = [f"EoSReport (threshold {self.threshold:.6g}):",
                 f"  progressive sharpening: {sharpening[self.progressive_sharpening]}, slope "
                 f"{self.sharpening_slope:.3g} per step",
                 f"  first crossing: {'none' if self.first_crossing is None else f'step {self.first_crossing}'}",
                 f"  hovering: {'yes' if self.hovering else 'no'} ({100 * self.hover_fraction:.0f}% of measured "
                 "steps after the crossing in the band)",
                 f"  loss spikes: {len(self.spikes)}" + (f" at steps {self.spikes[:8]}" if self.spikes else ""),
                 "  GD–GF separation: " + ("none" if self.separation_step is None
                                           else f"step {self.separation_step}")]
        return "\n".join(lines)

    def save(self, path: str | Path) -> Path:
        """Write ``path.json`` (the findings and the events) beside an array file ``path.npz`` (the spikes)."""
        fields = {name: getattr(self, name) for name in ("threshold", "progressive_sharpening", "sharpening_slope",
                                                         "first_crossing", "hovering", "hover_fraction",
                                                         "separation_step", "sharpening_points",
                                                         "sharpening_min_p")}
        fields["events"] = [event.to_dict() for event in self.events]
        return save_record(path, "eos_report", {"spikes": np.asarray(self.spikes, dtype=np.int64)}, fields)

    @classmethod
    def load(cls, path: str | Path) -> EoSReport:
        """Read a report written by :meth:`save`; the events come back as :class:`Event`/:class:`Segment`."""
        arrays, fields = load_record(path, "eos_report", ("spikes",))
        events = [from_dict(e) for e in fields.pop("events", [])]
        return cls(**fields, spikes=[int(s) for s in arrays["spikes"]], events=events)


@dataclass
class EoSDetector:
    """Detects progressive sharpening, the first crossing of 2(1+β)/h, hovering, loss spikes and GD–GF separation.

    Attributes:
        band: hovering band, relative to the threshold (default 0.1).
        hover_fraction: minimal fraction of measured steps after the crossing inside the band.
        spike_relative: a loss spike is a run of consecutive rises of the
            two-step average (Eₙ₋₁ + Eₙ)/2 (geometric) whose total relative
            rise exceeds this; the average removes GD's period-2 oscillation at
            the edge of stability, whatever its amplitude, so only the loss
            level rising counts (once per run, at its first step).
        separation_relative: GD–GF separation when drift ≥ this × ‖θ_GD(n) − θ_GD(0)‖.
        sharpening_p: significance of the rising trend (Kendall's τ, one-sided).
        sharpness_every, k: online measurement period and how many top eigenvalues to track
            (all k are recorded, as metrics ``eigenvalue_0`` … ``eigenvalue_{k-1}``).
        optimizer: an :class:`~flows.OptimizerController` (Adam, RMSProp, momentum SGD): online, the detector then
            measures the preconditioned sharpness λ₁(P⁻¹H) with the P of each step and compares it with that
            optimizer's own threshold (Adam: (2 + 2β₁)/((1 − β₁)h)), recording ``preconditioned_sharpness`` =
            λ₁(P⁻¹H) and ``stability_threshold`` (through its :class:`Sharpness` monitor, the one writer of both).

    Offline, :meth:`detect` compares any recorded measure (``measure=``: ``sharpness``,
    ``preconditioned_sharpness``, ``batch_sharpness`` …) with a recorded ``stability_threshold`` metric where
    there is one, else with 2(1+β)/hₙ.
    """

    band: float = BAND
    hover_fraction: float = HOVER_FRACTION
    spike_relative: float = SPIKE_RELATIVE
    separation_relative: float = SEPARATION_RELATIVE
    sharpening_p: float = 0.01
    sharpness_every: int = 10
    k: int = 1
    optimizer: OptimizerController | None = None

    def __post_init__(self) -> None:
        for name in ("band", "spike_relative", "separation_relative"):
            check_positive(name, getattr(self, name))
        check_positive("hover_fraction", self.hover_fraction)
        check_positive("sharpening_p", self.sharpening_p)
        if self.hover_fraction > 1 or self.sharpening_p >= 1:
            raise ValueError(f"hover_fraction must be in (0, 1] and sharpening_p in (0, 1), got "
                             f"{self.hover_fraction!r}, {self.sharpening_p!r}")
        check_count("sharpness_every", self.sharpness_every, minimum=1)
        check_count("k", self.k, minimum=1)
        self.monitor = Sharpness(every=self.sharpness_every, k=self.k, optimizer=self.optimizer)
        self.threshold = math.nan
        self.crossed_at: int | None = None

    @property
    def sharpness(self) -> float:
        """The latest measured sharpness (λ₁(P⁻¹H) under an optimizer), NaN before the first measurement."""
        return self.monitor.value

    @property
    def eigenvalues(self) -> np.ndarray:
        """The latest top-k eigenvalues, descending."""
        return self.monitor.values

    # ------------------------------------------------------------------ online
    def observe(self, ctx: StepContext) -> float:
        """Measure λ_max at θₙ when n is a multiple of ``sharpness_every`` (once per step); the latest value."""
        return self.monitor.observe(ctx)

    def __call__(self, ctx: StepContext, decision: StepDecision, recorder: Recorder) -> None:
        """Runner callback: measure, record, and note the first crossing of the threshold.

        The sharpness is recorded by the detector's :class:`Sharpness` monitor; the detector adds the PF
        coefficients Re c(hλᵢ) and the ``eos_crossing`` event (``decision.lr`` is the rate used).
        """
        lr = decision.lr
        if self.optimizer is not None:
            if not self.monitor.due(ctx):
                return  # not measured here (or the last row, which took no step: no preconditioner belongs to it)
            self.threshold = self.optimizer.threshold()
        else:
            self.threshold = stability_threshold(lr, ctx.momentum) if lr > 0 else math.inf
        if not self.monitor.due(ctx):
            return
        self.monitor(ctx, decision, recorder)
        if lr > 0 and self.optimizer is None:
            view = pf_stability(self.eigenvalues, lr)
            for i, rc in enumerate(view.re_c):
                recorder.log(f"pf_re_c_{i}", rc)
        if self.crossed_at is None and self.sharpness >= self.threshold:
            self.crossed_at = ctx.step
            recorder.event(Event("eos_crossing", ctx.step, ctx.time,
                                 {"sharpness": self.sharpness, "threshold": self.threshold, "lr": lr}))

    @property
    def at_edge(self) -> bool:
        """Whether the latest sharpness lies in the band around the threshold or above it."""
        return bool(self.sharpness >= self.threshold * (1 - self.band))

    # ------------------------------------------------------------------ offline
    def _sharpening(self, times: np.ndarray, sharp: np.ndarray) -> tuple[bool | None, float, float]:
        """Progressive sharpening before the crossing: (rising, slope, smallest attainable p).

        ``rising`` is True, False or None (undetermined) by a one-sided Kendall's τ, whose exact p cannot go below
        1/n! for n points.
        """
        min_p = 1.0 / math.factorial(len(times)) if len(times) >= 2 else 1.0
        slope = float(stats.linregress(times, sharp).slope) if len(times) >= 2 else math.nan
        if min_p >= self.sharpening_p:
            return None, slope, min_p
        tau = stats.kendalltau(times, sharp, alternative="greater")
        return bool(tau.pvalue < self.sharpening_p and slope > 0), slope, min_p

    def detect(self, trajectory: Trajectory, *, lr: float | None = None, momentum: float | None = None,
               objective: Objective | None = None, drift: np.ndarray | None = None,
               measure: str | None = None, batch: BatchRegime | None = None) -> EoSReport:
        """Read the EoS story off ``trajectory`` (needs a ``sharpness`` metric, or ``objective`` + full states).

        The threshold at step n is the recorded ``stability_threshold`` metric where the run has one (an
        optimizer's own threshold, forward-filled), else 2(1+β)/hₙ with hₙ the rate recorded at that step (metric
        ``lr``, as under a controller; the last row, where no step is taken, keeps the last rate used), so offline
        detection agrees with the online callback; ``lr=`` imposes one constant rate instead. ``measure`` names
        the metric compared with it (``sharpness``, ``preconditioned_sharpness``, ``batch_sharpness`` …).

        ``batch="small"``/``"large"``: the heavy-ball batch-sharpness plateau 2(1 ∓ β)/hₙ instead (arXiv 2604.14108,
        :func:`~flows.curvature.precondition.batch_sharpness_threshold`), measure ``batch_sharpness`` by default.
        """
        if measure is None:
            measure = "batch_sharpness" if batch is not None else self.monitor.metric
        momentum = momentum if momentum is not None else trajectory.config.get("momentum", 0.0) or 0.0
        thresholds = _thresholds(trajectory, lr, momentum, batch)
        if measure != "sharpness" and measure not in trajectory.metrics:
            raise ValueError(f"measure {measure!r} was not recorded; this trajectory has: {sorted(trajectory.metrics)}")
        sharp = trajectory.metrics.get(measure)
        if sharp is None or np.all(np.isnan(sharp)):
            if objective is None or trajectory.states is None or trajectory.state_mode != "full":
                raise ValueError("this trajectory has no 'sharpness' metric: record it with "
                                 "analysis.Sharpness(every=N) or EoSDetector as a callback, "
                                 "or pass objective= with a full-state trajectory")
            sharp = np.full(len(trajectory), np.nan)
            dtype = objective.theta0.dtype if objective.theta0 is not None else torch.float64
            for i in range(0, len(trajectory), self.sharpness_every):
                sharp[i] = sharpness(objective, torch.as_tensor(np.real(trajectory.states[i]), dtype=dtype))
        times, losses = trajectory.times, trajectory.losses
        measured = np.flatnonzero(np.isfinite(sharp))
        events: list[Event | Segment] = []
        above = measured[sharp[measured] >= thresholds[measured]]
        first = int(above[0]) if len(above) else None
        # the threshold the report quotes: at the crossing, else at the last measurement
        threshold = float(thresholds[first if first is not None else (measured[-1] if len(measured) else 0)])
        pre = measured[measured <= (first if first is not None else measured[-1])] if len(measured) else measured
        rising, slope, min_p = self._sharpening(times[pre], sharp[pre])
        if rising:
            events.append(Segment("progressive_sharpening", int(pre[0]), int(pre[-1]), float(times[pre[0]]),
                                  float(times[pre[-1]]), {"slope_per_time": slope,
                                                          "from": float(sharp[pre[0]]), "to": float(sharp[pre[-1]])}))
        if first is not None:
            events.append(Event("eos_crossing", first, float(times[first]),
                                {"sharpness": float(sharp[first]), "threshold": threshold,
                                 "lr": _rate_at(trajectory, first, lr), "measure": measure}))
        hover_frac, hovering = 0.0, False
        if first is not None:
            after = measured[measured >= first]
            inside = np.abs(sharp[after] - thresholds[after]) <= self.band * thresholds[after]
            hover_frac = float(inside.mean()) if len(after) else 0.0
            hovering = hover_frac >= self.hover_fraction and len(after) >= 3
            if hovering:
                events.append(Segment("hovering", int(after[0]), int(after[-1]), float(times[after[0]]),
                                      float(times[after[-1]]), {"fraction_in_band": hover_frac, "band": self.band,
                                                                "mean_sharpness": float(np.mean(sharp[after]))}))
        spikes, rises = loss_spikes(losses, self.spike_relative)
        for s, rise in zip(spikes, rises):
            events.append(Event("loss_spike", s, float(times[s]), {"relative_increase": rise}))
        separation = None
        if drift is not None:
            if trajectory.states is not None:
                travelled = np.linalg.norm(np.real(trajectory.states) - np.real(trajectory.states[0]), axis=1)
            elif "distance_from_start" in trajectory.metrics:
                travelled = trajectory.metrics["distance_from_start"]
            else:
                raise ValueError("GD–GF separation needs the GD states (states='full' or 'projection') or a "
                                 "'distance_from_start' metric (‖θₙ − θ₀‖)")
            n = min(len(drift), len(travelled))
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = np.where(travelled[:n] > 0, np.asarray(drift[:n]) / travelled[:n], 0.0)
            hits = np.flatnonzero(np.nan_to_num(ratio, nan=0.0) >= self.separation_relative)
            if len(hits):
                separation = int(hits[0])
                events.append(Event("gd_gf_separation", separation, float(times[separation]),
                                    {"drift": float(drift[separation]), "ratio": float(ratio[separation])}))
        return EoSReport(threshold, rising, slope, first, hovering, hover_frac, spikes, separation, events,
                         sharpening_points=len(pre), sharpening_min_p=min_p)


def stability_thresholds(trajectory: Trajectory, lr: float | None = None, momentum: float = 0.0) -> np.ndarray:
    """The GD threshold 2(1+β)/hₙ per row of ``trajectory``; rate 0 gives +inf.

    hₙ is ``lr`` if given, else the recorded metric ``lr`` (rows without one, such as the last, keep the rate
    before them), else ``config["lr"]``.
    """
    n = len(trajectory)
    if lr is not None:
        rates = np.full(n, check_positive("lr", lr))
    elif "lr" in trajectory.metrics and np.isfinite(trajectory.metrics["lr"]).any():
        rates = _forward_filled(np.asarray(trajectory.metrics["lr"], dtype=float))
    elif trajectory.config.get("lr") is not None:
        rates = np.full(n, float(trajectory.config["lr"]))
    else:
        raise ValueError("the learning rate is unknown: pass lr= (the trajectory records no 'lr' metric and its "
                         "config has none)")
    with np.errstate(divide="ignore"):
        return np.where(rates > 0, 2 * (1 + momentum) / np.where(rates > 0, rates, 1.0), np.inf)


def _thresholds(trajectory: Trajectory, lr: float | None, momentum: float, batch: str | None = None) -> np.ndarray:
    """The threshold per row of ``trajectory``.

    The recorded ``stability_threshold`` (forward-filled) unless ``lr`` is imposed, else 2(1+β)/hₙ; with
    ``batch="small"`` the small-batch plateau 2(1 − β)/hₙ (``"large"``: 2(1 + β)/hₙ).
    """
    if batch is not None and batch not in BATCH_REGIMES:
        raise ValueError(f"batch must be one of {BATCH_REGIMES} or None, got {batch!r}")
    if batch == "small":  # 2(1 − β)/h = the GD threshold 2(1 + β)/h scaled by (1 − β)/(1 + β)
        return stability_thresholds(trajectory, lr, momentum) * (1 - momentum) / (1 + momentum)
    recorded = trajectory.metrics.get("stability_threshold")
    if lr is None and recorded is not None and np.isfinite(recorded).any():
        return _forward_filled(np.asarray(recorded, dtype=float))
    return stability_thresholds(trajectory, lr, momentum)


def _rate_at(trajectory: Trajectory, step: int, lr: float | None) -> float:
    """The base rate in force at ``step`` (given, recorded per step and forward-filled, or the config's)."""
    if lr is not None:
        return float(lr)
    if "lr" in trajectory.metrics and np.isfinite(trajectory.metrics["lr"]).any():
        return float(_forward_filled(np.asarray(trajectory.metrics["lr"], dtype=float))[step])
    return float(trajectory.config.get("lr", math.nan))


def _forward_filled(values: np.ndarray) -> np.ndarray:
    """NaN entries take the last finite value before them (the first finite one before it); needs one finite."""
    known = np.isfinite(values)
    out = values.copy()
    first = int(np.flatnonzero(known)[0])
    out[:first] = out[first]
    index = np.where(known, np.arange(len(values)), 0)
    return out[np.maximum.accumulate(index)]


def loss_spikes(losses: np.ndarray, relative: float = SPIKE_RELATIVE) -> tuple[list[int], list[float]]:
    """Steps where the loss level starts a rise of more than ``relative``, and each rise.

    With aₙ = ½(log Eₙ + log Eₙ₊₁) (the geometric two-step average, blind to a
    period-2 oscillation), a spike is a maximal run aⱼ < aⱼ₊₁ < … < a_k with
    exp(a_k − aⱼ) − 1 > ``relative``, reported at step j + 2 (the first loss
    above Eⱼ that made the level rise). Non-positive or
    non-finite losses end the series.
    """
    losses = np.asarray(losses, dtype=float)
    bad = np.flatnonzero(~(np.isfinite(losses) & (losses > 0)))
    logs = np.log(losses[:bad[0]] if len(bad) else losses)
    level = 0.5 * (logs[1:] + logs[:-1])
    steps, rises = [], []
    j = 0
    while j < len(level) - 1:
        if level[j + 1] <= level[j]:
            j += 1
            continue
        k = j + 1
        while k + 1 < len(level) and level[k + 1] > level[k]:
            k += 1
        rise = float(np.expm1(level[k] - level[j]))
        if rise > relative:
            steps.append(j + 2)
            rises.append(rise)
        j = k
    return steps, rises


class PFLossRate:
    """A ``gradient_descent`` callback: the principal flow's predicted loss rate at θₙ beside gradient flow's.

    Every ``every`` steps the top-``k`` Hessian eigenpairs (λᵢ, uᵢ) are updated warm (:class:`flows.EigenTracker`)
    and, with g = ∇E(θₙ) and h the step's rate, recorded as metrics:

    * ``alignment_i`` = (gᵀuᵢ)²/‖g‖², the share of the gradient along uᵢ;
    * ``pf_re_c_i`` = Re c(hλᵢ), c(x) = log(1 − x)/x (−1 for gradient flow; > 0 once hλ > 2);
    * ``pf_loss_rate`` = dE/dt along the principal flow with the top k exact and the rest as gradient flow:
      Σᵢ Re c(hλᵢ)(gᵀuᵢ)² − (‖g‖² − Σᵢ (gᵀuᵢ)²)  (the PF field is Σᵢ c(hλᵢ)(uᵢᵀg)uᵢ, so gᵀθ' is this sum);
    * ``gf_loss_rate`` = −‖g‖², the gradient flow's (never positive).

    :func:`loss_rate_agreement` compares them offline with GD's observed (E(θₙ₊₁) − E(θₙ))/h.
    """

    def __init__(self, k: int = 4, every: int = 1, tol: float = 1e-3) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int ≥ 1, got {k!r}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int ≥ 1, got {every!r}")
        self.k = k
        self.every = every
        self.tracker = EigenTracker(k=k, tol=tol)

    def __call__(self, ctx: StepContext, decision: StepDecision, recorder: Recorder) -> None:
        """Runner callback: the PF loss-rate quantities at θₙ every ``every`` steps (none when the rate is 0)."""
        if ctx.step % self.every or not decision.lr > 0:
            return
        pairs = self.tracker.update(ctx.objective, ctx.theta)
        g = ctx.grad.to(pairs.vectors.dtype)
        g2 = float(torch.dot(g, g))
        along = (pairs.vectors.T @ g).double().cpu().numpy() ** 2
        view = pf_stability(pairs.values.double().cpu().numpy(), decision.lr)
        for i in range(len(along)):
            recorder.log(f"eigenvalue_{i}", float(pairs.values[i]))
            recorder.log(f"alignment_{i}", float(along[i] / g2) if g2 > 0 else math.nan)
            recorder.log(f"pf_re_c_{i}", float(view.re_c[i]))
        recorder.log("pf_loss_rate", float((view.re_c * along).sum() - (g2 - along.sum())))
        recorder.log("gf_loss_rate", -g2)


def loss_rate_agreement(trajectory: Trajectory, lr: float, before: int = 20,
                        relative: float = SPIKE_RELATIVE) -> dict[str, Any]:
    """How well the recorded ``pf_loss_rate`` (and ``gf_loss_rate``) predict GD's one-step loss change.

    Observed rate rₙ = (E(θₙ₊₁) − E(θₙ))/h. Over every measured step, and over the ``before`` steps that precede
    each loss spike (:func:`loss_spikes`): the fraction of steps whose predicted sign matches rₙ's, the median
    of |predicted|/|rₙ| (size), and, per spike, the lead: how many steps before the spike the PF first predicted
    a rise (``None`` when it did not in the window). Returns plain numbers (a table row per spike in ``spikes``).
    """
    losses = np.asarray(trajectory.losses, dtype=float)
    observed = np.full(len(losses), np.nan)
    observed[:-1] = (losses[1:] - losses[:-1]) / check_positive("lr", lr)
    pf, gf = (np.asarray(trajectory.metric(name), dtype=float) for name in ("pf_loss_rate", "gf_loss_rate"))
    measured = np.isfinite(pf) & np.isfinite(observed)

    def scores(mask: np.ndarray) -> dict[str, float]:
        if not mask.any():
            return {"steps": 0, "PF sign agrees": math.nan, "GF sign agrees": math.nan, "PF size ratio": math.nan,
                    "GF size ratio": math.nan}
        o = observed[mask]
        return {"steps": int(mask.sum()), "PF sign agrees": float(np.mean(np.sign(pf[mask]) == np.sign(o))),
                "GF sign agrees": float(np.mean(np.sign(gf[mask]) == np.sign(o))),
                "PF size ratio": float(np.median(np.abs(pf[mask]) / np.maximum(np.abs(o), 1e-300))),
                "GF size ratio": float(np.median(np.abs(gf[mask]) / np.maximum(np.abs(o), 1e-300)))}

    spikes, rises = loss_spikes(losses, relative)
    rows = []
    for spike, rise in zip(spikes, rises):
        window = np.zeros(len(losses), dtype=bool)
        window[max(spike - before, 0):spike] = True
        mask = window & measured
        rising = np.flatnonzero(mask & (pf > 0))
        rows.append({"spike step": spike, "rise": rise, **scores(mask),
                     "PF lead (steps)": int(spike - rising[0]) if len(rising) else None})
    return {"all": scores(measured), "before spikes": scores(_union(rows, len(losses), before) & measured),
            "spikes": rows}


def _union(rows: list[dict], n: int, before: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    for row in rows:
        mask[max(row["spike step"] - before, 0):row["spike step"]] = True
    return mask


def detect_edge_of_stability(trajectory: Trajectory, **kwargs) -> EoSReport:
    """``EoSDetector().detect(trajectory, **kwargs)`` with default thresholds."""
    return EoSDetector().detect(trajectory, **kwargs)


__all__ = ["EoSDetector", "EoSReport", "PFStability", "PFLossRate", "loss_rate_agreement", "detect_edge_of_stability",
           "loss_spikes", "pf_stability",
           "stability_threshold", "stability_thresholds"]
