"""Edge-of-stability detector: the digits EoS story, the offline path and its errors."""
import numpy as np
import pytest
import torch
from models import digits_objective

from analysis import EoSDetector, from_dict
from flows import Controller, Trajectory, compare, gradient_descent, stability_threshold
from flows.objective import toys

STEPS = 600


@pytest.fixture(scope="module")
def digits_runs():
    """Full-batch fc-tanh MSE on digits at h = 0.2 and h = 0.02, sharpness every 20 steps (≈ 20 s on 2 cores)."""
    torch.manual_seed(0)
    runs = {}
    for lr in (0.2, 0.02):
        obj, _ = digits_objective(seed=0)
        det = EoSDetector(sharpness_every=20)
        traj = gradient_descent(obj, lr=lr, steps=STEPS, states="none", callbacks=[det])
        runs[lr] = (det, traj)
    return runs


def test_eos_on_digits_at_large_rate(digits_runs, tmp_path):
    det, traj = digits_runs[0.2]
    report = det.detect(traj)
    assert report.threshold == pytest.approx(10.0)
    assert report.progressive_sharpening and report.sharpening_slope > 0
    assert report.first_crossing is not None and 150 <= report.first_crossing <= STEPS
    assert det.crossed_at == report.first_crossing  # online and offline agree
    assert report.hovering and report.hover_fraction >= 0.5
    assert report.spikes, "at the edge of stability the loss is non-monotone"
    assert det.at_edge
    # events serialize with the trajectory and come back as the same records
    traj.events.extend(e.to_dict() for e in report.events)
    back = Trajectory.load(traj.save(tmp_path / "eos"))
    kinds = [from_dict(e).kind for e in back.events]
    assert {"progressive_sharpening", "eos_crossing", "hovering", "loss_spike"} <= set(kinds)
    assert [from_dict(e) for e in back.events][-len(report.events):] == report.events
    # PF coefficients of the tracked direction were logged next to the sharpness
    rc = back.metric("pf_re_c_0")
    assert np.isfinite(rc[::20]).all()


def test_no_crossing_at_small_rate(digits_runs):
    det, traj = digits_runs[0.02]
    report = det.detect(traj)
    assert report.first_crossing is None and det.crossed_at is None
    assert not report.hovering
    assert np.nanmax(traj.metric("sharpness")) < 0.5 * stability_threshold(0.02)


def test_missing_sharpness_is_a_clear_error_or_computed_from_objective():
    obj = toys.get("pf-quadratic")
    traj = gradient_descent(obj, lr=2.1, steps=12)
    with pytest.raises(ValueError, match="sharpness"):
        EoSDetector().detect(traj)
    report = EoSDetector(sharpness_every=3).detect(traj, objective=obj)
    assert report.first_crossing == 0  # λ_max = 1 ≥ 2/2.1
    no_states = gradient_descent(obj, lr=2.1, steps=5, states="none")
    with pytest.raises(ValueError, match="full-state"):
        EoSDetector().detect(no_states, objective=obj)


def test_momentum_threshold_and_bad_arguments():
    assert stability_threshold(0.1, 0.9) == pytest.approx(38.0)
    with pytest.raises(ValueError, match="momentum"):
        stability_threshold(0.1, 1.0)
    with pytest.raises(ValueError, match="band"):
        EoSDetector(band=0)
    with pytest.raises(ValueError, match="sharpness_every"):
        EoSDetector(sharpness_every=0)


def test_gd_gf_separation_on_the_quadratic():
    """At h = 0.9 GD oscillates along the λ = 1 direction while GF does not: they separate early."""
    obj = toys.get("pf-quadratic")
    cmp = compare(obj, lr=0.9, steps=10, flows=("gf",), rtol=1e-10, atol=1e-12)
    report = EoSDetector().detect(cmp.gd, objective=obj, drift=cmp.drift["gf"])
    assert report.separation_step is not None and 1 <= report.separation_step <= 3
    ratio = cmp.drift["gf"][report.separation_step] / np.linalg.norm(
        cmp.gd.states[report.separation_step] - cmp.gd.states[0])
    assert ratio >= 0.1
    calm = compare(obj, lr=0.01, steps=10, flows=("gf",), rtol=1e-10, atol=1e-12)
    assert EoSDetector().detect(calm.gd, objective=obj, drift=calm.drift["gf"]).separation_step is None


class _GrowingRate(Controller):
    """hₙ = 0.01·1.1ⁿ: the threshold 2/hₙ falls past λ_max = 2 of the pf-quadratic toy at n = 49."""

    def decide(self, ctx):
        return 0.01 * 1.1 ** ctx.step


def test_offline_detection_uses_the_rate_recorded_at_each_step(tmp_path):
    from flows import Trajectory, gradient_descent
    from flows.objective import toys

    seen = []
    online = EoSDetector(sharpness_every=1)
    traj = gradient_descent(toys.get("pf-quadratic"), lr=0.01, steps=55, controller=_GrowingRate(),
                            callbacks=[online, lambda ctx, decision, rec: seen.append((ctx.step, decision.lr))])
    traj.save(tmp_path / "run")
    offline = EoSDetector(sharpness_every=1).detect(Trajectory.load(tmp_path / "run"))
    assert online.crossed_at == offline.first_crossing == 49
    crossing = next(e for e in offline.events if e.kind == "eos_crossing")
    assert crossing.evidence["lr"] == pytest.approx(0.01 * 1.1 ** 49)
    # the last row takes no step: callbacks get the last rate used as the decision, not the runner's base rate
    assert seen[-1] == (55, pytest.approx(0.01 * 1.1 ** 54))
    # an explicit lr= still imposes one constant rate
    assert EoSDetector(sharpness_every=1).detect(traj, lr=0.01).first_crossing is None


def test_adams_edge_is_measured_on_the_preconditioned_sharpness():
    """Online with an optimizer: the detector records λ₁(P⁻¹H) as preconditioned_sharpness and Adam's 38/h;
    offline, detect reads the recorded thresholds (not 2/h) and names the measure in its crossing event."""
    import torch
    from torch import nn

    from analysis import OptimizerController
    from flows import Objective, gradient_descent, sharpness

    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(32, 5, generator=gen, dtype=torch.float64), torch.randint(0, 3, (32,), generator=gen)
    torch.manual_seed(3)
    obj = Objective.from_module(nn.Sequential(nn.Linear(5, 12), nn.SiLU(), nn.Linear(12, 3)).double(),
                                nn.CrossEntropyLoss(), (x, y))
    ctrl = OptimizerController(torch.optim.Adam, lr=0.05)
    det = EoSDetector(sharpness_every=3, optimizer=ctrl)
    traj = gradient_descent(obj, obj.theta0, 0.05, 9, controller=ctrl, callbacks=[det], states="full")
    measured = np.flatnonzero(np.isfinite(traj.metric("preconditioned_sharpness")))
    assert list(measured) == [0, 3, 6]  # the last row (9) took no step
    assert "sharpness" not in traj.metrics  # one name, one meaning: λ₁(H) is not λ₁(P⁻¹H)
    np.testing.assert_allclose(traj.metric("stability_threshold")[measured], 38 / 0.05)
    last = torch.as_tensor(traj.state_matrix()[8])
    assert det.threshold == pytest.approx(38 / 0.05)
    # offline: a synthetic measure crossing the recorded threshold at row 6
    traj.metrics["preconditioned_sharpness"] = np.where(np.arange(len(traj)) >= 6, 800.0, 100.0)
    report = EoSDetector().detect(traj, measure="preconditioned_sharpness")
    assert report.first_crossing == 6 and report.threshold == pytest.approx(760.0)
    crossing = next(e for e in report.events if e.kind == "eos_crossing")
    assert crossing.evidence["measure"] == "preconditioned_sharpness" and crossing.evidence["lr"] == 0.05
    with pytest.raises(ValueError, match="measure 'batch_sharpness' was not recorded"):
        EoSDetector().detect(traj, measure="batch_sharpness")
    assert sharpness(obj, last) > 0


def test_pf_loss_rate_is_the_closed_form_on_a_quadratic_and_predicts_a_diverging_direction():
    """E = ½θᵀAθ, A = diag(1, 3, 12), h = 0.2: hλ = 0.2, 0.6, 2.4; with k = 2 the rest (λ = 1) counts as gradient
    flow, so dE/dt = Re c(2.4)(12θ₃)² + Re c(0.6)(3θ₂)² − θ₁²; GD diverges along θ₃ and the PF says so."""
    import torch

    from analysis import PFLossRate, loss_rate_agreement
    from flows import Objective, gradient_descent, pf_coefficient

    a = torch.tensor([1.0, 3.0, 12.0], dtype=torch.float64)
    obj = Objective.from_function(lambda t: 0.5 * (a * t * t).sum(), 3)
    theta0 = torch.tensor([0.1, 0.1, 1.0], dtype=torch.float64)
    traj = gradient_descent(obj, theta0, lr=0.2, steps=6, states="none", callbacks=[PFLossRate(k=2, tol=1e-10)],
                            max_loss=1e9)
    re_c = pf_coefficient(torch.tensor([2.4, 0.6], dtype=torch.float64)).real
    expected = float(re_c[0] * (12 * 1.0) ** 2 + re_c[1] * (3 * 0.1) ** 2 - 0.1 ** 2)
    assert traj.metric("pf_loss_rate")[0] == pytest.approx(expected, rel=1e-8)
    assert traj.metric("gf_loss_rate")[0] == pytest.approx(-(0.1 ** 2 + 0.3 ** 2 + 12.0 ** 2), rel=1e-12)
    assert traj.metric("alignment_0")[0] == pytest.approx(144 / (144 + 0.09 + 0.01), rel=1e-8)
    agreement = loss_rate_agreement(traj, 0.2)
    assert agreement["all"]["PF sign agrees"] == 1.0 and agreement["all"]["GF sign agrees"] == 0.0
    with pytest.raises(ValueError, match="k must be"):
        PFLossRate(k=0)


def test_pf_loss_rate_on_a_batchnorm_cnn_matches_the_dense_hessian(cnn_objective):
    """On a train-mode BatchNorm CNN with cross-entropy (an architecture and loss pf-spikes does not use) the recorded
    rate equals Σᵢ Re c(hλᵢ)(gᵀuᵢ)² − (‖g‖² − Σᵢ(gᵀuᵢ)²) from the dense float64 Hessian's top 3 pairs."""
    import torch

    from analysis import PFLossRate
    from flows import gradient_descent, pf_coefficient

    theta, h = cnn_objective.theta0, 0.9
    traj = gradient_descent(cnn_objective, theta, lr=h, steps=1, states="none",
                            callbacks=[PFLossRate(k=3, tol=1e-10)])
    values, vectors = torch.linalg.eigh(cnn_objective.hessian(theta))
    lam, u = values.flip(0)[:3], vectors.flip(1)[:, :3]
    g = cnn_objective.grad(theta)
    along = (u.T @ g) ** 2
    expected = float((pf_coefficient(h * lam).real * along).sum() - (g @ g - along.sum()))
    assert traj.metric("pf_loss_rate")[0] == pytest.approx(expected, rel=1e-6)
    for i in range(3):
        assert traj.metric(f"alignment_{i}")[0] == pytest.approx(float(along[i] / (g @ g)), rel=1e-6, abs=1e-12)


def _synthetic(every: int) -> Trajectory:
    """Sharpness rising linearly from 5 to 12 over 100 steps (crossing 2/h = 10 at step 71), measured every
    ``every`` steps."""
    n = np.arange(101)
    sharp = np.full(101, np.nan)
    sharp[::every] = 5 + 7 * n[::every] / 100
    metrics = {"loss": np.exp(-n / 50), "grad_norm": np.ones(101), "sharpness": sharp}
    return Trajectory(times=n * 0.2, states=None, metrics=metrics, config={"lr": 0.2}, state_mode="none")


def test_too_few_points_before_the_crossing_are_undetermined_not_false():
    """Kendall's one-sided p of 4 points cannot go below 1/24 = 0.042 > sharpening_p = 0.01."""
    sparse = EoSDetector().detect(_synthetic(every=25), lr=0.2)  # measured at 0, 25, 50 and 75 (the crossing)
    assert sparse.progressive_sharpening is None
    assert sparse.sharpening_points == 4 and sparse.sharpening_min_p == pytest.approx(1 / 24)
    dense = EoSDetector().detect(_synthetic(every=5), lr=0.2)
    assert dense.progressive_sharpening is True and dense.sharpening_points == 16  # 0, 5, …, 75 (the crossing)
