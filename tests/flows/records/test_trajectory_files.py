"""Trajectory.load rejects every damaged or inconsistent file with a TrajectoryFileError naming the file and the
field (31 damages tried; 15 used to get through: wrong exception types, or silent inconsistency)."""
import json

import numpy as np
import pytest

from flows import Trajectory
from flows.records.trajectory import TrajectoryFileError


def _saved(tmp_path, states="full", complex_states=False):
    n, d = 5, 3
    rng = np.random.default_rng(0)
    st = rng.normal(size=(n, d))
    if complex_states:
        st = st + 1j * rng.normal(size=(n, d))
    projected = states == "projection"
    traj = Trajectory(np.arange(n) * 0.1, None if states == "none" else st,
                      {"loss": rng.random(n), "grad_norm": rng.random(n)}, config={"lr": 0.1}, state_mode=states,
                      projection_size=d if projected else None, projection_seed=0 if projected else None)
    npz = traj.save(tmp_path / "run")
    return npz, npz.with_suffix(".json")


def _edit_json(json_path, change):
    meta = json.loads(json_path.read_text())
    meta = change(meta)
    json_path.write_text(json.dumps(meta))


def _edit_arrays(npz, change):
    with np.load(npz) as data:
        arrays = {k: data[k] for k in data.files}
    change(arrays)
    with open(npz, "wb") as fh:
        np.savez(fh, **arrays)


def _set(key, value):
    def change(meta):
        meta[key] = value
        return meta
    return change


JSON_DAMAGES = {
    "a list": (lambda meta: [meta], "not an object"),
    "null": (lambda meta: None, "not an object"),
    "events a string": (_set("events", "boom"), "'events'"),
    "config a list": (_set("config", [1, 2]), "'config'"),
    "status a number": (_set("status", 3), "'status'"),
    "status unknown": (_set("status", "exploded"), "'status'"),
    "state_mode bogus": (_set("state_mode", "bogus"), "'state_mode'"),
    "length a string": (_set("length", "5"), "'length'"),
    "length off by one": (_set("length", 4), "length"),
    "format from the future": (_set("format_version", 99), "'format_version'"),
    "projection size a float": (_set("projection_size", 2.5), "'projection_size'"),
    "metric list differs": (_set("metrics", ["loss"]), "lists"),
}


@pytest.mark.parametrize("damage", sorted(JSON_DAMAGES))
def test_damaged_metadata_is_named(tmp_path, damage):
    npz, json_path = _saved(tmp_path)
    change, field = JSON_DAMAGES[damage]
    _edit_json(json_path, change)
    with pytest.raises(TrajectoryFileError, match=str(json_path.name)) as err:
        Trajectory.load(npz)
    assert field in str(err.value)


def test_deeply_nested_metadata_is_named(tmp_path):
    npz, json_path = _saved(tmp_path)
    json_path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(TrajectoryFileError, match="corrupted"):
        Trajectory.load(npz)


def test_a_directory_in_place_of_a_file_is_named(tmp_path):
    npz, json_path = _saved(tmp_path)
    json_path.unlink()
    json_path.mkdir()
    with pytest.raises(TrajectoryFileError, match="not a regular file"):
        Trajectory.load(npz)


def _drop(key):
    return lambda arrays: arrays.pop(key)


def _put(key, value):
    def change(arrays):
        arrays[key] = value
    return change


ARRAY_DAMAGES = {
    "no loss": (_drop("metric__loss"), "metric__loss"),
    "metric one short": (lambda a: a.__setitem__("metric__grad_norm", a["metric__grad_norm"][:-1]),
                         "metric__grad_norm"),
    "metric 2-D": (lambda a: a.__setitem__("metric__loss", a["metric__loss"][:, None]), "metric__loss"),
    "states one row short": (lambda a: a.__setitem__("states", a["states"][:-1]), "'states'"),
    "states one column more": (lambda a: a.__setitem__("states", np.hstack([a["states"], a["states"][:, :1]])),
                               "'states'"),
    "states 1-D": (lambda a: a.__setitem__("states", a["states"][:, 0]), "'states'"),
    "states missing": (_drop("states"), "'states'"),
    "times 2-D": (lambda a: a.__setitem__("times", a["times"][:, None]), "'times'"),
    "times missing": (_drop("times"), "'times'"),
    "strings for a metric": (_put("metric__loss", np.array(["a"] * 5)), "metric__loss"),
}


@pytest.mark.parametrize("damage", sorted(ARRAY_DAMAGES))
def test_inconsistent_arrays_are_named(tmp_path, damage):
    npz, _ = _saved(tmp_path)
    change, field = ARRAY_DAMAGES[damage]
    _edit_arrays(npz, change)
    with pytest.raises(TrajectoryFileError, match=npz.name) as err:
        Trajectory.load(npz)
    assert field in str(err.value)


def test_complex_states_without_their_imaginary_part_are_named(tmp_path):
    npz, _ = _saved(tmp_path, complex_states=True)
    assert np.iscomplexobj(Trajectory.load(npz).states)  # intact: loads
    _edit_arrays(npz, _drop("states_imag"))
    with pytest.raises(TrajectoryFileError, match="'states_imag' is missing"):
        Trajectory.load(npz)


@pytest.mark.parametrize("mode", ["full", "projection", "none"])
def test_intact_files_load(tmp_path, mode):
    npz, _ = _saved(tmp_path, states=mode)
    back = Trajectory.load(npz)
    assert back.state_mode == mode and len(back) == 5


@pytest.mark.parametrize("runner", ["gd", "gf"])
def test_every_status_a_runner_gives_loads_back(tmp_path, runner):
    """A run stopped by its time budget (status "stopped") saves and loads like any other."""
    from flows import gradient_descent, integrate
    from flows.objective import toys

    obj = toys.get("cubic")
    if runner == "gd":
        run = gradient_descent(obj, lr=1e-6, steps=10 ** 6, time_budget=0.2, states="none")
    else:
        run = integrate(obj, flow="gf", lr=1e-4, steps=10 ** 6, method="rk4", step_size=1e-4, time_budget=0.2,
                        states="none")
    assert run.status == "stopped"
    back = Trajectory.load(run.save(tmp_path / runner))
    assert back.status == "stopped" and len(back) == len(run)
