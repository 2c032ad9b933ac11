"""Export to TensorBoard event files (the optional ``tensorboard`` extra), so runs sit beside a user's others.

A :class:`flows.Trajectory` becomes one run: every finite value of every metric a scalar at its row's step (GD's
step n; a flow's row index), every event a text entry, the config a text entry. A results folder becomes one run
per saved trajectory, named by its path inside the folder.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from flows import Trajectory, TrajectoryFileError


def _writer(logdir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:  # torch's writer needs the tensorboard package
        raise ImportError("exporting to TensorBoard needs the tensorboard package: pip install -e '.[tensorboard]'"
                          ) from err
    return SummaryWriter(log_dir=str(logdir))


def export_trajectory(trajectory: Trajectory, logdir: str | Path) -> int:
    """Write ``trajectory`` as event files in ``logdir``; returns the number of scalars written."""
    writer = _writer(Path(logdir))
    written = 0
    try:
        for name, values in sorted(trajectory.metrics.items()):
            for step, value in enumerate(values):
                if math.isfinite(float(value)):
                    writer.add_scalar(name, float(value), global_step=step)
                    written += 1
        for event in trajectory.events:
            writer.add_text(f"events/{event.get('kind')}", json.dumps(event, default=str),
                            global_step=int(event.get("step", event.get("start", 0)) or 0))
        writer.add_text("config", json.dumps(trajectory.config, default=str, indent=1))
    finally:
        writer.close()
    return written


def export_results(folder: str | Path, logdir: str | Path) -> list[str]:
    """One TensorBoard run per trajectory saved under ``folder``; returns the run names (paths inside it)."""
    folder, logdir = Path(folder), Path(logdir)
    runs = []
    for npz in sorted(folder.rglob("*.npz")):
        try:
            trajectory = Trajectory.load(npz)
        except TrajectoryFileError:
            continue  # another record (a density, eigenpairs) or not driftlab's
        name = str(npz.relative_to(folder).with_suffix(""))
        export_trajectory(trajectory, logdir / name)
        runs.append(name)
    if not runs:
        raise ValueError(f"no saved trajectories under {folder}")
    return runs
