"""`make bench-gpu` stays ready on machines without a GPU: its plan, and a clear refusal without CUDA."""
import subprocess
import sys

import pytest
import torch

from experiments.benchmarks import gpu_report
from experiments.cli import registry


def test_plan_runs_the_cuda_tests_and_registered_benchmarks(capsys, tmp_path):
    assert gpu_report.main(["--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("cuda-tests:") and "tests/flows/curvature/test_device.py" in out[0]
    for name in gpu_report.BENCHES:
        assert name in registry.names()
        assert any(line.startswith(f"{name}:") and "--device cuda" in line for line in out)


def test_the_module_entry_point_parses(tmp_path):
    done = subprocess.run([sys.executable, "-m", "experiments.benchmarks.gpu_report", "--dry-run"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "bench-flows:" in done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_without_cuda_it_refuses_and_names_the_check(tmp_path):
    with pytest.raises(SystemExit, match="torch.cuda.is_available"):
        gpu_report.main(["--out", str(tmp_path / "o"), "--report", str(tmp_path / "r.md")])
    assert not (tmp_path / "r.md").exists()
