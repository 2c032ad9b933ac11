"""One owner per results folder: writability checks, a lock, fresh/overwrite rules, litter, unit checksums.

A results folder belongs to one ``driftlab run`` at a time: the run holds an
exclusive ``flock`` on ``.driftlab.lock`` inside it (released by the kernel
when the process dies, however it dies) and writes its pid, host and command
there so that a second run can name it. A fresh run refuses a non-empty
folder unless ``--overwrite`` or ``--resume`` is given. ``--overwrite`` trusts only
a manifest (or seeds plan) that parses as driftlab's (format version, experiment,
status, the list of outputs the run wrote) and deletes only those outputs: any
other entry in the folder is named and the run refuses, deleting nothing.

Finished units are recorded with the SHA-256 of every file they wrote, so that
a resume can tell an intact unit from a damaged one and recompute the latter.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from experiments.cli.common import LOCK_NAME, RESULTS_FORMAT, RUN_STATUSES, ConfigError


def check_writable_folder(path: Path, option: str) -> None:
    """Create ``path`` (and parents) and write a probe file in it; a ConfigError names ``option`` if that fails."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ConfigError(f"{option} {path} is not writable: {err.strerror or err}") from None


class FolderLock:
    """An exclusive, non-blocking ``flock`` on ``folder/.driftlab.lock``; the holder's identity is written in it."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        self._fd: int | None = None
        self.created = False

    def acquire(self) -> None:
        self.created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip()
            os.close(fd)
            self.created = False  # another run's lock
            try:
                who = json.loads(holder)
                desc = (f"pid {who.get('pid')} on {who.get('host')}, started {who.get('started')}: "
                        f"{who.get('command')}")
            except (ValueError, AttributeError):
                desc = "a process that did not say who it is"
            raise ConfigError(f"results folder {self.path.parent} is in use by another driftlab run ({desc}); "
                              f"wait for it to finish or choose another --out") from None
        os.ftruncate(fd, 0)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
                "started": datetime.datetime.now().isoformat(timespec="seconds")}
        os.write(fd, json.dumps(info).encode())
        self._fd = fd

    def release(self, discard: bool = False) -> None:
        """Unlock; with ``discard`` (a refused run) also remove the lock file if this run created it."""
        if self._fd is not None:
            if discard and self.created:
                with contextlib.suppress(OSError):
                    self.path.unlink()
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _is_litter(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def driftlab_record(path: Path, kind: str) -> dict[str, Any]:
    """The parsed ``manifest.json`` (``kind="manifest"``) or ``seeds.json`` (``kind="plan"``) at ``path`` when it
    is driftlab's own (format version, experiment, status or seeds, and the list of outputs); else a ConfigError
    saying why --overwrite will not trust it."""
    def refuse(why: str) -> ConfigError:
        return ConfigError(f"--overwrite: {path} is not a driftlab {kind} ({why}); refusing to delete what driftlab "
                           "did not write: empty the folder yourself or choose another --out")

    try:
        saved = json.loads(path.read_text())
    except OSError as err:
        raise refuse(f"unreadable: {err.strerror or err}") from None
    except ValueError:
        raise refuse("not JSON") from None
    if not isinstance(saved, dict):
        raise refuse(f"a JSON {type(saved).__name__}, not an object")
    if saved.get("format") != RESULTS_FORMAT:
        raise refuse(f"format {saved.get('format')!r}, expected {RESULTS_FORMAT}")
    if not isinstance(saved.get("experiment"), str):
        raise refuse("no experiment name")
    if kind == "manifest" and saved.get("status") not in RUN_STATUSES:
        raise refuse(f"status {saved.get('status')!r} is none of {RUN_STATUSES}")
    if kind == "plan" and not (isinstance(saved.get("seeds"), list)
                               and all(isinstance(s, int) and not isinstance(s, bool) for s in saved["seeds"])):
        raise refuse("no list of seeds")
    outputs = saved.get("outputs")
    if not (isinstance(outputs, list) and all(isinstance(o, str) and "/" not in o and o not in ("", ".", "..")
                                              for o in outputs)):
        raise refuse("no list of the outputs it wrote")
    return saved


def clear_outputs(out: Path, record: str, allowed: set[str]) -> None:
    """Delete the entries of ``out`` named in ``allowed`` (what the driftlab run recorded in ``record`` wrote),
    temporary litter and ``record`` itself, keeping the lock; refuse, deleting nothing, if any other entry is
    there (naming the first)."""
    entries = sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME)
    foreign = [name for name in entries if name not in allowed and name != record and not _is_litter(name)]
    if foreign:
        raise ConfigError(f"--overwrite: {out} holds {foreign[0]!r}"
                          f"{f' (and {len(foreign) - 1} more)' if len(foreign) > 1 else ''}, which the driftlab run "
                          f"recorded in {record} did not write; refusing to delete it: move it away or choose "
                          "another --out")
    for name in entries:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def prepare_fresh(out: Path, overwrite: bool) -> None:
    """A fresh run's folder: refuse one with content unless ``overwrite``; then delete what the driftlab run
    recorded in its manifest wrote (:func:`clear_outputs`), and nothing else."""
    content = [p for p in out.iterdir() if p.name != LOCK_NAME]
    if not content:
        return
    manifest = out / "manifest.json"
    if not overwrite:
        what = "results"
        try:
            saved = json.loads(manifest.read_text())
            what = f"a {saved.get('experiment')!r} run with status {saved.get('status')!r}"
        except (OSError, ValueError, AttributeError):
            pass
        raise ConfigError(f"--out {out} is not empty (it holds {what}); continue it with --resume {out}, "
                          f"or pass --overwrite to replace it, or choose another --out")
    if not manifest.is_file():
        raise ConfigError(f"--overwrite: {out} holds files but no driftlab manifest.json; "
                          f"refusing to delete what driftlab did not write")
    saved = driftlab_record(manifest, "manifest")
    clear_outputs(out, "manifest.json", set(saved["outputs"]))


def _writer_alive(path: Path) -> bool:
    """Whether the process named in a temporary file ``.NAME.PID.XXXX.tmp`` is still running (not this one)."""
    parts = path.name.split(".")
    try:
        pid = int(parts[-3])
    except (IndexError, ValueError):
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_litter(folder: Path, *, recursive: bool) -> list[Path]:
    """Delete the temporary files (``.NAME.PID.XXXX.tmp``) that a write killed mid-way left behind.

    A file whose writer is still alive is a write in flight (another run sharing
    a figures folder) and is left alone.
    """
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.glob("**/.*.tmp" if recursive else ".*.tmp"):
        try:
            if path.is_file() and not _writer_alive(path):
                path.unlink()
                removed.append(path)
        except FileNotFoundError:  # its writer renamed it meanwhile
            pass
    return removed


def snapshot(out: Path) -> dict[str, tuple[int, int]]:
    """(mtime_ns, size) of every regular file under ``out`` except the lock, the manifest and temporary files."""
    files = {}
    for path in out.rglob("*"):
        if path.name in (LOCK_NAME, "manifest.json") or path.name.endswith(".tmp") or not path.is_file():
            continue
        st = path.stat()
        files[path.relative_to(out).as_posix()] = (st.st_mtime_ns, st.st_size)
    return files


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def written_since(out: Path, before: dict[str, tuple[int, int]]) -> dict[str, str]:
    """SHA-256 of every file created or changed under ``out`` since ``before`` was taken."""
    after = snapshot(out)
    return {rel: sha256(out / rel) for rel, sig in sorted(after.items()) if before.get(rel) != sig}


def damaged(out: Path, files: dict[str, str]) -> str | None:
    """Why a finished unit's files are not what it wrote (the first missing or changed file), or None."""
    for rel, digest in files.items():
        path = out / rel
        if not path.is_file():
            return f"{rel} is missing"
        if sha256(path) != digest:
            return f"{rel} has changed since it was written"
    return None


def validate_manifest(saved: Any, path: Path, *, for_resume: bool) -> dict[str, Any]:
    """``saved`` when it has a manifest's shape (else a ValueError naming the field and ``path``)."""
    def bad(what: str) -> ValueError:
        return ValueError(f"{path} is not a driftlab manifest: {what}")

    if not isinstance(saved, dict):
        raise bad(f"expected a JSON object, got {type(saved).__name__}")
    if not isinstance(saved.get("experiment"), str):
        raise bad("'experiment' must be an experiment name")
    checks = {"completed": lambda v: isinstance(v, list) and all(isinstance(k, str) for k in v),
              "seeds": lambda v: isinstance(v, dict) and all(isinstance(s, int) for s in v.values()),
              "files": lambda v: isinstance(v, dict) and all(
                  isinstance(f, dict) and all(isinstance(d, str) for d in f.values()) for f in v.values()),
              "seed": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "config": lambda v: isinstance(v, dict)}
    for key, ok in checks.items():
        if key in saved and not ok(saved[key]):
            raise bad(f"field {key!r} has the wrong type ({type(saved[key]).__name__})")
    if for_resume:
        for key in ("config", "seed"):
            if key not in saved:
                raise bad(f"it has no {key!r}, so the run cannot be continued with the settings it started with")
    return saved
