"""A run killed with SIGTERM keeps intact files, is marked interrupted, and resumes to the uninterrupted result."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flows import Trajectory

pytestmark = pytest.mark.slow

SETTINGS = ["steps=120", "n_train=300", "widths=64,32,10", "sharpness_every=20", "eval_every=20",
            "methods=constant:0.1,dal:1,pal,wngrad:1", "minibatch_methods=constant:0.1,pal", "epochs=3",
            "toy_steps=5"]
ROOT = Path(__file__).resolve().parents[2]


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "experiments", *args]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(_command(*args), cwd=ROOT, capture_output=True, text=True, timeout=600)


def _settings() -> list[str]:
    out = []
    for s in SETTINGS:
        out += ["--set", s]
    return out


def _summary(folder: Path) -> list[dict]:
    with open(folder / "summary.csv") as fh:
        return [{k: v for k, v in row.items() if k != "ms/step"} for row in csv.DictReader(fh)]


def test_sigterm_then_resume_equals_uninterrupted(tmp_path):
    killed, straight, figs = tmp_path / "killed", tmp_path / "straight", tmp_path / "figs"
    proc = subprocess.Popen(_command("run", "controllers-digits", "--out", str(killed), "--figures", str(figs),
                                     "--quiet", *_settings()), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    manifest = killed / "manifest.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        if manifest.exists():
            try:
                if json.loads(manifest.read_text()).get("completed"):
                    break
            except json.JSONDecodeError:  # pragma: no cover - atomic writes make this impossible
                raise
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    info = json.loads(manifest.read_text())
    assert info["status"] == "interrupted" and "--resume" in err
    assert 1 <= len(info["completed"]) < 7
    assert all(key in info["seeds"] for key in info["completed"])
    for path in killed.rglob("*"):  # nothing truncated: every file reads back
        assert not path.name.endswith(".tmp"), path
        if path.suffix == ".npz":
            Trajectory.load(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())

    resumed = _run(["run", "controllers-digits", "--resume", str(killed), "--figures", str(figs), "--quiet"])
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(manifest.read_text())["status"] == "complete"
    done = _run(["run", "controllers-digits", "--out", str(straight), "--figures", str(figs), "--quiet",
                 *_settings()])
    assert done.returncode == 0, done.stderr

    assert _summary(killed) == _summary(straight)
    for path in sorted((straight / "fullbatch").glob("*.npz")):
        a, b = Trajectory.load(path), Trajectory.load(killed / "fullbatch" / path.name)
        np.testing.assert_array_equal(a.times, b.times)
        assert set(a.metrics) == set(b.metrics)
        for key in a.metrics:
            np.testing.assert_array_equal(a.metrics[key], b.metrics[key])
    mb_a = json.loads((straight / "minibatch.json").read_text())
    mb_b = json.loads((killed / "minibatch.json").read_text())
    for spec in mb_a:
        for key in ("train_loss", "test_acc", "lr", "evaluations"):
            assert mb_a[spec][key] == mb_b[spec][key]
    assert json.loads((straight / "manifest.json").read_text())["seeds"] == json.loads(manifest.read_text())["seeds"]


def test_resume_refuses_mismatches(tmp_path, capsys):
    from experiments.cli.main import main

    out = tmp_path / "o"
    assert main(["run", "bea-order", "--out", str(out), "--figures", str(tmp_path / "f"), "--quiet",
                 "--set", "toys=cubic", "--set", "points=2", "--set", "flows=gf"]) == 0
    capsys.readouterr()
    assert main(["run", "pf-toys", "--resume", str(out)]) == 2
    assert "holds a 'bea-order' run" in capsys.readouterr().err
    assert main(["run", "bea-order", "--resume", str(out), "--set", "points=3"]) == 2
    assert "drop --set" in capsys.readouterr().err
    assert main(["run", "bea-order", "--resume", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_plot_names_a_truncated_results_file(tmp_path, capsys):
    from experiments.cli.main import main

    out = tmp_path / "o"
    assert main(["run", "pf-toys", "--out", str(out), "--figures", str(tmp_path / "f"), "--quiet",
                 "--set", "cases=saddle-escape", "--set", "step_scale=0.1", "--set", "flows=gf"]) == 0
    capsys.readouterr()
    victim = out / "saddle-escape" / "gf.npz"
    victim.write_bytes(victim.read_bytes()[:100])
    assert main(["plot", str(out), "--figures", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert str(victim) in err and "\n" not in err.strip()
