"""The tutorials in docs/tutorials run as written (small step counts), in a scratch folder, and leave their files.

They are jupytext percent scripts (``make tutorials`` turns them into executed notebooks); here each runs as a
plain script in a subprocess, as a new user would run it, with ``DRIFTLAB_TUTORIAL_STEPS`` small.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = {
    "eos_your_model": (12, ["eos_your_model.pdf", "eos_run.npz", "eos_report.json"]),
    "central_flow_new_problem": (6, ["central_flow_new_problem.png", "central.npz", "gd.npz"]),
    "hessian_kit_cnn": (4, ["density.png", "plane.png", "pairs.npz"]),
    "controllers_torch_loop": (5, []),
}


def test_every_tutorial_is_listed_and_in_percent_format():
    found = {p.stem for p in (ROOT / "docs" / "tutorials").glob("*.py")}
    assert found == set(TUTORIALS)
    for name in found:
        text = (ROOT / "docs" / "tutorials" / f"{name}.py").read_text()
        assert "format_name: percent" in text and "# %% [markdown]" in text


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TUTORIALS))
def test_tutorial_runs_as_written(name, tmp_path):
    steps, outputs = TUTORIALS[name]
    env = {**os.environ, "DRIFTLAB_TUTORIAL_STEPS": str(steps), "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run([sys.executable, str(ROOT / "docs" / "tutorials" / f"{name}.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    for output in outputs:
        assert (tmp_path / output).is_file(), f"{name} did not write {output}"
