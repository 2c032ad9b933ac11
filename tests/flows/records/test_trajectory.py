"""Trajectory persistence: lossless round trips, damaged files named, file permissions."""
import json
import math

import numpy as np
import pytest
import torch

from analysis import Sharpness
from flows import Trajectory, TrajectoryFileError, gradient_descent, integrate
from flows.objective import toys


def test_save_load_round_trip_is_lossless(tmp_path):
    obj = toys.get("pf-quadratic")
    gd = gradient_descent(obj, lr=0.5, steps=5, callbacks=[Sharpness(every=2)])
    pf = integrate(obj, flow="pf", lr=1.05, steps=3)
    for traj, name in ((gd, "gd"), (pf, "pf")):
        traj.events.append({"kind": "note", "step": 1, "time": 0.5})
        traj.save(tmp_path / name)
        back = Trajectory.load(tmp_path / f"{name}.npz")
        np.testing.assert_array_equal(back.times, traj.times)
        np.testing.assert_array_equal(back.states, traj.states)
        assert back.states.dtype == traj.states.dtype
        assert set(back.metrics) == set(traj.metrics)
        for key in traj.metrics:
            np.testing.assert_array_equal(back.metrics[key], traj.metrics[key])
        assert back.events == traj.events and back.config == traj.config and back.status == traj.status
    meta = json.loads((tmp_path / "gd.json").read_text())
    assert meta["versions"]["torch"] == torch.__version__
    sharp = gd.metric("sharpness")
    assert math.isclose(sharp[0], 2.0, rel_tol=1e-6) and math.isnan(sharp[1])


def test_dotted_names_are_not_suffixes(tmp_path):
    obj = toys.get("pf-quadratic")
    a = gradient_descent(obj, lr=0.02, steps=2)
    b = gradient_descent(obj, lr=0.2, steps=2)
    pa, pb = a.save(tmp_path / "lr_0.02"), b.save(tmp_path / "lr_0.2")
    assert pa.name == "lr_0.02.npz" and pb.name == "lr_0.2.npz"
    assert Trajectory.load(tmp_path / "lr_0.02").config["lr"] == 0.02
    assert Trajectory.load(pb).config["lr"] == 0.2


def test_projection_and_no_states(tmp_path):
    obj = toys.get("cubic")
    full = gradient_descent(obj, lr=0.1, steps=4)
    proj = gradient_descent(obj, lr=0.1, steps=4, states="projection", projection_size=3)
    none = gradient_descent(obj, lr=0.1, steps=4, states="none")
    assert proj.states.shape == (5, 3) and none.states is None
    from flows.records.trajectory import random_projection
    p = random_projection(2, 3, proj.projection_seed).numpy()
    np.testing.assert_allclose(proj.states, full.states @ p, rtol=1e-12)
    proj.save(tmp_path / "p")
    assert Trajectory.load(tmp_path / "p").projection_size == 3
    with pytest.raises(KeyError, match="metric 'sharpness' was not recorded"):
        none.metric("sharpness")


def test_corrupted_and_truncated_files_are_named(tmp_path):
    obj = toys.get("cubic")
    gradient_descent(obj, lr=0.1, steps=4).save(tmp_path / "t")
    data = (tmp_path / "t.npz").read_bytes()
    (tmp_path / "t.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(TrajectoryFileError, match="t.npz"):
        Trajectory.load(tmp_path / "t")
    gradient_descent(obj, lr=0.1, steps=4).save(tmp_path / "u")
    (tmp_path / "u.json").write_text("{not json")
    with pytest.raises(TrajectoryFileError, match="u.json"):
        Trajectory.load(tmp_path / "u")
    with pytest.raises(TrajectoryFileError, match="does not exist"):
        Trajectory.load(tmp_path / "missing")


def test_saved_files_follow_the_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        traj = gradient_descent(toys.get("cubic"), lr=0.1, steps=2)
        npz = traj.save(tmp_path / "run")
        for path in [npz, npz.with_suffix(".json")]:
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
        os.umask(0o077)
        private = traj.save(tmp_path / "private")
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    finally:
        os.umask(old)
