"""GD and flows side by side on one time grid: the :class:`Comparison` record, with its save and load."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .archive import RecordFileError, load_record, save_record
from .trajectory import Trajectory


@dataclass
class Comparison:
    """GD and flows on one grid t = n·h (what :func:`flows.compare` returns).

    Attributes:
        gd: the GD trajectory (states kept in full for the drift).
        flows: flow name → its trajectory.
        drift: flow name → (n+1,) ‖θ_GD(n) − Re θ_flow(n·h)‖.
        loss_gap: flow name → (n+1,) E(θ_flow(n·h)) − E(θ_GD(n)).
    """

    gd: Trajectory
    flows: dict[str, Trajectory]
    drift: dict[str, np.ndarray] = field(default_factory=dict)
    loss_gap: dict[str, np.ndarray] = field(default_factory=dict)

    def summary(self) -> str:
        """A line for GD and one per flow: status, steps, final loss, final and largest drift."""
        lines = [f"Comparison over {len(self.gd) - 1} GD steps (h = {self.gd.config.get('lr', '?')}):",
                 f"  GD: {self.gd.status}, final loss {_last(self.gd.losses):.6g}"]
        for name, traj in self.flows.items():
            drift = self.drift.get(name)
            said = "" if drift is None or not np.isfinite(drift).any() else (
                f", drift final {_last(drift):.3g}, max {np.nanmax(drift):.3g}")
            lines.append(f"  {name}: {traj.status}, {len(traj)} rows, final loss {_last(traj.losses):.6g}{said}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    def save(self, folder: str | Path) -> Path:
        """Write the comparison into ``folder``: ``gd``, ``flow_<name>`` (trajectories) and ``comparison``."""
        folder = Path(folder)
        self.gd.save(folder / "gd")
        for name, traj in self.flows.items():
            traj.save(folder / f"flow_{name}")
        arrays = {f"drift__{k}": v for k, v in self.drift.items()}
        arrays.update({f"loss_gap__{k}": v for k, v in self.loss_gap.items()})
        save_record(folder / "comparison", "comparison", arrays, {"flows": list(self.flows)})
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Comparison:
        """Read a comparison written by :meth:`save` (a :class:`RecordFileError` naming what is missing)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise RecordFileError(f"comparison folder {folder} does not exist")
        arrays, fields = load_record(folder / "comparison", "comparison")
        names = fields.get("flows")
        if not isinstance(names, list):
            raise RecordFileError(f"{folder / 'comparison.json'}: field 'flows' must be a list of flow names")
        flows = {name: Trajectory.load(folder / f"flow_{name}") for name in names}
        pick = {kind: {k.split("__", 1)[1]: v for k, v in arrays.items() if k.startswith(kind + "__")}
                for kind in ("drift", "loss_gap")}
        return cls(Trajectory.load(folder / "gd"), flows, pick["drift"], pick["loss_gap"])


def _last(values: np.ndarray) -> float:
    """The last finite entry (NaN when there is none)."""
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    return float(finite[-1]) if finite.size else float("nan")
