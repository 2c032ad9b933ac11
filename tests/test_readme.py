"""The README's Python example runs as written."""
import re
from pathlib import Path


def _run_block(index: int, what: str, capsys) -> str:
    """Run the README's python block number ``index`` as written and return what it printed."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) > index, f"README has no {what}"
    exec(compile(blocks[index], "README.md", "exec"), {})
    return capsys.readouterr().out


def test_readme_example_runs(capsys):
    out = _run_block(0, "python example", capsys)
    assert "PF drift" in out and "top eigenvalues" in out
    pf_drift = float(re.search(r"PF drift (\S+),", out).group(1))
    gf_drift = float(re.search(r"GF drift (\S+)", out).group(1))
    assert pf_drift < 1e-5 < gf_drift


def test_readme_network_example_runs(capsys):
    out = _run_block(1, "network example", capsys)
    for name in ("gf", "pf_topk"):
        line = re.search(rf"^{name}: (\w+), rk4 step (\S+), (\d+) field evaluations", out, flags=re.M)
        assert line and line.group(1) == "complete", out
        assert int(line.group(3)) <= 4 * 10 * round(0.1 / float(line.group(2)) + 0.5)


def test_readme_hessian_kit_example_runs(capsys):
    out = _run_block(2, "Hessian-kit example", capsys)
    found = re.search(r"tr H: (\S+) ± (\S+) \(hutch\+\+, \d+ products, \d+ probes\); "
                      r"SLQ (\S+) ± (\S+) \(4 probes\)", out)
    hutch, hutch_se, slq, slq_se = (float(v) for v in found.groups())
    assert abs(hutch - slq) <= 4 * (hutch_se ** 2 + slq_se ** 2) ** 0.5  # two independent estimates of one trace
    hessian, ggn, layer = (float(v) for v in re.search(r"Hessian (\S+), Gauss–Newton (\S+), first layer alone (\S+)",
                                                         out).groups())
    assert 0 < layer <= hessian * (1 + 1e-3) and ggn > 0
    assert "plane (11, 11)" in out
