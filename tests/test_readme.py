"""The README's Python example runs as written."""
import re
from pathlib import Path


def test_readme_example_runs(capsys):
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    exec(compile(blocks[0], "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "PF drift" in out and "top eigenvalues" in out
    pf_drift = float(re.search(r"PF drift (\S+),", out).group(1))
    gf_drift = float(re.search(r"GF drift (\S+)", out).group(1))
    assert pf_drift < 1e-5 < gf_drift


def test_readme_network_example_runs(capsys):
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 2, "README has no network example"
    exec(compile(blocks[1], "README.md", "exec"), {})
    out = capsys.readouterr().out
    for name in ("gf", "pf_topk"):
        line = re.search(rf"^{name}: (\w+), rk4 step (\S+), (\d+) field evaluations", out, flags=re.M)
        assert line and line.group(1) == "complete", out
        assert int(line.group(3)) <= 4 * 10 * round(0.1 / float(line.group(2)) + 0.5)


def test_readme_hessian_kit_example_runs(capsys):
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 3, "README has no Hessian-kit example"
    exec(compile(blocks[2], "README.md", "exec"), {})
    out = capsys.readouterr().out
    hutch, error, slq = (float(v) for v in re.search(r"tr H: (\S+) ± (\S+) \(Hutch\+\+\), (\S+) \(SLQ\)", out).groups())
    assert abs(hutch - slq) < 0.25 * hutch  # two independent estimates of one trace
    hessian, ggn, layer = (float(v) for v in re.search(r"Hessian (\S+), Gauss–Newton (\S+), first layer alone (\S+)",
                                                         out).groups())
    assert 0 < layer <= hessian * (1 + 1e-3) and ggn > 0
    assert "plane (11, 11)" in out
