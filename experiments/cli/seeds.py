"""Seeds as an axis: one experiment run per seed, and its tables summarised over the seeds.

``driftlab run NAME --seeds 0,1,2`` runs NAME once per seed into ``OUT/seed-N`` (each an ordinary results folder:
its own manifest, units and resume), records the plan in ``OUT/seeds.json``, and then summarises every table
(a top-level ``*.csv`` that every seed wrote) into ``OUT/NAME.csv``/``.md`` (with ``.seeds`` before the suffix):

* rows are matched by position; a column whose entries all parse as numbers is **numeric** and reported as
  ``mean ± sd`` (the sample standard deviation over the seeds, ddof = 1), or as the single value when every seed
  agrees; a non-finite entry (a diverged run) is left out of the mean and counted (``[2 of 3 finite]``);
* any other column is a **label**: its value when every seed agrees, else the distinct values joined by `` / ``
  (a ``status`` of ``complete / diverged``, say).

An experiment may define ``plot_seeds(folders, figures) -> list[Path]`` to draw the mean over seeds with a band
(:func:`analysis.plots.mean_band`); without it the gallery figure is drawn from the first seed and each seed's own
figures go to ``OUT/figures/seed-N``.
"""
from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from experiments.cli.common import (
    RESULTS_FORMAT,
    ConfigError,
    read_json,
    read_table,
    read_text,
    top_level_outputs,
    write_benchmark,
    write_json,
)

PLAN = "seeds.json"
MAX_SEEDS = 1000


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` (inclusive) or a mix (``"0-2,7"``) → the distinct seeds in order."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise ConfigError(f"--seeds: {part!r} is not a seed or a range (use e.g. 0,1,2 or 0-4)")
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        if high < low or high >= 2 ** 32:
            raise ConfigError(f"--seeds: {part!r} is not a range of seeds in [0, 2**32 - 1]")
        if high - low + len(seeds) >= MAX_SEEDS:
            raise ConfigError(f"--seeds: more than {MAX_SEEDS} seeds")
        seeds += [s for s in range(low, high + 1) if s not in seeds]
    if len(seeds) < 2:
        raise ConfigError(f"--seeds needs at least two seeds (use --seed for one), got {text!r}")
    return seeds


def seed_folder(out: Path, seed: int) -> Path:
    return out / f"seed-{seed}"


def write_plan(out: Path, name: str, seeds: list[int], overrides: list[str], device: str) -> None:
    write_json(out / PLAN, {"format": RESULTS_FORMAT, "experiment": name, "seeds": seeds, "overrides": overrides,
                            "device": device, "outputs": top_level_outputs(out)})


def record_outputs(out: Path) -> None:
    """Re-write the plan with every name the run over seeds has written into ``out`` (for ``--overwrite``)."""
    plan = read_plan(out)
    plan["outputs"] = top_level_outputs(out)
    write_json(out / PLAN, plan)


def read_plan(out: Path) -> dict[str, Any]:
    plan = read_json(out / PLAN)
    if not isinstance(plan, dict):
        raise ValueError(f"{out / PLAN} is not a driftlab seeds plan (a JSON {type(plan).__name__})")
    checks = {"experiment": lambda v: isinstance(v, str),
              "seeds": lambda v: isinstance(v, list) and bool(v) and all(
                  isinstance(s, int) and not isinstance(s, bool) for s in v),
              "overrides": lambda v: isinstance(v, list) and all(isinstance(o, str) for o in v)}
    for key, ok in checks.items():
        if (key in plan or key != "overrides") and not ok(plan.get(key)):
                raise ValueError(f"{out / PLAN} is not a driftlab seeds plan: field {key!r} is "
                                 f"{plan.get(key)!r}")
    return plan


def _number(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _format(value: float) -> str:
    return f"{value:.4g}"


MISSING = ("none", "", "n/a")  # a measurement that did not happen in this seed (no crossing, say)


def summarise_column(values: list[str]) -> str:
    """One cell over the seeds: ``mean ± sd`` for numbers, the common value, or the distinct labels. Entries
    that say a measurement did not happen (``none``) count as non-finite in a column of numbers."""
    numbers = [math.nan if v.strip().lower() in MISSING else _number(v) for v in values]
    if any(n is None for n in numbers) or all(v.strip().lower() in MISSING for v in values):
        distinct = list(dict.fromkeys(values))
        return distinct[0] if len(distinct) == 1 else " / ".join(distinct)
    finite = np.array([n for n in numbers if n is not None and math.isfinite(n)])
    if len(finite) == 0:
        return "nan"
    if np.all(finite == finite[0]) and len(finite) == len(values):
        return _format(float(finite[0]))
    text = _format(float(finite.mean()))
    if len(finite) > 1:
        text += f" ± {_format(float(finite.std(ddof=1)))}"
    if len(finite) < len(values):
        text += f" [{len(finite)} of {len(values)} finite]"
    return text


def summarise_tables(tables: list[list[dict[str, str]]], what: str) -> list[dict[str, str]]:
    """Row-by-row summary of one table written by every seed (same columns and row count, else a ValueError)."""
    first = tables[0]
    for i, table in enumerate(tables[1:], start=1):
        if len(table) != len(first) or (table and list(table[0]) != list(first[0])):
            raise ValueError(f"{what}: seed #{i} wrote {len(table)} rows with columns {list(table[0]) if table else []}"
                             f", seed #0 {len(first)} rows with {list(first[0]) if first else []}")
    rows = []
    for r, row in enumerate(first):
        rows.append({key: summarise_column([table[r][key] for table in tables]) for key in row})
        rows[-1]["seeds"] = str(len(tables))
    return rows


def summarise(out: Path, folders: list[Path]) -> list[Path]:
    """Summarise every top-level CSV that all ``folders`` hold into ``out/STEM.seeds.csv`` and ``.md``."""
    stems = sorted(set.intersection(*({p.stem for p in f.glob("*.csv")} for f in folders)))
    written = []
    for stem in stems:
        try:
            rows = summarise_tables([read_table(f / f"{stem}.csv") for f in folders], f"{stem}.csv")
        except ValueError as err:  # rows that do not line up across seeds: said, and the other tables go on
            print(f"driftlab: warning: {err}; not summarised over seeds", file=sys.stderr)
            continue
        if not rows:
            continue
        seeds = ", ".join(f.name.removeprefix("seed-") for f in folders)
        header = (f"{stem}: mean ± sample standard deviation over {len(folders)} seeds ({seeds}); "
                  "a single value where every seed agrees")
        write_benchmark(out, f"{stem}.seeds", header, rows)
        print(read_text(out / f"{stem}.seeds.md"))
        written.append(out / f"{stem}.seeds.csv")
    return written
