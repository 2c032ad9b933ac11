"""Benchmarks pin torch and every BLAS/OpenMP pool to one count, and say so in their tables."""
import re

import pytest
import torch
from threadpoolctl import threadpool_info

from experiments.cli.main import main
from experiments.cli.threads import pinned_threads


def test_pinned_threads_reaches_every_pool_and_restores_torch():
    before = torch.get_num_threads()
    with pinned_threads(1) as text:
        assert torch.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
        assert "torch 1 intra-op" in text
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be an int ≥ 0"), pinned_threads(-1):
        pass


@pytest.mark.parametrize("name,settings", [
    ("bench-hvp", ["rounds=3", "widths=64,16,10", "n_train=100", "threads=1"]),
    ("bench-spectrum", ["widths=64,16,10", "n_train=100", "k=2", "warmup_steps=3", "track_steps=2",
                        "power_max_iter=10", "threads=1"]),
])
def test_benchmark_tables_print_every_thread_setting(tmp_path, name, settings, capsys):
    out = tmp_path / "out"
    args = ["run", name, "--out", str(out), "--figures", str(tmp_path / "f"), "--quiet"]
    for pair in settings:
        args += ["--set", pair]
    assert main(args) == 0
    header = next(out.glob("*.md")).read_text().splitlines()[0]
    assert "torch 1 intra-op" in header
    pools = re.findall(r"\(([^)]*)\) (\d+)", header.split("threads:")[1])
    assert pools and all(count == "1" for _, count in pools), header
