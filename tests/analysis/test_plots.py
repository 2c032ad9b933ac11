"""The plotting helpers build figures without writing files or choosing a backend, labelled from the flow records."""
import matplotlib.pyplot as plt

from analysis import plots
from flows import FLOWS


def test_labels_and_colours_come_from_the_flow_records():
    for name, flow in FLOWS.items():
        assert plots.label(name) == flow.label
        assert plots.label(name, 0.1) == f"{flow.label}, h=0.1"
        assert plots.color(name).startswith("#")
    assert plots.label("gd") == "GD" and plots.label("unknown") == "unknown"


def test_helpers_draw_on_axes_and_write_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with plots.style():
        fig, axes = plots.subplots(3, ncols=2)
        assert len(axes) == 4
        plots.contour(axes[0], lambda x, y: x ** 2 + y ** 2, (-1, 1), (-1, 1))
        assert axes[0].get_xlim() == (-1, 1)
        assert axes[0].collections  # the filled and line contours were drawn
    plots.close([fig])
    assert not plt.fignum_exists(fig.number)
    assert not list(tmp_path.iterdir())


def test_spectral_density_plot_marks_the_edge_and_the_regimes(mlp_objective):
    from flows.curvature.density import spectral_density

    density = spectral_density(mlp_objective, mlp_objective.theta0, starts=2, steps=10)
    lam = [density.nodes.max(), 0.1 * density.nodes.max()]
    fig, axes = plots.subplots(1)
    plots.spectral_density(axes[0], density, lr=3.0 / lam[0], eigenvalues=lam)  # hλ = 3 and 0.3
    colours = [line.get_color() for line in axes[0].get_lines()[1:]]
    assert colours[0] == plots.OKABE_ITO["orange"]  # 2/h
    # Re c(3) = log(2)/3 > 0: the PF grows that direction; Re c(0.3) < 0: it contracts
    assert colours[1:] == [plots.OKABE_ITO["vermillion"], plots.OKABE_ITO["blue"]]
    plots.close([fig])


def test_mean_band_draws_the_mean_and_one_sample_sd_skipping_non_finite_points():
    import matplotlib.pyplot as plt
    import numpy as np

    from analysis.plots import mean_band

    series = np.array([[1.0, 2.0, np.nan], [3.0, np.inf, np.nan], [5.0, 4.0, np.nan]])
    fig, ax = plt.subplots()
    mean_band(ax, [0, 1, 2], series)
    line = ax.lines[0]
    np.testing.assert_allclose(line.get_xdata(), [0, 1])  # the column with no finite value is not drawn
    np.testing.assert_allclose(line.get_ydata(), [3.0, 3.0])
    band = ax.collections[0].get_paths()[0].vertices
    np.testing.assert_allclose(sorted(set(np.round(band[:, 1], 9))), sorted({1.0, 5.0, 3 - 2 ** 0.5, 3 + 2 ** 0.5}))
    fig2, ax2 = plt.subplots()
    mean_band(ax2, [0, 1], [[1.0, 10.0], [100.0, 1000.0]], log=True)  # geometric mean on a log axis
    np.testing.assert_allclose(ax2.lines[0].get_ydata(), [10.0, 100.0])
    assert ax2.get_yscale() == "log"
    plt.close(fig)
    plt.close(fig2)
