"""Every result record saves and loads exactly, refuses a file of another kind, and has a readable summary.

Off the home ground: an LSTM regressor (no experiment uses one) for the eigenpairs and the density.
"""
import numpy as np
import pytest
import torch

from analysis import EoSDetector, EoSReport, Sharpness
from flows import Objective, compare, gradient_descent, top_eigenpairs
from flows.curvature.density import SpectralDensity, spectral_density
from flows.curvature.landscape import Plane, loss_plane
from flows.curvature.spectrum import Eigenpairs
from flows.records.archive import RecordFileError
from flows.records.comparison import Comparison


class _LSTMRegressor(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(2, 3, batch_first=True)
        self.head = torch.nn.Linear(3, 1)

    def forward(self, x):
        return self.head(self.lstm(x)[0][:, -1])


@pytest.fixture
def lstm_objective() -> Objective:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(12, 4, 2, generator=gen, dtype=torch.float64)
    y = torch.randn(12, 1, generator=gen, dtype=torch.float64)
    torch.manual_seed(0)
    return Objective.from_module(_LSTMRegressor().double(), torch.nn.functional.mse_loss, (x, y))


def test_eigenpairs_round_trip(lstm_objective, tmp_path):
    pairs = top_eigenpairs(lstm_objective, lstm_objective.theta0, 3, method="lanczos")
    pairs.save(tmp_path / "pairs")
    back = Eigenpairs.load(tmp_path / "pairs.npz")
    for name in ("values", "vectors", "residuals", "relative_residuals"):
        assert torch.equal(getattr(back, name), getattr(pairs, name).cpu())
    assert (back.matvecs, back.converged, back.method) == (pairs.matvecs, pairs.converged, pairs.method)
    text = back.summary()
    assert "converged" in text and f"{pairs.values[0].item():.6g}" in text and repr(back) == text


def test_density_and_plane_round_trip(lstm_objective, tmp_path):
    obj = lstm_objective
    density = spectral_density(obj, obj.theta0, starts=3, steps=8)
    density.save(tmp_path / "density")
    back = SpectralDensity.load(tmp_path / "density")
    assert np.array_equal(back.nodes, density.nodes) and np.array_equal(back.weights, density.weights)
    assert back.matvecs == density.matvecs and "3 probes" in back.summary()
    d1, d2 = torch.randn_like(obj.theta0), torch.randn_like(obj.theta0)
    plane = loss_plane(obj, obj.theta0, d1, d2, np.linspace(-1, 1, 3), np.linspace(-1, 1, 4))
    plane.save(tmp_path / "plane")
    again = Plane.load(tmp_path / "plane")
    assert np.array_equal(again.values, plane.values) and "3 × 4 grid" in again.summary()


def test_comparison_round_trip(cubic, tmp_path):
    result = compare(cubic, None, 0.3, 8, flows=("gf", "pf"))
    result.save(tmp_path / "cmp")
    back = Comparison.load(tmp_path / "cmp")
    assert list(back.flows) == ["gf", "pf"]
    np.testing.assert_array_equal(back.drift["pf"], result.drift["pf"])
    np.testing.assert_array_equal(back.loss_gap["gf"], result.loss_gap["gf"])
    np.testing.assert_array_equal(back.flows["pf"].states, result.flows["pf"].states)  # complex states too
    assert back.summary() == result.summary() and "pf:" in back.summary()


def test_eos_report_round_trip_keeps_events(mlp_objective, tmp_path):
    lam = top_eigenpairs(mlp_objective, mlp_objective.theta0, 1).values.item()
    traj = gradient_descent(mlp_objective, lr=2.5 / lam, steps=12, callbacks=[Sharpness(every=2)],
                            states="none", progress=False)
    report = EoSDetector().detect(traj)
    report.save(tmp_path / "report")
    back = EoSReport.load(tmp_path / "report")
    for name, value in vars(report).items():
        same = (value == getattr(back, name)) or (value != value and getattr(back, name) != getattr(back, name))
        assert same, name  # NaN (a slope not measured) reads back as NaN
    assert [e.to_dict() for e in back.events] == [e.to_dict() for e in report.events]
    assert "first crossing: step 0" in back.summary()


def test_a_file_of_another_kind_or_damaged_is_refused_by_name(mlp_objective, tmp_path):
    pairs = top_eigenpairs(mlp_objective, mlp_objective.theta0, 1)
    pairs.save(tmp_path / "x")
    with pytest.raises(RecordFileError, match="'eigenpairs' record, not 'spectral_density'"):
        SpectralDensity.load(tmp_path / "x")
    with pytest.raises(RecordFileError, match="does not exist"):
        Plane.load(tmp_path / "missing")
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    with pytest.raises(RecordFileError, match="corrupted or truncated"):
        Eigenpairs.load(tmp_path / "x")


def test_trajectory_summary_names_status_rows_metrics_and_events(mlp_objective):
    traj = gradient_descent(mlp_objective, lr=0.1, steps=5, states="none", progress=False)
    text = traj.summary()
    assert text.startswith("Trajectory (gd, h = 0.1): complete, 6 rows")
    assert "grad_norm" in text and "events: none" in text and repr(traj) == text
