"""Figures of the runs a user already holds: a GD :class:`Trajectory`, a :class:`Comparison`, a central flow.

Each function returns the matplotlib Figure; it never calls ``plt.show``, never writes a file and changes no
global state. ``ax=`` draws into the caller's axes: one Axes (the figure's main panel only) or a sequence with
one Axes per panel. Without ``ax`` the figure is one row of panels sized by ``figsize``, else by the active
rcParams (``plots.style(venue="icml")`` gives the column's width), else 3.4 × 2.9 inches per panel.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from flows import Comparison, Trajectory, gaussian_smoothed

from ..monitors.stability import EoSReport, _thresholds
from .house import CYCLE, OKABE_ITO, color, label

EVENT_STYLES = {"eos_crossing": ("dotted", "first crossing"), "loss_spike": ("dashdot", "loss spike"),
                "diverged": ("solid", "diverged"), "divergence": ("solid", "diverged")}
SHARPNESS_METRICS = ("sharpness", "preconditioned_sharpness", "batch_sharpness")


def panels(count: int, ax: Axes | Sequence[Axes] | None, main: int = 0,
           figsize: tuple[float, float] | None = None) -> tuple[Figure, list[Axes | None]]:
    """(figure, one Axes or None per panel) for a figure of ``count`` panels; ``main`` is drawn into a lone ``ax``."""
    if ax is None:
        if figsize is None:
            default = tuple(mpl.rcParamsDefault["figure.figsize"])
            current = tuple(mpl.rcParams["figure.figsize"])
            figsize = (3.4 * count, 2.9) if current == default else current
        fig, axes = plt.subplots(1, count, figsize=figsize, squeeze=False)
        return fig, list(axes.ravel())
    if isinstance(ax, Axes):
        chosen: list[Axes | None] = [None] * count
        chosen[main] = ax
        return ax.figure, chosen  # type: ignore[return-value]
    given = list(ax)
    if len(given) != count or not all(isinstance(a, Axes) for a in given):
        raise ValueError(f"ax must be one matplotlib Axes or a sequence of {count} Axes (one per panel), "
                         f"got {len(given)} objects")
    return given[0].figure, given  # type: ignore[return-value]


def _as_list(trajectories: Trajectory | Sequence[Trajectory]) -> list[Trajectory]:
    runs = [trajectories] if isinstance(trajectories, Trajectory) else list(trajectories)
    if not runs or not all(isinstance(t, Trajectory) for t in runs):
        raise TypeError("trajectories must be a Trajectory or a non-empty sequence of Trajectory objects")
    return runs


def _steps(traj: Trajectory) -> np.ndarray:
    lr = traj.config.get("lr")
    if isinstance(lr, (int, float)) and lr > 0 and "lr" not in traj.metrics:
        return np.rint(np.asarray(traj.times) / lr)
    return np.arange(len(traj), dtype=float)


def _run_label(traj: Trajectory, given: str | None) -> str:
    if given is not None:
        return given
    lr = traj.config.get("lr")
    name = traj.config.get("method") or traj.config.get("flow") or "GD"
    return label(str(name).lower(), lr if isinstance(lr, (int, float)) else None)


def mark_events(ax: Axes, steps: np.ndarray, events: list[dict[str, Any]], colour: str) -> None:
    """Vertical lines at the steps of the known event kinds (first crossing, loss spikes, divergence)."""
    for event in events:
        kind = event.get("kind")
        if kind in EVENT_STYLES and "step" in event:
            ax.axvline(float(event["step"]), color=colour, ls=EVENT_STYLES[kind][0], lw=0.9, alpha=0.8)


def _report_events(report: EoSReport | None) -> list[dict[str, Any]]:
    if report is None:
        return []
    found = [{"kind": "loss_spike", "step": s} for s in report.spikes]
    if report.first_crossing is not None:
        found.append({"kind": "eos_crossing", "step": report.first_crossing})
    return found


def eos(trajectories: Trajectory | Sequence[Trajectory], *, metric: str = "sharpness", lr: float | None = None,
        momentum: float = 0.0, batch: str | None = None, reports: Sequence[EoSReport | None] | None = None,
        labels: Sequence[str] | None = None, ax: Axes | Sequence[Axes] | None = None,
        figsize: tuple[float, float] | None = None) -> Figure:
    """The edge-of-stability figure: the loss (log) and the sharpness against its stability threshold.

    The threshold per row is that of :meth:`analysis.EoSDetector.detect`: the recorded ``stability_threshold``
    (preconditioned sharpness of adaptive methods), else 2(1 + β)/hₙ with ``momentum`` β and the recorded or
    given rate, or with ``batch="small"`` the small-batch plateau 2(1 − β)/hₙ. Events recorded in each trajectory
    (first crossing dotted, loss spikes dash-dotted, divergence solid) and those of ``reports`` are marked.

    Args:
        trajectories: one run or several (one colour each).
        metric: the curvature series drawn: ``sharpness``, ``preconditioned_sharpness``, ``batch_sharpness`` or
            any recorded metric name.
        lr: GD's rate h, imposed (default: the recorded ``lr`` metric, else the config's).
        momentum: heavy-ball β of the threshold 2(1 + β)/h.
        batch: ``"small"`` or ``"large"``: the batch-sharpness regime's threshold (None: GD's).
        reports: an :class:`analysis.EoSReport` per run (or None) whose crossing and spikes are marked.
        labels: legend labels (default: the method and h).
        ax: see the module docstring; panels are (loss, sharpness), the main one the sharpness.
        figsize: the figure's size in inches (see the module docstring).
    """
    runs = _as_list(trajectories)
    if reports is not None and len(reports) != len(runs):
        raise ValueError(f"reports must have one entry per trajectory ({len(runs)}), got {len(reports)}")
    if labels is not None and len(labels) != len(runs):
        raise ValueError(f"labels must have one entry per trajectory ({len(runs)}), got {len(labels)}")
    fig, (loss_ax, sharp_ax) = panels(2, ax, main=1, figsize=figsize)
    for i, traj in enumerate(runs):
        colour = CYCLE[i % len(CYCLE)] if len(runs) > 1 else OKABE_ITO["black"]
        steps = _steps(traj)
        name = _run_label(traj, None if labels is None else labels[i])
        events = list(traj.events) + _report_events(None if reports is None else reports[i])
        if loss_ax is not None:
            losses = np.asarray(traj.losses, dtype=float)
            loss_ax.semilogy(steps, np.where(losses > 0, losses, np.nan), color=colour, label=name)
            mark_events(loss_ax, steps, events, colour)
        if sharp_ax is not None:
            values = traj.metric(metric)
            ok = np.isfinite(values)
            sharp_ax.plot(steps[ok], values[ok], "o-", ms=2, color=colour, label=f"{metric.replace('_', ' ')}, "
                          f"{name}")
            threshold = _thresholds(traj, lr, momentum, batch)
            sharp_ax.plot(steps, threshold, ls="--", lw=0.9, color=colour, label="stability threshold")
            mark_events(sharp_ax, steps, events, colour)
    if loss_ax is not None:
        loss_ax.set(xlabel="step", ylabel="loss", title="training loss")
        loss_ax.legend()
    if sharp_ax is not None:
        sharp_ax.set(xlabel="step", ylabel=metric.replace("_", " "), title="sharpness and its threshold (dashed)")
        sharp_ax.legend()
    return fig


def comparison(result: Comparison, *, flows: Sequence[str] | None = None, ax: Axes | Sequence[Axes] | None = None,
               figsize: tuple[float, float] | None = None) -> Figure:
    """Flows against GD: the losses, the drift ‖θ_GD(n) − θ_flow(n·h)‖ (log) and the loss gap E_flow − E_GD.

    ``flows`` picks which of ``result.flows`` (default all). Panels (loss, drift, loss gap); the main one the
    drift.
    """
    if not isinstance(result, Comparison):
        raise TypeError(f"result must be a flows.Comparison, got {type(result).__name__}")
    names = list(result.flows) if flows is None else list(flows)
    unknown = [n for n in names if n not in result.flows]
    if unknown:
        raise ValueError(f"flows {unknown} are not in this comparison; it has {sorted(result.flows)}")
    fig, (loss_ax, drift_ax, gap_ax) = panels(3, ax, main=1, figsize=figsize)
    steps = _steps(result.gd)
    if loss_ax is not None:
        loss_ax.semilogy(steps, result.gd.losses, color=color("gd"), label="GD")
    for name in names:
        traj, colour = result.flows[name], color(name)
        n = len(traj)
        if loss_ax is not None:
            loss_ax.semilogy(steps[:n], traj.losses[: len(steps)], color=colour, ls="--", label=label(name))
        if drift_ax is not None and name in result.drift:
            drift = result.drift[name]
            drift_ax.semilogy(steps[1:len(drift)], drift[1:], color=colour, label=label(name))
        if gap_ax is not None and name in result.loss_gap:
            gap = result.loss_gap[name]
            gap_ax.plot(steps[:len(gap)], gap, color=colour, label=label(name))
    for axis, title, ylabel in ((loss_ax, "loss", "E"), (drift_ax, "drift from GD", "‖θ_GD(n) − θ_flow(nh)‖"),
                                (gap_ax, "loss gap", "E(θ_flow) − E(θ_GD)")):
        if axis is not None:
            axis.set(xlabel="GD step n", ylabel=ylabel, title=title)
            axis.legend()
    if gap_ax is not None:
        gap_ax.axhline(0.0, color="0.5", lw=0.6)
    return fig


def central_flow(flow: Trajectory, gd: Trajectory | None = None, *, smoothing: float = 5.0,
                 ax: Axes | Sequence[Axes] | None = None, figsize: tuple[float, float] | None = None) -> Figure:
    """The central flow against GD: predicted vs observed loss, the critical count, X's eigenvalues.

    Panel 1: GD's loss (thin), GD's loss smoothed by a Gaussian of ``smoothing`` steps, the central flow's
    predicted time-averaged loss E + ½⟨H, Σ⟩ and its own loss E(θ(t)). Panel 2: the number of critical
    directions. Panel 3: the eigenvalues σᵢ of X (the oscillation variances, log). The main panel is the first.
    """
    if "predicted_loss" not in flow.metrics:
        raise ValueError("flow must be a central-flow Trajectory (from flows.central_flow): it records no "
                         f"'predicted_loss'; it has {sorted(flow.metrics)}")
    fig, (loss_ax, count_ax, sigma_ax) = panels(3, ax, main=0, figsize=figsize)
    steps = _steps(flow)
    if loss_ax is not None:
        if gd is not None:
            gd_steps = _steps(gd)
            loss_ax.semilogy(gd_steps, gd.losses, color=color("gd"), lw=0.5, alpha=0.5, label="GD")
            loss_ax.semilogy(gd_steps, gaussian_smoothed(gd.losses, smoothing), color=color("gd"),
                             label=f"GD smoothed (σ = {smoothing:g} steps)")
        loss_ax.semilogy(steps, flow.metric("predicted_loss"), color=color("central"), ls="--",
                         label="central flow, predicted")
        loss_ax.semilogy(steps, flow.losses, color=OKABE_ITO["sky"], ls=":", label="central flow, E(θ)")
        loss_ax.set(xlabel="step", ylabel="loss", title="predicted vs observed loss")
        loss_ax.legend()
    if count_ax is not None:
        count_ax.step(steps, flow.metric("critical"), where="post", color=color("central"))
        count_ax.set(xlabel="step", ylabel="critical directions", title="critical count")
    if sigma_ax is not None:
        sigma_names = sorted((n for n in flow.metrics if n.startswith("sigma_")), key=lambda n: int(n[6:]))
        for i, name in enumerate(sigma_names):
            values = np.asarray(flow.metrics[name], dtype=float)
            ok = np.isfinite(values) & (values > 0)
            if ok.any():
                sigma_ax.semilogy(steps[ok], values[ok], color=CYCLE[i % len(CYCLE)], label=f"σ_{i + 1}")
        sigma_ax.set(xlabel="step", ylabel="eigenvalue of X", title="oscillation variances")
        if sigma_ax.lines:
            sigma_ax.legend()
    return fig
