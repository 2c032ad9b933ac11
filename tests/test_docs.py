"""Every Python block in the README and in docs/ runs as written; the blocks whose output is a claim are checked."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [(page, i, code) for page in PAGES
          for i, code in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S))]


def _check_first_example(out: str) -> None:
    assert "PF drift" in out and "top eigenvalues" in out
    pf_drift = float(re.search(r"PF drift (\S+),", out).group(1))
    gf_drift = float(re.search(r"GF drift (\S+)", out).group(1))
    assert pf_drift < 1e-5 < gf_drift


def _check_network_flows(out: str) -> None:
    for name in ("gf", "pf_topk"):
        line = re.search(rf"^{name}: (\w+), rk4 step (\S+), (\d+) field evaluations", out, flags=re.M)
        assert line and line.group(1) == "complete", out
        assert int(line.group(3)) <= 4 * 10 * round(0.1 / float(line.group(2)) + 0.5)


def _check_hessian_kit(out: str) -> None:
    found = re.search(r"tr H: (\S+) ± (\S+) \(hutch\+\+, \d+ products, \d+ probes\); "
                      r"SLQ (\S+) ± (\S+) \(4 probes\)", out)
    hutch, hutch_se, slq, slq_se = (float(v) for v in found.groups())
    assert abs(hutch - slq) <= 4 * (hutch_se ** 2 + slq_se ** 2) ** 0.5  # two independent estimates of one trace
    hessian, ggn, layer = (float(v) for v in re.search(r"Hessian (\S+), Gauss–Newton (\S+), first layer alone (\S+)",
                                                         out).groups())
    assert 0 < layer <= hessian * (1 + 1e-3) and ggn > 0
    assert "plane (11, 11)" in out


def _check_symmetrized_quartic(out: str) -> None:
    magnitude, gd, closed, secant = (float(v) for v in re.search(
        r"magnitude (\S+), GD's \|x\| (\S+), closed form (\S+), ηλ̃ (\S+)", out).groups())
    assert magnitude == closed == gd and secant == 2.0  # to the six digits printed


CHECKS = {("README.md", 0): _check_first_example, ("semantics.md", 0): _check_network_flows,
          ("reference.md", 0): _check_hessian_kit, ("symmetrized.md", 0): _check_symmetrized_quartic}


def test_every_claimed_block_exists():
    found = {(page.name, i) for page, i, _ in BLOCKS}
    assert set(CHECKS) <= found, set(CHECKS) - found


@pytest.mark.parametrize("page,index,code", BLOCKS, ids=[f"{p.name}-{i}" for p, i, _ in BLOCKS])
def test_python_block_runs_as_written(page, index, code, capsys):
    exec(compile(code, str(page.relative_to(ROOT)), "exec"), {})
    out = capsys.readouterr().out
    check = CHECKS.get((page.name, index))
    if check is not None:
        check(out)
