"""Figures are written like trajectories: readable by others under the usual umask."""
import os
import stat

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.cli.common import save_figure  # noqa: E402


def test_saved_figures_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        paths = save_figure(plt.figure(), tmp_path / "figs", "f")
        assert paths
        for path in paths:
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    finally:
        os.umask(old)


def test_the_default_figures_folder_is_the_repositorys_gallery():
    from pathlib import Path

    from experiments.cli.common import FIGURES

    root = Path(__file__).resolve().parents[2]
    assert root / "figures" == FIGURES and (root / "figures" / "pf_quadratic.png").exists()
