"""Lanczos eigenpairs against dense float64 eigendecompositions."""
import numpy as np
import pytest
import torch
from torch import nn

from flows import EigenTracker, Objective, sharpness, top_eigenpairs


def _quadratic(values: torch.Tensor, seed: int = 0) -> Objective:
    gen = torch.Generator().manual_seed(seed)
    d = values.numel()
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    a = (q * values) @ q.T
    a = 0.5 * (a + a.T)
    return Objective.from_function(lambda t: 0.5 * t @ a @ t, d, theta0=torch.zeros(d, dtype=torch.float64))


def _spectrum(d=400, seed=1):
    gen = torch.Generator().manual_seed(seed)
    bulk = torch.rand(d - 12, generator=gen, dtype=torch.float64) * 2 - 1  # in [-1, 1]
    top = torch.tensor([10.0, 9.999, 9.998, 7.0, 6.9999, 5.0], dtype=torch.float64)  # clusters
    bottom = torch.tensor([-4.0, -3.9995, -3.0, -2.5, -2.2, -2.0], dtype=torch.float64)  # negative
    return torch.cat([top, bulk, bottom])


@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
def test_lanczos_matches_dense_on_clustered_spectrum(which):
    values = _spectrum()
    obj = _quadratic(values)
    theta = obj.theta0
    dense_vals, dense_vecs = torch.linalg.eigh(obj.hessian(theta))
    key = {"LA": -dense_vals, "SA": dense_vals, "LM": -dense_vals.abs()}[which]
    expect = dense_vals[torch.argsort(key)][:6]
    res = top_eigenpairs(obj, theta, 6, which, tol=1e-10, method="lanczos", max_matvecs=2000)
    assert res.converged
    torch.testing.assert_close(res.values, expect, rtol=1e-6, atol=0)
    h = obj.hessian(theta)
    true_res = torch.linalg.vector_norm(h @ res.vectors - res.vectors * res.values, dim=0)
    torch.testing.assert_close(res.residuals, true_res, rtol=1e-6, atol=1e-12)  # honest residuals
    assert float(res.relative_residuals.max()) <= 1e-10
    torch.testing.assert_close(res.vectors.T @ res.vectors, torch.eye(6, dtype=torch.float64), atol=1e-10, rtol=0)


def _mlp_objective(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 24), nn.Tanh(), nn.Linear(24, 24), nn.Tanh(), nn.Linear(24, 3)).double()
    x, y = torch.randn(40, 6, dtype=torch.float64), torch.randn(40, 3, dtype=torch.float64)
    return Objective.from_module(model, lambda o, t: 0.5 * ((o - t) ** 2).sum(1).mean(), (x, y))


def _cnn_objective():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Tanh(), nn.Conv2d(4, 4, 3), nn.Tanh(), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 5)).double()
    x, y = torch.randn(30, 1, 8, 8, dtype=torch.float64), torch.randint(0, 5, (30,))
    return Objective.from_module(model, nn.functional.cross_entropy, (x, y))


@pytest.mark.parametrize("make", [_mlp_objective, _cnn_objective], ids=["mlp", "cnn"])
@pytest.mark.parametrize("which", ["LA", "SA"])
def test_network_hessians_against_dense(make, which):
    obj = make()
    theta = obj.theta0
    h = torch.func.hessian(lambda t: obj.pieces[0](t))(theta)  # independent dense oracle
    dense_vals = torch.linalg.eigvalsh(h)
    expect = dense_vals.flip(0)[:5] if which == "LA" else dense_vals[:5]
    res = top_eigenpairs(obj, theta, 5, which, tol=1e-10, method="lanczos", max_matvecs=3000)
    assert res.converged, res.relative_residuals
    torch.testing.assert_close(res.values, expect, rtol=1e-6, atol=1e-9)
    dense = top_eigenpairs(obj, theta, 5, which, method="dense")
    torch.testing.assert_close(dense.values, expect, rtol=1e-9, atol=1e-12)


def test_budget_exhausted_reports_not_converged():
    obj = _quadratic(_spectrum())
    res = top_eigenpairs(obj, obj.theta0, 6, tol=1e-12, method="lanczos", max_matvecs=8)
    assert not res.converged
    assert res.matvecs <= 8
    assert float(res.relative_residuals.max()) > 1e-12


def test_tracker_equals_cold_solves():
    obj = _mlp_objective()
    theta = obj.theta0.clone()
    tracker = EigenTracker(k=4, tol=1e-8, extra=2)
    for _ in range(4):
        warm = tracker.update(obj, theta)
        cold = top_eigenpairs(obj, theta, 4, tol=1e-8, method="lanczos")
        assert warm.converged and cold.converged
        torch.testing.assert_close(warm.values, cold.values, rtol=1e-7, atol=1e-10)
        torch.testing.assert_close((warm.vectors.T @ cold.vectors).abs().diagonal(),
                                   torch.ones(4, dtype=torch.float64), atol=1e-5, rtol=0)
        theta = theta - 0.05 * obj.grad(theta)


def test_warm_start_costs_fewer_hvps_at_moderate_tolerance():
    obj = _mlp_objective()
    theta = obj.theta0.clone()
    tracker = EigenTracker(k=4, tol=1e-3, extra=2)
    tracker.update(obj, theta)
    warm, cold = [], []
    for _ in range(5):
        theta = theta - 0.05 * obj.grad(theta)
        warm.append(tracker.update(obj, theta).matvecs)
        cold.append(top_eigenpairs(obj, theta, 4, tol=1e-3, method="lanczos").matvecs)
    assert sum(warm) < sum(cold), (warm, cold)


def test_tracker_aligns_signs():
    obj = _mlp_objective()
    tracker = EigenTracker(k=3, tol=1e-8)
    first = tracker.update(obj, obj.theta0)
    second = tracker.update(obj, obj.theta0 - 1e-3 * obj.grad(obj.theta0))
    assert bool(((first.vectors * second.vectors).sum(0) > 0.9).all())


def test_sharpness_and_operator_scipy_agree():
    import numpy as np
    from scipy.sparse.linalg import eigsh
    obj = _mlp_objective()
    lam = sharpness(obj, obj.theta0, tol=1e-10, method="lanczos")
    ref = eigsh(obj.hessian_operator(obj.theta0).to_scipy(), k=1, which="LA", tol=1e-12)[0][0]
    assert abs(lam - ref) <= 1e-8 * abs(ref)
    assert np.isfinite(ref)


def test_bad_inputs():
    obj = _quadratic(_spectrum(d=40))
    theta = obj.theta0
    with pytest.raises(ValueError, match="k must be a positive int"):
        top_eigenpairs(obj, theta, 0)
    with pytest.raises(ValueError, match="k must be ≤ 39"):
        top_eigenpairs(obj, theta, 40, method="lanczos")
    with pytest.raises(ValueError, match="which must be one of"):
        top_eigenpairs(obj, theta, 2, which="largest")
    with pytest.raises(ValueError, match="method must be one of"):
        top_eigenpairs(obj, theta, 2, method="arnoldi")
    with pytest.raises(ValueError, match="non-finite"):
        top_eigenpairs(obj, torch.full_like(theta, float("nan")), 2)
    with pytest.raises(ValueError, match="tol must be"):
        top_eigenpairs(obj, theta, 2, tol=-1.0)
    with pytest.raises(ValueError, match="v0 must be"):
        top_eigenpairs(obj, theta, 2, v0=torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("dim", [5, 400])
def test_a_non_finite_hessian_is_an_error_on_both_paths(dim):
    from flows.curvature.spectrum import NonFiniteSpectrumError

    obj = Objective.from_function(lambda t: (t ** 2).sum() * torch.tensor(float("nan"), dtype=t.dtype), dim,
                                  theta0=torch.ones(dim, dtype=torch.float64))
    with pytest.raises(NonFiniteSpectrumError, match="undefined here"):
        top_eigenpairs(obj, obj.theta0, 2)


@pytest.mark.parametrize("name,eigenvalues,k,which", [
    ("decaying, D = 1500", 50.0 * 0.97 ** np.arange(1500), 10, "LA"),
    ("clustered top (gap 1e-4)", np.r_[[10.0, 10.0 - 1e-4, 10.0 - 2e-4], np.linspace(-1, 5, 497)], 3, "LA"),
    ("negative curvature", np.r_[[-7.0, -6.5], np.linspace(-1, 3, 398)], 2, "SA"),
    ("largest magnitude is negative", np.r_[[-9.0], np.linspace(-2, 4, 299), [8.5]], 2, "LM"),
    ("repeated eigenvalue", np.r_[[4.0, 4.0, 4.0], np.linspace(0, 2, 397)], 3, "LA"),
])
def test_lanczos_recovers_constructed_spectra(name, eigenvalues, k, which, constructed):
    from flows.curvature.operators import MatrixOperator
    from flows.curvature.spectrum import symmetric_eigenpairs

    a = constructed(eigenvalues)
    op = MatrixOperator(a)
    pairs = symmetric_eigenpairs(op, k, which, tol=1e-8, max_matvecs=3000)
    lam = np.asarray(eigenvalues, dtype=float)
    key = {"LA": -lam, "SA": lam, "LM": -np.abs(lam)}[which]
    expected = lam[np.argsort(key, kind="stable")][:k]
    assert pairs.converged, name
    np.testing.assert_allclose(pairs.values.numpy(), expected, rtol=1e-7, atol=1e-9, err_msg=name)
    # the residuals it reports are the true ones, and the vectors are orthonormal
    true_res = torch.linalg.vector_norm(a @ pairs.vectors - pairs.vectors * pairs.values, dim=0)
    np.testing.assert_allclose(pairs.residuals.numpy(), true_res.numpy(), rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose((pairs.vectors.T @ pairs.vectors).numpy(), np.eye(k), atol=1e-8)
    assert pairs.matvecs == op.matvecs


def test_an_exhausted_budget_reports_honest_residuals(constructed):
    from flows.curvature.operators import MatrixOperator
    from flows.curvature.spectrum import symmetric_eigenpairs

    a = constructed(np.r_[[1.0, 1.0 - 1e-6], np.linspace(0, 0.999, 998)])
    pairs = symmetric_eigenpairs(MatrixOperator(a), 2, "LA", tol=1e-12, max_matvecs=40)
    true_res = torch.linalg.vector_norm(a @ pairs.vectors - pairs.vectors * pairs.values, dim=0)
    assert not pairs.converged
    np.testing.assert_allclose(pairs.residuals.numpy(), true_res.numpy(), rtol=1e-6, atol=1e-12)


def test_threshold_tracking_follows_the_critical_set():
    """k grows until one tracked eigenvalue lies below τ, and shrinks again when the spectrum falls."""
    lam = torch.cat([torch.tensor([10.0, 8.0, 6.0, 4.0, 2.0]), torch.linspace(1.0, 0.1, 395)]).double()
    scale = {"s": 1.0}
    obj = Objective.from_function(lambda th: 0.5 * scale["s"] * (lam * th ** 2).sum(), 400)
    theta = torch.zeros(400, dtype=torch.float64)
    tracker = EigenTracker(k=1, tol=1e-8, threshold=5.0, method="lanczos")
    first = tracker.update(obj, theta)
    assert first.extras["k"] == 4  # 10, 8, 6 above τ = 5 and the sentinel 4 below
    torch.testing.assert_close(first.values, torch.tensor([10.0, 8.0, 6.0, 4.0], dtype=torch.float64))
    scale["s"] = 0.45  # 4.5, 3.6, 2.7, 1.8, …: nothing above τ; the sentinels shrink while well below τ/2
    ks = [tracker.update(obj, theta).extras["k"] for _ in range(3)]
    assert ks == [4, 3, 3], ks  # 1.8 < τ/2 is dropped; 2.7 > τ/2 is kept (hysteresis against flapping)
    scale["s"] = 0.2  # 2, 1.6, 1.2, …: every spare well below
    ks2 = [tracker.update(obj, theta).extras["k"] for _ in range(4)]
    assert ks2 == [3, 2, 1, 1], ks2  # one pair fewer per update
    scale["s"] = 1.0  # back up: grows again in one update
    assert tracker.update(obj, theta).extras["k"] == 4
    assert tracker.k_history == [4, *ks, *ks2, 4]
    with pytest.raises(ValueError, match="max_k"):
        EigenTracker(k=3, max_k=2)
    with pytest.raises(ValueError, match="threshold"):
        EigenTracker(threshold=float("nan"))


def test_a_ceiling_stops_refining_pairs_known_to_lie_below_it(constructed):
    """The central flow's sub-critical pairs: above the ceiling (and the first pair) to tol, below it only until
    θ + ‖r‖ ≤ ceiling; against the constructed spectrum and its dense residuals, for fewer products."""
    from flows.curvature.operators import MatrixOperator
    from flows.curvature.spectrum import symmetric_eigenpairs

    lam = np.r_[[10.0, 9.0, 7.2, 7.1, 7.0, 6.9], np.linspace(0.0, 6.0, 494)]
    a, ceiling = constructed(lam), 8.0
    tight = symmetric_eigenpairs(MatrixOperator(a), 6, "LA", tol=1e-8, verify=False)
    op = MatrixOperator(a)
    bounded = symmetric_eigenpairs(op, 6, "LA", tol=1e-8, verify=False, ceiling=ceiling)
    assert bounded.converged and bounded.matvecs < tight.matvecs
    np.testing.assert_allclose(bounded.values[:2].numpy(), lam[:2], rtol=1e-7)  # the first and the one above
    true_res = torch.linalg.vector_norm(a @ bounded.vectors - bounded.vectors * bounded.values, dim=0).numpy()
    below = bounded.values[2:].numpy()
    assert np.all(below + true_res[2:] <= ceiling + 1e-9) and np.all(below < lam[2] + 1e-9)
    with pytest.raises(ValueError, match="which='LA'"):
        symmetric_eigenpairs(op, 2, "SA", ceiling=ceiling)
    with pytest.raises(ValueError, match="ceiling must be a finite number"):
        EigenTracker(ceiling=float("nan"))
