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
    from flows.density import spectral_density

    density = spectral_density(mlp_objective, mlp_objective.theta0, starts=2, steps=10)
    lam = [density.nodes.max(), 0.1 * density.nodes.max()]
    fig, axes = plots.subplots(1)
    plots.spectral_density(axes[0], density, lr=3.0 / lam[0], eigenvalues=lam)  # hλ = 3 and 0.3
    colours = [line.get_color() for line in axes[0].get_lines()[1:]]
    assert colours[0] == plots.OKABE_ITO["orange"]  # 2/h
    # Re c(3) = log(2)/3 > 0: the PF grows that direction; Re c(0.3) < 0: it contracts
    assert colours[1:] == [plots.OKABE_ITO["vermillion"], plots.OKABE_ITO["blue"]]
    plots.close([fig])
