"""Figures of a user's own runs, rendered: the expected artists are there, nothing is written, no warning.

Off the home ground: a GroupNorm conv net with cross-entropy (no experiment trains one) for the EoS figure
and the density; the 2-D cubic toy for a Comparison; a softplus MLP for the central flow.
"""
import warnings

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.collections import PolyCollection
from matplotlib.lines import Line2D

from analysis import EoSDetector, Sharpness, plots
from flows import Objective, central_flow, compare, gradient_descent, top_eigenpairs
from flows.curvature.density import spectral_density
from flows.curvature.landscape import loss_plane, plane_coordinates


@pytest.fixture
def groupnorm_objective() -> Objective:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(24, 2, 5, 5, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (24,), generator=gen)
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.GroupNorm(2, 4), torch.nn.Tanh(),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 3 * 3, 3)).to(torch.float64)
    return Objective.from_module(model, torch.nn.functional.cross_entropy, (x, labels))


def _render(fig) -> None:
    fig.canvas.draw()  # every artist laid out and drawn: errors in drawing show here


@pytest.fixture(autouse=True)
def _no_warnings_no_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc_before = dict(mpl.rcParams)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield
    assert not list(tmp_path.iterdir()), "a figure function wrote a file"
    assert dict(mpl.rcParams) == rc_before, "a figure function changed the global rcParams"
    plt.close("all")


def test_eos_figure_of_two_runs_draws_losses_sharpness_thresholds_and_crossings(groupnorm_objective):
    obj = groupnorm_objective
    lam = top_eigenpairs(obj, obj.theta0, 1).values.item()
    runs = [gradient_descent(obj, lr=lr, steps=16, callbacks=[Sharpness(every=4)], states="none", progress=False)
            for lr in (1.0 / lam, 2.6 / lam)]
    reports = [EoSDetector().detect(t) for t in runs]
    fig = plots.eos(runs, reports=reports)
    _render(fig)
    loss_ax, sharp_ax = fig.axes
    assert loss_ax.get_yscale() == "log" and len(loss_ax.get_lines()) >= 2
    labels = [line.get_label() for line in sharp_ax.get_lines()]
    assert labels.count("stability threshold") == 2
    dashed = [line for line in sharp_ax.get_lines() if line.get_label() == "stability threshold"]
    np.testing.assert_allclose(dashed[1].get_ydata()[0], 2 / (2.6 / lam))  # 2/h of the second run
    assert reports[0].first_crossing is None and reports[1].first_crossing == 0  # hλ = 2.6 > 2 at the start
    crossings = [line for line in sharp_ax.get_lines() if line.get_linestyle() == ":"]
    assert [line.get_xdata()[0] for line in crossings] == [0.0]


def test_eos_figure_draws_into_a_given_axes_and_names_bad_input(groupnorm_objective):
    traj = gradient_descent(groupnorm_objective, lr=0.5, steps=6, callbacks=[Sharpness(every=2)], states="none")
    fig, ax = plt.subplots()
    assert plots.eos(traj, ax=ax) is fig
    assert [line.get_label() for line in ax.get_lines()][-1] == "stability threshold"
    with pytest.raises(ValueError, match="sequence of 2 Axes"):
        plots.eos(traj, ax=[ax])
    with pytest.raises(KeyError, match="batch_sharpness"):
        plots.eos(traj, metric="batch_sharpness")
    with pytest.raises(TypeError, match="Trajectory"):
        plots.eos([])


def test_comparison_figure_has_a_drift_line_per_flow(cubic):
    result = compare(cubic, None, 0.2, 12, flows=("gf", "igr"))
    fig = plots.comparison(result)
    _render(fig)
    loss_ax, drift_ax, gap_ax = fig.axes
    assert [line.get_label() for line in drift_ax.get_lines()] == [plots.label("gf"), plots.label("igr")]
    np.testing.assert_allclose(drift_ax.get_lines()[0].get_ydata(), result.drift["gf"][1:])
    assert len(loss_ax.get_lines()) == 3 and drift_ax.get_yscale() == "log"
    with pytest.raises(ValueError, match="not in this comparison"):
        plots.comparison(result, flows=["pf"])


def test_central_flow_figure_shows_prediction_count_and_variances():
    torch.manual_seed(3)
    x = torch.randn(32, 3, dtype=torch.float64)
    y = torch.randn(32, 2, dtype=torch.float64)
    model = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.Softplus(), torch.nn.Linear(6, 2)).double()
    obj = Objective.from_module(model, torch.nn.functional.mse_loss, (x, y))
    lam = top_eigenpairs(obj, obj.theta0, 1).values.item()
    lr = 2.2 / lam  # above the edge from the start: a critical direction appears
    gd = gradient_descent(obj, lr=lr, steps=10, states="none")
    flow = central_flow(obj, None, lr, 10, progress=False)
    fig = plots.central_flow(flow, gd)
    _render(fig)
    loss_ax, count_ax, sigma_ax = fig.axes
    assert {"GD", "central flow, predicted"} <= {line.get_label() for line in loss_ax.get_lines()}
    np.testing.assert_allclose(count_ax.get_lines()[0].get_ydata(), flow.metric("critical"))
    assert np.nanmin(flow.metric("critical")) == 2  # two directions past the edge all along
    assert [line.get_label() for line in sigma_ax.get_lines()] == ["σ_1", "σ_2"]
    with pytest.raises(ValueError, match="predicted_loss"):
        plots.central_flow(gd)


def test_density_figure_has_its_error_band(groupnorm_objective):
    obj = groupnorm_objective
    result = spectral_density(obj, obj.theta0, starts=4, steps=12)
    fig = plots.density(result, lr=0.5)
    _render(fig)
    (ax,) = fig.axes
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1 and ax.get_yscale() == "log"
    grid = np.linspace(result.nodes.min(), result.nodes.max(), 7)
    per_probe = result.smoothed_per_probe(grid)
    np.testing.assert_allclose(result.standard_error(grid), per_probe.std(axis=0, ddof=1) / 2, rtol=1e-12)
    np.testing.assert_allclose(result.smoothed(grid), per_probe.mean(axis=0), rtol=1e-12)


def test_loss_plane_figure_draws_the_path_and_its_residual(groupnorm_objective):
    obj = groupnorm_objective
    traj = gradient_descent(obj, lr=0.3, steps=8)
    theta = obj.theta0
    d1 = torch.as_tensor(traj.states[-1]) - theta
    d2 = torch.randn_like(theta)
    plane = loss_plane(obj, theta, d1, d2, np.linspace(-0.5, 1.5, 9), np.linspace(-0.5, 0.5, 7))
    coords, residual = plane_coordinates(traj.states, theta, d1, d2)
    fig = plots.loss_plane(plane, path=coords, residual=residual)
    _render(fig)
    plane_ax, res_ax = fig.axes[0], fig.axes[1]
    path_line = [line for line in plane_ax.get_lines() if isinstance(line, Line2D) and line.get_label() == "path"]
    np.testing.assert_allclose(path_line[0].get_xdata(), coords[:, 0])
    np.testing.assert_allclose(res_ax.get_lines()[0].get_ydata(), residual)
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        plots.loss_plane(plane, path=coords[:, 0])


@pytest.mark.parametrize("venue,column,width", [("icml", "single", 3.25), ("icml", "double", 6.75),
                                                ("neurips", "single", 5.5), ("iclr", "single", 5.5),
                                                ("jmlr", "single", 6.0)])
def test_venue_presets_set_the_templates_width_and_fonts(venue, column, width):
    with plots.style(venue=venue, column=column):
        fig = plt.figure()
        assert fig.get_size_inches()[0] == pytest.approx(width)
        assert mpl.rcParams["font.size"] == plots.VENUES[venue].font_size - 1
        assert mpl.rcParams["xtick.labelsize"] == plots.VENUES[venue].font_size - 3
    with plots.style(venue=venue, column="single", fraction=0.5, ncols=2):
        fig = plt.figure()
        assert fig.get_size_inches()[0] == pytest.approx(plots.VENUES[venue].column_width / 2)


def test_venue_presets_name_bad_choices():
    with pytest.raises(ValueError, match="venue must be one of"):
        plots.style(venue="nips")
    with pytest.raises(ValueError, match="one-column template"):
        plots.style(venue="neurips", column="double")
    with pytest.raises(ValueError, match="column must be"):
        plots.style(venue="icml", column="full")
