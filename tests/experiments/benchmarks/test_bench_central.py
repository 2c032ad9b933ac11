"""`driftlab run bench-central`: its rows, the accuracy columns against the tight run, and its refusals."""
import pytest
import torch
from torch import nn

from experiments.benchmarks import central
from experiments.cli import registry
from experiments.cli.common import write_benchmark
from flows import Objective
from tests.models import teacher_student

BUILT: list[tuple[str, str]] = []


def _small_regressor(model: str, hvp_method: str = "double_backward", batching: str = "auto") -> Objective:
    """A SiLU MLP with a 3-output head (D = 435: Lanczos tracking) standing in for the benchmark's models."""
    BUILT.append((hvp_method, batching))
    torch.manual_seed(0)
    x, y = teacher_student(n=64, d_in=6, d_out=3, width=8)
    net = nn.Sequential(nn.Linear(6, 16), nn.SiLU(), nn.Linear(16, 16), nn.SiLU(), nn.Linear(16, 3)).double()
    return Objective.from_module(net, lambda out, t: 0.5 * ((out - t) ** 2).sum(1).mean(), (x, y), name="silu",
                                 hvp_method=hvp_method, batching=batching)


def test_rows_compare_each_run_with_gd_and_with_the_tight_run(monkeypatch, tmp_path):
    monkeypatch.setattr(central, "objective", _small_regressor)
    BUILT.clear()
    rows, line = central.measure(central.Config(steps=3, variants=("before", "now", "reference"), rate=2.2))
    assert BUILT == [("double_backward", "auto"), ("double_backward", "vmap")]  # before/reference: batched blocks
    assert "bench-central" in registry.names()
    assert "D = 435" in line and "float64" in line
    names = [row["run"] for row in rows]
    assert names[:4] == ["GD", "central flow, before", "central flow, now", "central flow, reference"]
    assert names[4].startswith("floor")
    before, now, reference = rows[1:4]
    assert now["max critical"] >= 1  # above the edge from θ₀: the SDCP and the pair vectors run
    assert now["eigen HVPs per step"] < before["eigen HVPs per step"] < reference["eigen HVPs per step"]
    assert now["vs before: critical"] == 0 and float(now["vs before: predicted loss"]) < 1e-2
    assert float(before["vs reference: hλ₁"]) < 1e-4  # the tight run is right to its tolerance
    assert before["vs before: predicted loss"] == "" and reference["vs reference: hλ₁"] == ""
    assert rows[0]["x GD"] == 1.0 and now["x GD"] > 1
    write_benchmark(tmp_path, "bench_central_silu", line, rows)  # every row under one header
    assert (tmp_path / "bench_central_silu.md").read_text().count("central flow,") == 3


def test_the_unseen_model_is_the_40_32_32_10_mlp_on_mnist1d():
    obj = central.objective("mnist1d")
    assert obj.dim == 40 * 32 + 32 + 32 * 32 + 32 + 32 * 10 + 10 and obj.theta0.dtype == torch.float64


@pytest.mark.parametrize("field, value, match", [("model", "cifar", "model must be one of"),
                                                 ("variants", ("fast",), "variants must be"),
                                                 ("steps", 0, "steps")])
def test_bad_settings_are_refused(field, value, match):
    config = central.Config(**{field: value})
    with pytest.raises(ValueError, match=match):
        config.validate()
