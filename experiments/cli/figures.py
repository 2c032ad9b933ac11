"""`driftlab plot` on saved trajectories: the EoS figure, or the central-flow figure, written to --figures."""
from __future__ import annotations

import sys
from pathlib import Path

from analysis import plots
from flows import Trajectory, TrajectoryFileError
from flows.records.trajectory import _base

from .common import save_figure


def plot_trajectories(paths: list[Path], figures: Path, *, metric: str = "sharpness",
                      venue: plots.Venue | None = None, column: plots.Column | None = None,
                      name: str | None = None) -> int:
    """Draw saved trajectories; returns the exit status (2 with a message on stderr when they cannot be drawn).

    A central-flow trajectory (one that records ``predicted_loss``) gets the central-flow figure, with a GD run
    among ``paths`` beside it; otherwise every run goes into one EoS figure of ``metric``.
    """
    try:
        runs = [Trajectory.load(p) for p in paths]
    except TrajectoryFileError as err:
        return _fail(f"cannot read {err}; `driftlab plot` takes a results folder or files written by "
                     "Trajectory.save")
    central = [t for t in runs if "predicted_loss" in t.metrics]
    others = [t for t in runs if "predicted_loss" not in t.metrics]
    if len(central) > 1 or (central and len(others) > 1):
        return _fail("a central-flow figure takes one central-flow trajectory and at most one GD trajectory")
    if not central:
        missing = [(p, t) for p, t in zip(paths, runs) if metric not in t.metrics]
        if missing:
            path, traj = missing[0]
            return _fail(f"{path} recorded no {metric!r} (it has {sorted(traj.metrics)}); record it with the "
                         "analysis.Sharpness callback, or pass --metric NAME")
    if column is None and venue is not None:
        column = "double" if plots.VENUES[venue].columns == 2 else "single"
    stem = name or (_base(paths[0]).name + ("_central" if central else "_eos"))
    try:
        style = plots.style(venue=venue, column=column or "single", ncols=2 if not central else 3) if venue \
            else plots.style()
    except ValueError as err:
        return _fail(str(err))
    with style:
        fig = (plots.central_flow(central[0], others[0] if others else None) if central
               else plots.eos(runs, metric=metric, labels=[_base(p).name for p in paths]))
        for path in save_figure(fig, figures, stem):
            print(f"figure:  {path}")
    return 0


def _fail(message: str) -> int:
    print(f"driftlab: error: {message}", file=sys.stderr)
    return 2
