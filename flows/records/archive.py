"""Save and load for the small result records (eigenpairs, densities, planes, comparisons, EoS reports).

Every record is written as a :class:`Trajectory` is: ``path.npz`` (arrays, no pickles) beside ``path.json``
(``kind``, the scalar fields, the library versions), each written atomically. Loading checks the ``kind`` and
that every array the record needs is there, and names the file and the field when not.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .trajectory import TrajectoryFileError, _base, _json_default, _with, atomic_write, versions

ARCHIVE_VERSION = 1


class RecordFileError(TrajectoryFileError):
    """A saved record is missing, damaged, of another kind or lacks a field (the message names file and field)."""


def save_record(path: str | Path, kind: str, arrays: dict[str, np.ndarray], fields: dict[str, Any]) -> Path:
    """Write ``arrays`` to ``path.npz`` and ``{"kind", "fields", "versions"}`` to ``path.json``; returns the .npz."""
    base = _base(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format_version": ARCHIVE_VERSION, "kind": kind, "fields": fields, "arrays": sorted(arrays),
            "versions": versions()}
    npz_path, json_path = _with(base, ".npz"), _with(base, ".json")
    atomic_write(npz_path, lambda fh: np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()}))  # type: ignore[arg-type]  # numpy stubs: kwds
    atomic_write(json_path, lambda fh: fh.write(json.dumps(meta, indent=1, default=_json_default).encode()))
    return npz_path


def load_record(path: str | Path, kind: str, required: tuple[str, ...] = ()
                ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, fields) of a record written by :func:`save_record` as ``kind``; :class:`RecordFileError` else."""
    base = _base(path)
    npz_path, json_path = _with(base, ".npz"), _with(base, ".json")
    for p in (json_path, npz_path):
        if not p.is_file():
            raise RecordFileError(f"{kind} file {p} does not exist" if not p.exists()
                                  else f"{kind} file {p} is not a regular file")
    try:
        meta = json.loads(json_path.read_text())
    except (ValueError, UnicodeDecodeError, OSError) as err:
        raise RecordFileError(f"{kind} metadata {json_path} is corrupted or truncated: {err}") from None
    if not isinstance(meta, dict) or meta.get("kind") != kind:
        found = meta.get("kind") if isinstance(meta, dict) else type(meta).__name__
        raise RecordFileError(f"{json_path} holds a {found!r} record, not {kind!r}")
    try:
        with np.load(npz_path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as err:  # zipfile.BadZipFile, ValueError, EOFError, OSError …
        raise RecordFileError(f"{kind} arrays {npz_path} are corrupted or truncated: {err}") from err
    missing = [name for name in required if name not in arrays]
    if missing:
        raise RecordFileError(f"{kind} arrays {npz_path} lack {missing}; present: {sorted(arrays)}")
    fields = meta.get("fields")
    if not isinstance(fields, dict):
        raise RecordFileError(f"{json_path}: field 'fields' must be an object, got {type(fields).__name__}")
    return arrays, fields
