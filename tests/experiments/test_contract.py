"""The experiment contract: a documented Config field for every setting, `driftlab list` without importing
experiments, `driftlab show` with types, defaults and help, the runtime a run records."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.cli import registry
from experiments.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", registry.names())
def test_every_config_field_has_a_docstring(name):
    config_class = registry.get(name).Config
    documented = registry.field_help(config_class)
    fields = [f.name for f in dataclasses.fields(config_class)]
    missing = [f for f in fields if not documented.get(f) or documented[f] == "TODO"]
    assert not missing, f"{name}: undocumented fields {missing}"


def test_list_imports_no_experiment_module():
    code = ("import sys; from experiments.cli.main import main; main(['list']); "
            "print('LOADED', sorted(m for m in sys.modules if m.startswith('experiments.') and "
            "not m.startswith('experiments.cli')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "LOADED []"
    rows = done.stdout.strip().splitlines()[:-1]
    assert len(rows) == len(registry.names())
    width = max(map(len, registry.names()))  # the descriptions start in one column
    assert all(row[width:width + 2] == "  " and row[width + 2] != " " for row in rows), rows


def test_show_prints_every_field_with_type_default_and_help(capsys):
    assert main(["show", "eos-adam"]) == 0
    out = capsys.readouterr().out
    config = registry.get("eos-adam").Config()
    for f in dataclasses.fields(config):
        assert f"  {f.name}: " in out
    assert "beta1: float = 0.9" in out and "Adam's β₁" in out
    assert "runtime of the defaults: 36 s" in out
    assert main(["show", "no-such-experiment"]) == 2
    assert "valid choices" in capsys.readouterr().err


def test_a_run_records_its_time_and_show_reports_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results" / "pf-quadratic"
    assert main(["run", "pf-quadratic", "--set", "steps=2", "--set", "lrs=0.5", "--out", str(out), "--quiet",
                 "--figures", str(tmp_path / "figures")]) == 0
    seconds = json.loads((out / "manifest.json").read_text())["seconds"]
    assert 0 < seconds < 600
    shown = "\n".join(registry.describe("pf-quadratic"))
    assert f"last local run: {seconds} s" in shown and "(changed config)" in shown
