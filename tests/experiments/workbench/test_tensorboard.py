"""`driftlab tensorboard`: saved trajectories become TensorBoard runs whose scalars equal the recorded metrics."""
import numpy as np
import pytest

from experiments.cli.main import main
from flows import gradient_descent

pytest.importorskip("tensorboard")


def test_export_writes_every_finite_metric_value(tmp_path, mlp_objective, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    traj = gradient_descent(mlp_objective, lr=0.3, steps=6, states="none", progress=False)
    traj.save(tmp_path / "results" / "h0.3" / "gd")
    (tmp_path / "results" / "note.npz").write_bytes(b"not a trajectory")  # skipped, not fatal
    assert main(["tensorboard", str(tmp_path / "results"), "--logdir", str(tmp_path / "tb")]) == 0
    assert "1 run(s)" in capsys.readouterr().out
    events = EventAccumulator(str(tmp_path / "tb" / "h0.3" / "gd"))
    events.Reload()
    loss = events.Scalars("loss")
    assert [e.step for e in loss] == list(range(7))
    np.testing.assert_allclose([e.value for e in loss], traj.losses, rtol=1e-6)  # event files store float32


def test_export_names_what_is_wrong(tmp_path, capsys):
    assert main(["tensorboard", str(tmp_path), "--logdir", str(tmp_path / "tb")]) == 2
    assert "no saved trajectories" in capsys.readouterr().err
