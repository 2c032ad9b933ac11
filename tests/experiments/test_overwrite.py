"""--overwrite deletes only what driftlab wrote: another tool's manifest.json or seeds.json, an empty one, or a
genuine manifest copied beside a user's files never costs the user a file; --out '' is refused; a refused run
leaves no lock behind."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from experiments.cli.common import LOCK_NAME
from experiments.cli.main import main


def _run(*args: str) -> int:
    return main(["run", *args, "--set", "lrs=0.5", "--set", "steps=3", "--set", "flows=gf"], restore_signals=True)


def _user_files(folder: Path) -> None:
    (folder / "src").mkdir(parents=True)
    (folder / "important.txt").write_text("precious")
    (folder / "src" / "main.js").write_text("console.log(1)")


def _intact(folder: Path) -> bool:
    return ((folder / "important.txt").read_text() == "precious"
            and (folder / "src" / "main.js").read_text() == "console.log(1)")


@pytest.fixture(scope="module")
def genuine(tmp_path_factory) -> Path:
    """A real, complete driftlab results folder (pf-quadratic, seconds)."""
    out = tmp_path_factory.mktemp("genuine") / "out"
    assert _run("pf-quadratic", "--out", str(out), "--figures", str(out.parent / "figs"), "--quiet") == 0
    return out


@pytest.mark.parametrize("manifest", ['{"name": "my-web-app", "version": "1.0.0"}', "", "[]", "null"])
def test_another_tools_manifest_is_not_trusted(tmp_path, capsys, manifest):
    out = tmp_path / "app"
    _user_files(out)
    (out / "manifest.json").write_text(manifest)
    assert _run("pf-quadratic", "--out", str(out), "--figures", str(tmp_path / "f"), "--quiet", "--overwrite") == 2
    assert "is not a driftlab manifest" in capsys.readouterr().err
    assert _intact(out) and (out / "manifest.json").read_text() == manifest
    assert not (out / LOCK_NAME).exists()  # a refused run leaves no lock


def test_a_genuine_manifest_beside_user_files_deletes_nothing(tmp_path, capsys, genuine):
    out = tmp_path / "mixed"
    _user_files(out)
    shutil.copy(genuine / "manifest.json", out / "manifest.json")
    assert _run("pf-quadratic", "--out", str(out), "--figures", str(tmp_path / "f"), "--quiet", "--overwrite") == 2
    err = capsys.readouterr().err
    assert "holds 'important.txt' (and 1 more), which the driftlab run recorded in manifest.json did not write" in err
    assert _intact(out)


def test_a_genuine_folder_is_replaced_and_only_its_outputs_go(tmp_path, genuine):
    out = tmp_path / "again"
    shutil.copytree(genuine, out)
    recorded = json.loads((out / "manifest.json").read_text())
    assert recorded["format"] == 1 and recorded["outputs"]  # what the run wrote is on record
    assert _run("pf-quadratic", "--out", str(out), "--figures", str(tmp_path / "f"), "--quiet", "--overwrite") == 0
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


def test_another_tools_seeds_json_is_not_trusted(tmp_path, capsys):
    out = tmp_path / "seeded"
    _user_files(out)
    (out / "seeds.json").write_text('{"seeds": [1, 2], "purpose": "garden"}')
    assert _run("pf-quadratic", "--out", str(out), "--figures", str(tmp_path / "f"), "--quiet", "--seeds", "0,1",
                "--overwrite") == 2
    assert "is not a driftlab plan" in capsys.readouterr().err
    assert _intact(out) and not (out / LOCK_NAME).exists()


def test_an_empty_out_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _user_files(tmp_path)
    (tmp_path / "manifest.json").write_text("{}")
    assert _run("pf-quadratic", "--out", "", "--quiet", "--overwrite") == 2
    assert "must name a folder" in capsys.readouterr().err
    assert _intact(tmp_path) and not (tmp_path / LOCK_NAME).exists()


def test_a_refused_fresh_run_leaves_no_lock(tmp_path, capsys):
    out = tmp_path / "full"
    _user_files(out)
    assert _run("pf-quadratic", "--out", str(out), "--figures", str(tmp_path / "f"), "--quiet") == 2
    assert "not empty" in capsys.readouterr().err
    assert not (out / LOCK_NAME).exists() and _intact(out)


DAMAGED_PLANS = ["[[[[" * 50_000 + "]]]]" * 50_000, b"\xff\xfe\x00", '{"seeds": "0,1"}',
                 '{"experiment": 3, "seeds": [0]}', '{"experiment": "x", "seeds": [true]}']


@pytest.mark.parametrize("content", DAMAGED_PLANS)
def test_damaged_seeds_plans_are_named(tmp_path, content):
    from experiments.cli.seeds import read_plan

    path = tmp_path / "seeds.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError, match="seeds.json"):
        read_plan(tmp_path)


def test_a_folder_in_place_of_a_manifest_is_named(tmp_path):
    from experiments.cli.common import read_json

    (tmp_path / "manifest.json").mkdir()
    with pytest.raises(ValueError, match="not a regular file"):
        read_json(tmp_path / "manifest.json")
