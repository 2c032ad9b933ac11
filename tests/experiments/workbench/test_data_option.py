"""`--set data=NAME` on every experiment that trains a network, and the closest-name hints of the CLI."""
import dataclasses

import pytest

from experiments.cli import registry
from experiments.cli.main import main

WITH_DATA = [name for name in registry.names()
             if "data" in {f.name for f in dataclasses.fields(registry.get(name).Config)}]


def test_every_network_experiment_takes_data():
    expected = {"eos-digits", "eos-adam", "eos-sgd", "eos-sgd-gap", "eos-sgd-momentum", "eos-momentum",
                "sgd-modified-flow", "corridors", "controllers-digits", "drift-digits", "landscape-digits",
                "pf-spikes", "polyak-family", "dal-tradeoff"}
    assert expected <= set(WITH_DATA)


@pytest.mark.parametrize("name", WITH_DATA)
def test_a_misspelt_data_set_is_refused_before_running_with_the_closest_name(name, tmp_path, capsys):
    assert main(["run", name, "--set", "data=mnistt1d", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'mnist1d'" in err and "cohen-5k:PATH" in err
    assert not (tmp_path / "r").exists()


def test_an_experiment_runs_on_a_generated_paper_set(tmp_path, capsys):
    out = tmp_path / "r"
    args = ["run", "eos-momentum", "--set", "data=moons", "--set", "steps=3", "--set", "sharpness_every=3",
            "--set", "betas=0.5", "--set", "widths=64,6,10", "--out", str(out), "--figures", str(tmp_path / "f"),
            "--quiet"]
    assert main(args) == 0
    from experiments.zoo.datasets import digits_objective
    from flows import Trajectory

    traj = Trajectory.load(next(out.glob("beta*")) / "gd")
    assert traj.config["objective"] == "moons-fc-tanh"
    obj, split, _ = digits_objective(widths=(64, 6, 10), data="moons")
    assert obj.dim == 2 * 6 + 6 + 6 * 2 + 2 and split.x_train.shape == (200, 2)  # widths' ends follow moons


def test_unknown_names_get_the_closest_suggestion(tmp_path, capsys):
    assert main(["run", "eos-digts", "--out", str(tmp_path / "r")]) == 2
    assert "did you mean 'eos-digits'" in capsys.readouterr().err
    assert main(["run", "eos-digits", "--set", "lrz=0.1", "--out", str(tmp_path / "r")]) == 2
    assert "did you mean 'lrs'" in capsys.readouterr().err
    assert main(["run", "eos-digits", "--set", "lrs=0.2,abc", "--out", str(tmp_path / "r")]) == 2
    assert "comma-separated" in capsys.readouterr().err
