"""Shared I/O for experiments: config overrides, manifests, CSV tables, atomic JSON."""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import typing
from pathlib import Path
from typing import Any

import torch

from flows.records.trajectory import atomic_write, versions

FIGURES = Path(__file__).resolve().parents[2] / "figures"  # the repository's committed gallery


def number_key(value: float) -> str:
    """A short text for a number that round-trips exactly: ``f"{x:g}"`` where that is exact, else ``repr``.

    Used in unit keys and folder names, so that 0.1 and 0.1000001 never share a result.
    """
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def closest(name: str, choices) -> str:
    """`` (did you mean 'X'?)`` for the closest of ``choices`` (difflib's ratio ≥ 0.6), else the empty string."""
    from difflib import get_close_matches

    match = get_close_matches(name, list(choices), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


class ConfigError(ValueError):
    """A bad ``--set key=value`` (unknown key, or a value of the wrong type)."""


def _expected(kind: Any) -> str:
    """What a config field of type ``kind`` takes, in words (for one-line errors)."""
    if kind is float:
        return "a finite float"
    if typing.get_origin(kind) is tuple:
        inner = _expected(typing.get_args(kind)[0]).removeprefix("a ").removeprefix("an ")
        return f"comma-separated {inner}s"
    return str(getattr(kind, "__name__", kind))


def _parse(value: str, kind: Any, key: str) -> Any:
    origin = typing.get_origin(kind)
    try:
        if kind is bool:
            low = value.lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return low in ("true", "1", "yes")
        if kind is int:
            return int(value)
        if kind is float:
            number = float(value)
            if not math.isfinite(number):  # no config field means anything by NaN or ±inf (1e400 reads as inf)
                raise ValueError(value)
            return number
        if kind is str:
            return value
        if origin is tuple:
            inner = typing.get_args(kind)[0]
            return tuple(_parse(v.strip(), inner, key) for v in value.split(",") if v.strip())
        if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
            args = [a for a in typing.get_args(kind) if a is not type(None)]
            if value.lower() == "none":
                return None
            return _parse(value, args[0], key)
    except ValueError:
        raise ConfigError(f"--set {key}={value}: expected {_expected(kind)}") from None
    raise ConfigError(f"--set {key}: unsupported type {kind}")


def apply_overrides(config: Any, pairs: list[str]) -> Any:
    """``config`` with ``key=value`` strings applied, each parsed to the field's type."""
    hints = typing.get_type_hints(type(config))
    fields = {f.name for f in dataclasses.fields(config)}
    changes = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in fields:
            raise ConfigError(f"unknown key {key!r}{closest(key, fields)}; valid keys: {', '.join(sorted(fields))}")
        changes[key] = _parse(value.strip(), hints[key], key)
    new = dataclasses.replace(config, **changes)
    check = getattr(new, "validate", None)
    if check is not None:
        check()
    return new


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temporary file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: fh.write(json.dumps(obj, indent=1, default=str).encode()))


RESULTS_FORMAT = 1  # the version of driftlab's manifest.json / seeds.json layout
RUN_STATUSES = ("running", "complete", "failed", "interrupted")
LOCK_NAME = ".driftlab.lock"
BOOKKEEPING = ("manifest.json", "seeds.json", LOCK_NAME)


def top_level_outputs(out: Path) -> list[str]:
    """The names directly in ``out`` that a run wrote (everything but the manifest, the seeds plan, the lock and
    temporary files): recorded in the manifest so that ``--overwrite`` deletes only these."""
    return sorted(p.name for p in out.iterdir()
                  if p.name not in BOOKKEEPING and not (p.name.startswith(".") and p.name.endswith(".tmp")))


def write_manifest(out: Path, name: str, config: Any, status: str, seed: int, **extra: Any) -> None:
    write_json(out / "manifest.json", {"format": RESULTS_FORMAT, "experiment": name, "status": status, "seed": seed,
                                       "config": dataclasses.asdict(config), "versions": versions(),
                                       "outputs": top_level_outputs(out), **extra})


def read_json(path: Path) -> Any:
    """The JSON in ``path``; a ValueError naming the file when it is not a readable JSON file (a folder, binary,
    truncated or absurdly nested content), FileNotFoundError when it is missing."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if not path.is_file():
        raise ValueError(f"{path} is not a regular file")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise ValueError(f"{path} is corrupted or truncated: {type(err).__name__}: {str(err)[:200]}") from None


def write_table(path: Path, rows: list[dict[str, Any]]) -> str:
    """Write rows as CSV (atomically) and return them as an aligned text table."""
    if not rows:
        raise ValueError("no rows to write")
    keys = list(rows[0])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, keys)
    writer.writeheader()
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: fh.write(buf.getvalue().encode()))
    return format_table(rows)


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of ``rows`` (floats to 4 significant digits)."""
    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "|".join("---" for _ in keys) + "|"]
    lines += ["| " + " | ".join(cell(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def sweep_folders(out: Path, prefix: str) -> list[Path]:
    """The unit folders ``out/<prefix><number>/`` of a sweep, in numeric order; a FileNotFoundError when none."""
    folders = sorted((p for p in out.glob(f"{prefix}*/") if _is_number(p.name[len(prefix):])),
                     key=lambda p: float(p.name[len(prefix):]))
    if not folders:
        raise FileNotFoundError(f"no {prefix}*/ folders in {out}")
    return folders


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_text(path: Path) -> str:
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    return path.read_text()


def read_table(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available here (torch.cuda.is_available() is False)")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be one of cpu, cuda; got {name!r}")
    return torch.device(name)


def save_figure(fig, figures: Path, stem: str) -> list[Path]:
    """Save ``fig`` as ``figures/stem.png`` and ``.pdf`` (atomically) and close it."""
    import matplotlib.pyplot as plt

    figures.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        final = figures / f"{stem}.{ext}"
        atomic_write(final, lambda fh, ext=ext: fig.savefig(
            fh, format=ext, metadata={"CreationDate": None} if ext == "pdf" else None))
        paths.append(final)
    plt.close(fig)
    return paths


def write_benchmark(out: Path, stem: str, header: str, rows: list[dict[str, Any]]) -> None:
    """Save a benchmark as ``stem.csv`` and ``stem.md`` (header line + Markdown table) in ``out``."""
    table = write_table(out / f"{stem}.csv", rows)
    atomic_write(out / f"{stem}.md", lambda fh: fh.write((header + "\n\n" + table + "\n").encode()))


def print_benchmark(out: Path, stem: str) -> list[Path]:
    """A benchmark's ``plot``: no figure, print the saved table."""
    print(read_text(out / f"{stem}.md"))
    return []
