"""`driftlab plot` on saved trajectories: the EoS figure (at venue width), the central-flow figure, clear refusals."""
import pytest
from matplotlib.image import imread

from analysis import Sharpness
from experiments.cli.main import main
from flows import central_flow, gradient_descent


@pytest.fixture
def runs(tmp_path, mlp_objective):
    gd = gradient_descent(mlp_objective, lr=0.5, steps=10, callbacks=[Sharpness(every=2)], states="none",
                          progress=False)
    gd.save(tmp_path / "gd")
    gradient_descent(mlp_objective, lr=0.1, steps=5, states="none", progress=False).save(tmp_path / "plain")
    central_flow(mlp_objective, None, 0.5, 5, progress=False).save(tmp_path / "cf")
    return tmp_path


def test_plot_draws_saved_trajectories_at_venue_width(runs, capsys):
    figures = runs / "figures"
    assert main(["plot", str(runs / "gd.npz"), "--figures", str(figures), "--venue", "icml"]) == 0
    png = figures / "gd_eos.png"
    assert f"figure:  {png}" in capsys.readouterr().out
    height, width = imread(png).shape[:2]
    assert width == pytest.approx(6.75 * 300, abs=2)  # the ICML text width at savefig.dpi 300
    assert main(["plot", str(runs / "cf"), str(runs / "gd"), "--figures", str(figures)]) == 0
    assert (figures / "cf_central.pdf").is_file()


def test_plot_refuses_what_it_cannot_draw_and_says_why(runs, capsys):
    assert main(["plot", str(runs / "plain"), "--figures", str(runs / "f")]) == 2
    assert "recorded no 'sharpness'" in capsys.readouterr().err
    assert main(["plot", str(runs / "nothing"), "--figures", str(runs / "f")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["plot", str(runs / "gd"), "--venue", "neurips", "--column", "double", "--figures",
                 str(runs / "f")]) == 2
    assert "one-column template" in capsys.readouterr().err
