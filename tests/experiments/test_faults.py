"""Fault injection against the CLI: kills at random and aimed moments, signal storms, two runs on one folder,
damaged units, read-only and full folders, torchrun resume, and the bad inputs that must end in one line.

Every scenario ends in a state a researcher can trust: the manifest's status says what happened, every
unit it lists as finished is intact (or is recomputed on resume), no temporary file is left behind after
the next run, and a resumed run equals an uninterrupted one bit for bit.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flows import Trajectory

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EOS = ["lrs=0.2,0.1,0.05,0.02", "steps=40", "sharpness_every=10", "k=2", "gf_every=10", "n_train=100",
       "widths=64,16,10"]


def _sets(pairs: list[str]) -> list[str]:
    return [arg for pair in pairs for arg in ("--set", pair)]


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "experiments", *args]


def _start(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(_command(*args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kwargs)


def _run(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(_command(*args), cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})}, **kwargs)


def _eos(out: Path, figs: Path, *extra: str) -> list[str]:
    return ["run", "eos-digits", "--out", str(out), "--figures", str(figs), "--quiet", *_sets(EOS), *extra]


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _wait_until(predicate, timeout: float = 120.0, every: float = 0.01) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if predicate():
                return
        time.sleep(every)
    raise AssertionError("condition not reached in time")


def _completed_at_least(out: Path, n: int):
    return lambda: len(_manifest(out).get("completed", [])) >= n


def _results(out: Path) -> dict:
    """Everything a run computed, as comparable values (trajectory arrays, unit rows, the summary)."""
    found = {"summary": (out / "eos_summary.csv").read_text()}
    for path in sorted(out.rglob("*.npz")):
        traj = Trajectory.load(path)
        found[str(path.relative_to(out))] = (traj.times, {k: v for k, v in sorted(traj.metrics.items())})
    for path in sorted(out.glob("h*/row.json")):
        found[str(path.relative_to(out))] = json.loads(path.read_text())
    return found


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if key.endswith(".npz"):
            np.testing.assert_array_equal(a[key][0], b[key][0], err_msg=key)
            assert a[key][1].keys() == b[key][1].keys(), key
            for name in a[key][1]:
                np.testing.assert_array_equal(a[key][1][name], b[key][1][name], err_msg=f"{key}:{name}")
        else:
            assert a[key] == b[key], key


def _assert_trustworthy(out: Path) -> None:
    """Whatever the interrupt: a final status, every listed unit intact, no temporary files."""
    info = _manifest(out)
    assert info["status"] in ("interrupted", "complete", "running"), info["status"]
    for key in info["completed"]:
        assert key in info["files"] and info["files"][key], key
        for rel in info["files"][key]:
            assert (out / rel).is_file(), rel


def _litter(*folders: Path) -> list[Path]:
    return [p for f in folders if f.exists() for p in f.rglob("*.tmp")]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict:
    """The uninterrupted run every interrupted one is compared with."""
    base = tmp_path_factory.mktemp("straight")
    done = _run(*_eos(base / "out", base / "figs"))
    assert done.returncode == 0, done.stderr
    return _results(base / "out")


def test_kill9_at_random_moments_then_resume_equals_uninterrupted(tmp_path, straight):
    """SIGKILL (no handler can run) at random moments, resumed each time, until the run completes."""
    out, figs = tmp_path / "out", tmp_path / "figs"
    rng = random.Random(20261123)
    proc = _start(*_eos(out, figs))
    kills = 0
    for _ in range(4):
        _wait_until(lambda proc=proc: (out / "manifest.json").exists() or proc.poll() is not None)
        time.sleep(rng.uniform(0.0, 3.0))
        if proc.poll() is not None:
            break
        proc.kill()
        proc.communicate()
        kills += 1
        # SIGKILL: no handler runs, so the manifest says "running" (or "complete" when the kill hit the figures)
        assert _manifest(out)["status"] in ("running", "complete")
        _assert_trustworthy(out)
        proc = _start("run", "eos-digits", "--resume", str(out), "--figures", str(figs), "--quiet")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert kills >= 1
    assert _manifest(out)["status"] == "complete"
    assert not _litter(out, figs)
    _assert_same(_results(out), straight)


@pytest.mark.parametrize("signals", [(signal.SIGINT, signal.SIGINT), (signal.SIGTERM, signal.SIGINT),
                                     (signal.SIGHUP,), (signal.SIGTERM,) * 5])
def test_signal_storms_end_interrupted_with_every_finished_unit(tmp_path, straight, signals):
    """One or several signals milliseconds apart, right after a unit finished (when the manifest is written)."""
    out, figs = tmp_path / "out", tmp_path / "figs"
    proc = _start(*_eos(out, figs))
    _wait_until(_completed_at_least(out, 1), every=0.002)
    for sig in signals:
        proc.send_signal(sig)
        time.sleep(0.001)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err
    info = _manifest(out)
    assert info["status"] == "interrupted"
    assert 1 <= len(info["completed"]) < 4
    _assert_trustworthy(out)
    assert not _litter(out, figs)
    resumed = _run("run", "eos-digits", "--resume", str(out), "--figures", str(figs), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    _assert_same(_results(out), straight)


def test_the_program_ignores_stop_signals_once_its_run_is_over(tmp_path):
    """CPython resets Python signal handlers to SIG_DFL at exit, so a late SIGTERM of a storm used to kill a run that
    had already saved its work (status -15 instead of 130): in program mode the handlers end as SIG_IGN."""
    from experiments.cli.main import main

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        code = main(["run", "pf-quadratic", "--out", str(tmp_path / "o"), "--figures", str(tmp_path / "f"),
                     "--quiet", *_sets(["steps=2", "samples_per_step=2", "lrs=0.9"])], restore_signals=False)
        assert code == 0
        assert all(signal.getsignal(sig) == signal.SIG_IGN for sig in before)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_signal_while_drawing_figures_leaves_complete_results_and_no_temporary_file(tmp_path, capsys, monkeypatch):
    from experiments.cli import common
    from experiments.cli.main import main

    out, figs = tmp_path / "out", tmp_path / "figs"

    def interrupted_savefig(fig, fh, **kwargs):
        fh.write(b"partial")  # a signal lands mid-write
        raise KeyboardInterrupt

    import matplotlib.figure

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", interrupted_savefig)
    assert main(["run", "pf-quadratic", "--out", str(out), "--figures", str(figs), "--quiet",
                 *_sets(["steps=2", "samples_per_step=2", "lrs=0.9"])]) == 130
    err = capsys.readouterr().err
    assert "driftlab plot" in err and "Traceback" not in err
    assert _manifest(out)["status"] == "complete"
    assert not list(figs.iterdir())  # neither a 0-byte figure nor a temporary file
    monkeypatch.undo()
    assert main(["plot", str(out), "--figures", str(figs)]) == 0
    assert common.read_text  # the module stayed importable after the patch was undone


@pytest.mark.parametrize("name,settings", [
    ("bea-order", ["toys=cubic,saddle,sharp-valley", "points=8"]),
    ("bench-flows", ["widths=64,32,10", "n_train=300", "warmup_steps=2", "span_steps=40", "substeps=8", "ks=4"]),
])
def test_interrupt_during_computation_ends_interrupted_without_a_result(tmp_path, name, settings):
    """Ctrl-C inside an integration: status interrupted promptly, and no table row timing a cut-short run."""
    out, figs = tmp_path / "out", tmp_path / "figs"
    proc = _start("run", name, "--out", str(out), "--figures", str(figs), "--quiet", *_sets(settings))
    _wait_until(lambda: (out / "manifest.json").exists())
    time.sleep(2.0)  # inside the computation (imports and data are done by now)
    proc.send_signal(signal.SIGINT)
    start = time.time()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert time.time() - start < 20, "the interrupt was not honoured promptly"
    assert "Traceback" not in err
    assert _manifest(out)["status"] == "interrupted"
    assert not list(out.glob("*.csv")) and not list(out.glob("*.md"))


def test_two_runs_on_one_folder_and_reruns(tmp_path):
    out, figs = tmp_path / "out", tmp_path / "figs"
    first = _start(*_eos(out, figs))
    _wait_until(lambda: (out / "manifest.json").exists())
    second = _run(*_eos(out, figs))
    assert second.returncode == 2
    assert f"in use by another driftlab run (pid {first.pid}" in second.stderr
    assert second.stderr.count("\n") == 1
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err

    again = _run(*_eos(out, figs))
    assert again.returncode == 2 and "not empty" in again.stderr and "--overwrite" in again.stderr
    replaced = _run("run", "eos-digits", "--out", str(out), "--figures", str(figs), "--quiet", "--overwrite",
                    *_sets(EOS[1:] + ["lrs=0.3"]))
    assert replaced.returncode == 0, replaced.stderr
    assert sorted(p.name for p in out.glob("h*")) == ["h0.3"]  # no stale units for the plots to find
    assert _manifest(out)["completed"] == ["h0.3"]

    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "thesis.tex").write_text("precious")
    refused = _run(*_eos(stranger, figs, "--overwrite"))
    assert refused.returncode == 2 and "no driftlab manifest" in refused.stderr
    assert (stranger / "thesis.tex").read_text() == "precious"


def test_damaged_units_are_recomputed_on_resume(tmp_path, straight):
    out, figs = tmp_path / "out", tmp_path / "figs"
    assert _run(*_eos(out, figs)).returncode == 0
    gd = out / "h0.1" / "gd.npz"
    gd.write_bytes(gd.read_bytes()[:200])  # a truncated trajectory
    row = out / "h0.05" / "row.json"
    row.write_text("{")  # a damaged row
    (out / "h0.2" / "gf.json").unlink()  # a missing file
    (out / ".manifest.json.abc.tmp").write_text("litter of a kill -9")
    info = _manifest(out)
    info["status"] = "interrupted"
    (out / "manifest.json").write_text(json.dumps(info))

    resumed = _run("run", "eos-digits", "--resume", str(out), "--figures", str(figs), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    for key in ("h0.1", "h0.05", "h0.2"):
        assert f"finished unit {key} is damaged" in resumed.stderr
    assert "h0.02 is damaged" not in resumed.stderr
    assert not _litter(out)
    _assert_same(_results(out), straight)


def _mount_tmpfs(path: Path, size: str, *options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs", str(path)],
                          capture_output=True)
    return done.returncode == 0


@contextlib.contextmanager
def _read_only_folder(path: Path):
    """A folder this process cannot write: a read-only tmpfs as root, mode 0o555 otherwise."""
    if os.geteuid() == 0:
        if not _mount_tmpfs(path, "1m", "ro"):
            pytest.skip("running as root and cannot mount a read-only tmpfs")
        try:
            yield path
        finally:
            subprocess.run(["umount", str(path)], check=False)
    else:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)


@pytest.mark.parametrize("which", ["--out", "--figures"])
def test_read_only_folders_are_refused_before_computing(tmp_path, which):
    with _read_only_folder(tmp_path / "ro") as ro:
        out = ro / "out" if which == "--out" else tmp_path / "out"
        figs = ro / "figs" if which == "--figures" else tmp_path / "figs"
        start = time.time()
        done = _run(*_eos(out, figs))
        assert done.returncode == 2, done.stderr
        assert "not writable" in done.stderr and done.stderr.count("\n") == 1
        assert time.time() - start < 30
        assert not (tmp_path / "out" / "h0.2").exists()  # refused before computing anything


def test_out_naming_a_file_is_one_line(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    done = _run(*_eos(target, tmp_path / "figs"))
    assert done.returncode == 2 and "is a file, not a folder" in done.stderr and done.stderr.count("\n") == 1


def _file_size_limit(limit: int):
    def apply() -> None:  # writes past `limit` bytes fail with EFBIG instead of killing the process
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_full_disk_is_one_line_and_loses_nothing(tmp_path):
    """A tmpfs too small for the results where one can be mounted, else a file-size limit (EFBIG)."""
    out, figs = tmp_path / "small", tmp_path / "figs"
    mounted = _mount_tmpfs(out, "48k")
    try:
        done = subprocess.run(_command(*_eos(out, figs)), cwd=ROOT, capture_output=True, text=True, timeout=300,
                              preexec_fn=None if mounted else _file_size_limit(3000))
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
        assert "No space left" in done.stderr or "File too large" in done.stderr
        info = _manifest(out)
        assert info["status"] in ("failed", "running")  # "running" only when even the status did not fit
        _assert_trustworthy(out)
        assert not _litter(out)
    finally:
        if mounted:
            subprocess.run(["umount", str(out)], check=False)


@pytest.mark.parametrize("args,env,message", [
    (["--set", "widths=5,3"], {}, "widths must start with 64"),
    (["--set", "widths=64,-2,10"], {}, "widths must start with 64"),
    (["--seed", str(10 ** 25)], {}, "--seed: must be an integer in [0, 2**32 - 1]"),
    (["--seed", "-1"], {}, "--seed: must be an integer"),
    (["--set", "lrs=nan"], {}, "lrs=nan"),
    (["--set", "steps=1000000000"], {}, "GiB"),
    ([], {"DRIFTLAB_DIST_TIMEOUT": "abc"}, "DRIFTLAB_DIST_TIMEOUT"),
    ([], {"DRIFTLAB_DIST_TIMEOUT": "nan"}, "DRIFTLAB_DIST_TIMEOUT"),
    ([], {"DRIFTLAB_DIST_TIMEOUT": "0"}, "DRIFTLAB_DIST_TIMEOUT"),
    ([], {"DRIFTLAB_DIST_TIMEOUT": "-5"}, "DRIFTLAB_DIST_TIMEOUT"),
])
def test_bad_input_is_one_line(tmp_path, args, env, message, capsys, monkeypatch):
    from experiments.cli.main import main

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = [s for s in EOS if not any(a.startswith(s.split("=")[0] + "=") for a in args)]
    code = main(["run", "eos-digits", "--out", str(tmp_path / "o"), "--figures", str(tmp_path / "f"), "--quiet",
                 *_sets(settings), *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and err.count("\n") == 1, err


@pytest.mark.parametrize("name,setting,message", [
    ("corridors", "toy_start=nan,0", "toy_start=nan,0"),
    ("corridors", "toy_start=inf,0", "--set toy_start=inf,0: expected comma-separated finite floats"),
    ("pf-quadratic", "samples_per_step=100000000", "GiB"),
    ("pf-toys", "step_scale=1e9", "GiB"),
])
def test_bad_settings_of_other_experiments_are_one_line(tmp_path, name, setting, message, capsys):
    from experiments.cli.main import main

    code = main(["run", name, "--out", str(tmp_path / "o"), "--figures", str(tmp_path / "f"), "--quiet",
                 "--set", setting])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and err.count("\n") == 1, err


@pytest.mark.parametrize("damage", ["list", "no config", "no seed", "completed not a list", "config not a dict"])
def test_manifests_of_the_wrong_shape_are_one_line(tmp_path, damage, capsys):
    from experiments.cli.main import main

    out = tmp_path / "o"
    assert main(["run", "pf-quadratic", "--out", str(out), "--figures", str(tmp_path / "f"), "--quiet",
                 *_sets(["steps=2", "samples_per_step=2", "lrs=0.9"])]) == 0
    info = _manifest(out)
    if damage == "list":
        info = [info]
    elif damage == "no config":
        del info["config"]
    elif damage == "no seed":
        del info["seed"]
    elif damage == "completed not a list":
        info["completed"] = "h0.9"
    else:
        info["config"] = [1, 2]
    (out / "manifest.json").write_text(json.dumps(info))
    capsys.readouterr()
    assert main(["run", "pf-quadratic", "--resume", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "not a driftlab manifest" in err and err.count("\n") == 1, err
    if damage in ("list", "completed not a list", "config not a dict"):
        assert main(["plot", str(out), "--figures", str(tmp_path / "f")]) == 2
        err = capsys.readouterr().err
        assert "not a driftlab manifest" in err and err.count("\n") == 1, err


def test_seed_with_resume_is_refused(tmp_path, capsys):
    from experiments.cli.main import main

    out = tmp_path / "o"
    assert main(["run", "pf-quadratic", "--out", str(out), "--figures", str(tmp_path / "f"), "--quiet", "--seed", "3",
                 *_sets(["steps=2", "samples_per_step=2", "lrs=0.9"])]) == 0
    capsys.readouterr()
    assert main(["run", "pf-quadratic", "--resume", str(out), "--seed", "4"]) == 2
    assert "drop --set, --out, --seed" in capsys.readouterr().err
    assert _manifest(out)["seed"] == 3


def test_resume_under_torchrun_with_the_same_launch_command(tmp_path):
    """Ranks ≥ 1 compute in scratch folders; on resume they must find the finished units there too."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this python")
    out, figs = tmp_path / "out", tmp_path / "figs"
    base = [str(torchrun), "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m", "experiments"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run([*base, *_eos(out, figs)[:-len(_sets(EOS))], *_sets(["lrs=0.2,0.1"] + EOS[1:])],
                           cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert first.returncode == 0, first.stderr
    expected = _results(out)
    info = _manifest(out)  # as if stopped after the first unit: the second is computed again on resume
    assert info["completed"] == ["h0.2", "h0.1"]
    info["completed"], info["status"] = ["h0.2"], "interrupted"
    del info["files"]["h0.1"]
    (out / "manifest.json").write_text(json.dumps(info))
    (out / "h0.1" / "gd.npz").unlink()
    resumed = subprocess.run([*base, "run", "eos-digits", "--resume", str(out), "--figures", str(figs), "--quiet"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert _manifest(out)["status"] == "complete"
    _assert_same(_results(out), expected)


def _free_port() -> int:
    from experiments.benchmarks.scaling import _free_port as free

    return free()
