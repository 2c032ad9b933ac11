"""A recorded path θ(t) with its per-time metrics, and its lossless save/load.

States are kept in full (T, D), as a fixed random projection (T, p) for large
models, or not at all. Metrics are named 1-D series over the same times
(loss, grad_norm, lr, sharpness, …; NaN where not measured). Events are plain
dicts (``{"kind": ..., "step": ..., "time": ...}``) so that any detector can add
its own. ``save`` writes ``path.npz`` (arrays) beside ``path.json`` (config,
metadata, events), each written atomically.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch
from torch import Tensor

from ..validate import States

STATE_MODES = get_args(States)
FORMAT_VERSION = 1


class TrajectoryFileError(ValueError):
    """A trajectory file is missing, truncated or corrupted (the message names the file)."""


def random_projection(dim: int, size: int, seed: int, dtype: torch.dtype = torch.float64,
                      device: torch.device | str = "cpu") -> Tensor:
    """A fixed Gaussian projection matrix P (D, p) / √p, reproducible from ``seed``."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return (torch.randn(dim, size, generator=gen, dtype=torch.float64) / size ** 0.5).to(dtype=dtype, device=device)


@dataclass
class Trajectory:
    """θ at times t₀ < t₁ < …, with metrics and events.

    Attributes:
        times: (T,) continuous times t = n·h for GD.
        states: (T, D) full states, (T, p) projections, or None. Complex for the exact PF.
        metrics: name → (T,) float arrays; always has ``loss`` and ``grad_norm``.
        events: list of dicts (divergence, EoS crossing, corridor segments, …).
        config: how the run was made (method, lr, flow, …), JSON-serializable.
        state_mode: ``"full"``, ``"projection"`` or ``"none"``.
        projection_seed, projection_size: how to rebuild the projection.
        status: ``"complete"``, ``"diverged"``, ``"interrupted"`` or ``"failed"``.
        error: the exception that ended a ``"failed"`` run (not saved; its text is in the ``failed`` event).
    """

    times: np.ndarray
    states: np.ndarray | None
    metrics: dict[str, np.ndarray]
    events: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    state_mode: str = "full"
    projection_seed: int | None = None
    projection_size: int | None = None
    status: str = "complete"
    error: BaseException | None = field(default=None, repr=False, compare=False)  # what ended a "failed" run

    def __len__(self) -> int:
        return int(len(self.times))

    @property
    def losses(self) -> np.ndarray:
        """The ``loss`` metric per row."""
        return self.metrics["loss"]

    @property
    def grad_norms(self) -> np.ndarray:
        """The ``grad_norm`` metric per row."""
        return self.metrics["grad_norm"]

    def metric(self, name: str) -> np.ndarray:
        """The series ``name``; a clear error listing what was recorded if it is missing."""
        if name not in self.metrics:
            raise KeyError(f"metric {name!r} was not recorded; this trajectory has: {sorted(self.metrics)}")
        return self.metrics[name]

    def state_matrix(self) -> np.ndarray:
        """The recorded states, (n, D) or (n, P) for projections; a ValueError when none were kept."""
        if self.states is None:
            raise ValueError("this trajectory kept no states (state_mode='none'): record it with states='full' "
                             "or 'projection'")
        return self.states

    def final_state(self) -> np.ndarray:
        """The last recorded state (a ValueError when none were kept)."""
        return self.state_matrix()[-1]

    def summary(self) -> str:
        """A few lines: what ran, its status, rows and times, the final loss, the metrics and events recorded."""
        what = self.config.get("flow") or self.config.get("kind") or self.config.get("method") or "run"
        lr = self.config.get("lr")
        head = f"Trajectory ({what}{'' if lr is None else f', h = {lr}'}): {self.status}, {len(self)} rows"
        if len(self):
            head += f", t in [{float(self.times[0]):.4g}, {float(self.times[-1]):.4g}]"
            losses = np.asarray(self.metrics.get("loss", []), dtype=float)
            finite = losses[np.isfinite(losses)]
            if finite.size:
                head += f", loss {finite[0]:.6g} → {finite[-1]:.6g}"
        kinds: dict[str, int] = {}
        for event in self.events:
            kinds[str(event.get("kind"))] = kinds.get(str(event.get("kind")), 0) + 1
        events = ", ".join(f"{k} × {n}" for k, n in kinds.items()) or "none"
        states = self.state_mode if self.states is None else f"{self.state_mode} {tuple(np.shape(self.states))}"
        return (f"{head}\n  metrics: {', '.join(sorted(self.metrics))}\n  events: {events}\n"
                f"  states: {states}")

    def __repr__(self) -> str:
        return self.summary()

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        """Write ``path.npz`` and ``path.json`` atomically; returns the .npz path."""
        base = _base(path)
        base.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"times": np.asarray(self.times)}
        if self.states is not None:
            states = np.asarray(self.states)
            if np.iscomplexobj(states):
                arrays["states_real"], arrays["states_imag"] = states.real, states.imag
            else:
                arrays["states"] = states
        for name, values in self.metrics.items():
            arrays[f"metric__{name}"] = np.asarray(values)
        meta = {
            "format_version": FORMAT_VERSION,
            "config": self.config,
            "events": self.events,
            "state_mode": self.state_mode,
            "projection_seed": self.projection_seed,
            "projection_size": self.projection_size,
            "status": self.status,
            "metrics": sorted(self.metrics),
            "length": len(self),
            "dim": int(np.shape(self.states)[1]) if self.states is not None and np.ndim(self.states) == 2 else None,
            "versions": versions(),
        }
        npz_path, json_path = _with(base, ".npz"), _with(base, ".json")
        atomic_write(npz_path, lambda fh: np.savez(fh, **arrays))  # type: ignore[arg-type]  # numpy stubs: kwds
        atomic_write(json_path, lambda fh: fh.write(json.dumps(meta, indent=1, default=_json_default).encode()))
        return npz_path

    @classmethod
    def load(cls, path: str | Path) -> Trajectory:
        """Read a trajectory written by :meth:`save`.

        A file that is missing, damaged or inconsistent (a field of the wrong type, an unknown status or state mode, an
        array whose shape does not fit ``times``, the state dimension or the projection size) raises
        :class:`TrajectoryFileError` naming the file and the field: nothing inconsistent loads.
        """
        base = _base(path)
        npz_path, json_path = _with(base, ".npz"), _with(base, ".json")
        for p in (npz_path, json_path):
            if not p.is_file():
                raise TrajectoryFileError(f"trajectory file {p} does not exist" if not p.exists()
                                          else f"trajectory file {p} is not a regular file")
        try:
            meta = json.loads(json_path.read_text())
        except (ValueError, UnicodeDecodeError, RecursionError, OSError) as err:
            raise TrajectoryFileError(f"trajectory metadata {json_path} is corrupted or truncated: "
                                      f"{type(err).__name__}: {err}") from None
        try:
            with np.load(npz_path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except Exception as err:  # zipfile.BadZipFile, ValueError, EOFError, OSError …
            raise TrajectoryFileError(f"trajectory arrays {npz_path} are corrupted or truncated: {err}") from err
        fields = _check_meta(meta, json_path)
        times, states, metrics = _check_arrays(arrays, fields, npz_path, json_path)
        return cls(times, states, metrics, fields["events"], fields["config"], fields["state_mode"],
                   fields["projection_seed"], fields["projection_size"], fields["status"])


STATUSES = ("complete", "diverged", "stopped", "interrupted", "failed")


def _check_meta(meta: Any, path: Path) -> dict[str, Any]:
    """The metadata's fields, each checked for its type (a TrajectoryFileError naming ``path`` and the field)."""
    def bad(field_name: str, why: str) -> TrajectoryFileError:
        return TrajectoryFileError(f"trajectory metadata {path}: field {field_name!r} {why}")

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not isinstance(meta, dict):
        raise TrajectoryFileError(f"trajectory metadata {path} is a JSON {type(meta).__name__}, not an object")
    version = meta.get("format_version", FORMAT_VERSION)
    if not is_int(version) or not 1 <= version <= FORMAT_VERSION:
        raise bad("format_version", f"is {version!r}; this driftlab reads versions 1 to {FORMAT_VERSION}")
    out = {"events": meta.get("events", []), "config": meta.get("config", {}),
           "state_mode": meta.get("state_mode", "full"), "projection_seed": meta.get("projection_seed"),
           "projection_size": meta.get("projection_size"), "status": meta.get("status", "complete"),
           "length": meta.get("length"), "dim": meta.get("dim"), "metrics": meta.get("metrics")}
    if not is_int(out["length"]) or out["length"] < 0:
        raise bad("length", f"must be a non-negative int, got {out['length']!r}")
    if not (isinstance(out["events"], list) and all(isinstance(e, dict) for e in out["events"])):
        raise bad("events", "must be a list of objects")
    if not isinstance(out["config"], dict):
        raise bad("config", f"must be an object, got a JSON {type(out['config']).__name__}")
    if out["state_mode"] not in STATE_MODES:
        raise bad("state_mode", f"is {out['state_mode']!r}; expected one of {STATE_MODES}")
    if out["status"] not in STATUSES:
        raise bad("status", f"is {out['status']!r}; expected one of {STATUSES}")
    for key in ("projection_seed", "projection_size", "dim"):
        if out[key] is not None and (not is_int(out[key]) or out[key] < 0):
            raise bad(key, f"must be a non-negative int or null, got {out[key]!r}")
    if out["state_mode"] == "projection" and out["projection_size"] is None:
        raise bad("projection_size", "is missing for projected states")
    if out["metrics"] is not None and not (isinstance(out["metrics"], list)
                                           and all(isinstance(m, str) for m in out["metrics"])):
        raise bad("metrics", "must be a list of names")
    return out


def _check_arrays(arrays: dict[str, np.ndarray], meta: dict[str, Any], npz: Path,
                  json_path: Path) -> tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray]]:
    """times, states and metrics, each checked against ``times`` and the recorded state dimension."""
    def bad(name: str, why: str) -> TrajectoryFileError:
        return TrajectoryFileError(f"trajectory arrays {npz}: {name!r} {why}")

    if "times" not in arrays:
        raise bad("times", "is missing")
    times = arrays["times"]
    if times.ndim != 1 or not np.issubdtype(times.dtype, np.number) or np.iscomplexobj(times):
        raise bad("times", f"must be a real 1-D array, got shape {times.shape} and dtype {times.dtype}")
    n = len(times)
    if n != meta["length"]:
        raise TrajectoryFileError(f"trajectory arrays {npz} do not match {json_path} (length): {n} times, "
                                  f"length {meta['length']}")
    metrics = {k[len("metric__"):]: v for k, v in arrays.items() if k.startswith("metric__")}
    if "loss" not in metrics:
        raise bad("metric__loss", "is missing (every trajectory records its loss)")
    if meta["metrics"] is not None and sorted(meta["metrics"]) != sorted(metrics):
        raise TrajectoryFileError(f"trajectory arrays {npz} hold the metrics {sorted(metrics)}, but {json_path} "
                                  f"lists {sorted(meta['metrics'])}")
    for name, values in metrics.items():
        if values.shape != (n,) or not np.issubdtype(values.dtype, np.number):
            raise bad(f"metric__{name}", f"must be a numeric array of shape ({n},) like times, got shape "
                      f"{values.shape} and dtype {values.dtype}")
    if ("states_real" in arrays) != ("states_imag" in arrays):
        raise bad("states_real" if "states_real" not in arrays else "states_imag",
                  "is missing (complex states are stored as a real and an imaginary part)")
    states: np.ndarray | None
    if "states_real" in arrays:
        if arrays["states_real"].shape != arrays["states_imag"].shape:
            raise bad("states_imag", f"has shape {arrays['states_imag'].shape}, the real part "
                      f"{arrays['states_real'].shape}")
        states = arrays["states_real"] + 1j * arrays["states_imag"]
    else:
        states = arrays.get("states")
    if meta["state_mode"] == "none":
        if states is not None:
            raise bad("states", "is present but the state mode is 'none'")
        return times, None, metrics
    if states is None:
        raise bad("states", f"is missing for state mode {meta['state_mode']!r}")
    if states.ndim != 2 or states.shape[0] != n or not np.issubdtype(states.dtype, np.number):
        raise bad("states", f"must be a numeric ({n}, D) array (one row per time), got shape {states.shape}")
    width = meta["projection_size"] if meta["state_mode"] == "projection" else meta["dim"]
    if width is not None and states.shape[1] != width:
        what = "projection size" if meta["state_mode"] == "projection" else "state dimension"
        raise bad("states", f"has {states.shape[1]} columns, but the recorded {what} is {width}")
    return times, states, metrics


LIST_FLOAT_BYTES = 32  # one float in a Python list: an 8-byte pointer and a 24-byte float object
ARRAY_OVERHEAD_BYTES = 112  # the header of one small numpy array (one recorded state)


class MemoryEstimateError(MemoryError, ValueError):
    """A run refused before it starts: what it would record does not fit in the memory available."""


def _read_int(path: str, prefix: str = "") -> int | None:
    """The first integer of ``path`` (of its line starting with ``prefix``), or None."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(prefix):
                    return int(line[len(prefix):].split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_memory() -> int | None:
    """Bytes a new allocation of this process can get.

    The least of the machine's ``MemAvailable``, what the address-space limit (``RLIMIT_AS``) leaves above the process's
    current size, and what its cgroup's ``memory.max`` leaves; physical memory where /proc is missing; None if nothing
    is known.
    """
    import resource

    limits = []
    kib = _read_int("/proc/meminfo", "MemAvailable:")
    if kib is not None:
        limits.append(kib * 1024)
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        size = _read_int("/proc/self/status", "VmSize:")
        limits.append(max(0, soft - (size or 0) * 1024))
    cap, used = _read_int("/sys/fs/cgroup/memory.max"), _read_int("/sys/fs/cgroup/memory.current")
    if cap is not None and used is not None:
        limits.append(max(0, cap - used))
    if limits:
        return min(limits)
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def record_bytes(rows: int, dim: int, states: str = "full", projection_size: int = 64, itemsize: int = 8,
                 metrics: int = 4) -> int:
    """The peak memory a :class:`Recorder` of ``rows`` rows takes, up to the trajectory it builds.

    The one estimate every runner checks before it allocates (:func:`reserve_rows`).

    bytes ≈ rows · ((1 + metrics)·32 + 8 + 2·state) + projection, state = D·itemsize + 112 (``full``),
    P·itemsize + 112 (``projection``), 0 (``none``): the rows are held as a list and stacked into one array at
    the end, so the states are held twice at the peak; the projection matrix adds D·P·itemsize. Measured against
    the peak resident memory of a full-state GD run in ``tests/flows/records/test_memory_estimate.py``.
    """
    state = {"full": dim * itemsize + ARRAY_OVERHEAD_BYTES,
             "projection": projection_size * itemsize + ARRAY_OVERHEAD_BYTES}.get(states, 0)
    projection = dim * projection_size * itemsize if states == "projection" else 0
    return int(rows) * ((1 + metrics) * LIST_FLOAT_BYTES + 8 + 2 * state) + projection


def check_memory(what: str, nbytes: int, hint: str = "") -> None:
    """Refuse (MemoryEstimateError, a ValueError) when ``nbytes`` exceeds the memory available now."""
    free = available_memory()
    if free is not None and nbytes > free:
        raise MemoryEstimateError(f"{what} needs about {nbytes / 2 ** 30:.3g} GiB, more than the "
                                  f"{free / 2 ** 30:.3g} GiB of memory available{'; ' + hint if hint else ''}")


def reserve_rows(rows: int, dim: int, states: str, projection_size: int, itemsize: int) -> None:
    """Check before allocating that recording ``rows`` rows fits in memory (see :func:`record_bytes`)."""
    check_memory(f"recording {rows:,} rows (states={states!r}, D = {dim:,})",
                 record_bytes(rows, dim, states, projection_size, itemsize),
                 "record fewer steps or output times" + ("" if states == "none" else ", or states='none'"))


class Recorder:
    """Accumulates a :class:`Trajectory` row by row (used by the GD runner and the integrator)."""

    def __init__(self, dim: int, state_mode: str = "full", projection_size: int = 64,
                 projection_seed: int = 0) -> None:
        if state_mode not in STATE_MODES:
            raise ValueError(f"states must be one of {STATE_MODES}, got {state_mode!r}")
        if state_mode == "projection" and (not isinstance(projection_size, int) or projection_size <= 0):
            raise ValueError(f"projection_size must be a positive int, got {projection_size!r}")
        self.dim, self.state_mode = dim, state_mode
        self.projection_size, self.projection_seed = projection_size, projection_seed
        self._projection: Tensor | None = None
        self.times: list[float] = []
        self.states: list[np.ndarray] = []
        self.metrics: dict[str, list[float]] = {}
        self.events: list[dict[str, Any]] = []

    def _project(self, theta: Tensor) -> np.ndarray:
        if self.state_mode == "full":
            return theta.detach().cpu().numpy().copy()
        if self._projection is None or self._projection.device != theta.device:
            self._projection = random_projection(self.dim, self.projection_size, self.projection_seed,
                                                 theta.real.dtype, theta.device)
        p = self._projection.to(theta.dtype) if theta.is_complex() else self._projection.to(theta.dtype)
        return (theta.detach() @ p).cpu().numpy()

    def add(self, time: float, theta: Tensor | None, **metrics: float) -> None:
        """Append a row at ``time``: θ (per the state mode) and metrics (those missing stay NaN)."""
        n = len(self.times)
        self.times.append(float(time))
        if self.state_mode != "none" and theta is not None:
            self.states.append(self._project(theta))
        for name, value in metrics.items():
            series = self.metrics.setdefault(name, [float("nan")] * n)
            series.append(float(value))
        for series in self.metrics.values():  # metrics missing in this row stay NaN
            if len(series) < n + 1:
                series.append(float("nan"))

    @property
    def row(self) -> int:
        """The index of the current (last added) row; −1 before the first."""
        return len(self.times) - 1

    def set_metric(self, name: str, index: int, value: float) -> None:
        """Metric ``name`` at row ``index`` (rows before it without one stay NaN)."""
        series = self.metrics.setdefault(name, [float("nan")] * len(self.times))
        series[index] = float(value)

    def log(self, name: str, value: float) -> None:
        """Metric ``name`` at the current row: what a callback measured at the state it was called with."""
        if not self.times:
            raise IndexError(f"log({name!r}): no row recorded yet")
        self.set_metric(name, len(self.times) - 1, value)

    def event(self, event: Any) -> None:
        """Keep an event (an ``Event``, or anything with ``to_dict()``) in the trajectory."""
        self.events.append(event.to_dict())

    def build(self, config: dict[str, Any], status: str = "complete") -> Trajectory:
        """The :class:`Trajectory` of the rows so far, with ``config`` and ``status``."""
        states = np.stack(self.states) if self.states and self.state_mode != "none" else None
        return Trajectory(np.asarray(self.times), states, {k: np.asarray(v) for k, v in self.metrics.items()},
                          list(self.events), dict(config), self.state_mode,
                          self.projection_seed if self.state_mode == "projection" else None,
                          self.projection_size if self.state_mode == "projection" else None, status)


def _base(path: str | Path) -> Path:
    """``run.npz``/``run.json``/``run`` → ``run``; other dots stay (``lr_0.02`` is a name, not a suffix)."""
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".npz", ".json") else path


def _with(base: Path, suffix: str) -> Path:
    return base.with_name(base.name + suffix)


def versions() -> dict[str, str]:
    """Versions of the libraries a result depends on."""
    import platform

    import scipy
    import torchdiffeq

    try:
        from importlib.metadata import version
        own = version("driftlab")
    except Exception:  # not installed as a distribution
        own = "unknown"
    return {"driftlab": own, "torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "torchdiffeq": getattr(torchdiffeq, "__version__", "unknown"), "python": platform.python_version()}


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (torch.dtype, torch.device, Path)):
        return str(obj)
    raise TypeError(f"cannot serialize {type(obj).__name__} in trajectory metadata")


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def atomic_write(path: Path, write) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``.

    The file gets the permissions an ordinary ``open(path, "w")`` would give
    (0o666 less the umask), not the temporary file's private 0o600.
    """
    # the writer's pid in the name lets a later run tell a killed writer's litter from a write in flight
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
