"""Stable and central flows of update rules against oracles: today's GD central flow, Scalar RMSProp's closed-form
equilibrium on a quadratic, the local error of the stable flows (slope 2), dense generalized eigenpairs
(scipy.linalg.eigh(H, P)) and the self-adjointness of the SDCP's B."""
import dataclasses

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from flows import Objective, central_flow, gradient_descent
from flows.dynamics.adaptive import AdaptiveCentralState, _Linearised, adaptive_flow
from flows.dynamics.rules import GD, Adam, RMSProp, ScalarRMSProp

C, S = 19.0, 0.1


def _toy() -> Objective:
    """E(x, y) = ½(c + y)x² − s·y: progressive sharpening, one critical direction."""
    return Objective.from_function(lambda th: 0.5 * (C + th[1]) * th[0] ** 2 - S * th[1], 2)


def _classifier(seed: int = 0) -> Objective:
    from models import gaussian_mixture

    torch.manual_seed(seed)
    x, y = gaussian_mixture(n=48, d=4, classes=3, dtype=torch.float64)
    model = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Tanh(), nn.Linear(6, 3)).double()
    return Objective.from_module(model, nn.CrossEntropyLoss(), (x, y))


def test_the_gd_rule_reproduces_the_gd_central_flow():
    obj, lr = _toy(), 0.1
    theta0 = torch.tensor([0.01, 0.0], dtype=torch.float64)
    today = central_flow(obj, theta0, lr, 300, states="full")
    rule = adaptive_flow(obj, theta0, GD(lr), 300, states="full")
    assert rule.metric("critical")[-1] == 1 and rule.status == "complete"
    np.testing.assert_allclose(rule.state_matrix(), today.state_matrix(), rtol=0, atol=1e-12)
    # the rows: 5e-12 apart at integrate's chunk ends, where central_flow measures its row by a second evaluation
    # at the same state (the tracker then restarts warmer)
    np.testing.assert_allclose(rule.metric("predicted_loss"), today.metric("predicted_loss"), rtol=1e-10)
    sigma_rule, sigma_today = rule.metric("sigma_0")[200:], today.metric("sigma_0")[200:]
    np.testing.assert_allclose(lr * sigma_rule, sigma_today, rtol=1e-10)  # Σ = U X Uᵀ = η V X Vᵀ
    np.testing.assert_allclose(rule.metric("effective_sharpness"), lr * today.metric("sharpness"), rtol=1e-9)


def test_scalar_rmsprop_on_a_quadratic_reaches_its_closed_form_equilibrium():
    """E = ½(λx² + μy²): ν* = η²λ²/4 (effective sharpness ηλ/√ν = 2), Σ₁₁ = η²/4, X = λη²/8; the discrete method's
    period-2 orbit |x| = η/2 has the same ν."""
    lam, mu, eta = 10.0, 0.5, 0.3
    obj = Objective.from_function(lambda th: 0.5 * (lam * th[0] ** 2 + mu * th[1] ** 2), 2)
    start = torch.tensor([1.0, 1.0], dtype=torch.float64)
    flow = adaptive_flow(obj, start, ScalarRMSProp(eta, beta2=0.9), 400)
    np.testing.assert_allclose(flow.metric("nu")[-1], eta ** 2 * lam ** 2 / 4, rtol=1e-6)
    np.testing.assert_allclose(flow.metric("effective_sharpness")[-1], 2.0, rtol=1e-6)
    np.testing.assert_allclose(flow.metric("sigma_0")[-1], lam * eta ** 2 / 8, rtol=1e-6)
    assert flow.metric("infeasibility").max() <= 1e-9
    discrete = gradient_descent(obj, start, eta, 3000, controller=ScalarRMSProp(eta, beta2=0.9).controller())
    np.testing.assert_allclose(discrete.metric("nu")[-50:-1].mean(), eta ** 2 * lam ** 2 / 4, rtol=1e-3)


@pytest.mark.parametrize("make", [
    lambda e: GD(0.5 * e), lambda e: ScalarRMSProp(0.5 * e, beta2=1 - e),
    lambda e: RMSProp(0.5 * e, beta2=1 - e, eps=1e-3), lambda e: Adam(0.5 * e, beta1=1 - 2 * e, beta2=1 - e),
])
def test_the_stable_flow_matches_one_discrete_step_to_second_order(make):
    """All step sizes scaled by ε (η and 1 − β): ‖(w, s)_flow(1) − (w, s)_step‖ = O(ε²), measured as a slope."""
    obj = _classifier()
    errors = []
    for eps in (0.02, 0.01, 0.005):
        rule = make(eps)
        w = obj.theta0.clone()
        g = obj.grad(w)
        state = rule.initial_state(w)  # a state with history: moments near (not at) the gradient's
        state["t"] = torch.tensor(50.0, dtype=w.dtype)
        if "nu" in state:
            state["nu"] = 1.2 * (g * g if state["nu"].ndim else (g * g).sum())
        if "m" in state:
            state["m"] = 0.8 * g
        w_step, s_step = rule.step(w, state, obj.grad(w))
        flow = AdaptiveCentralState(rule, "stable", substeps=1)
        wf, sf, n = w.clone(), dict(state), 400
        for _ in range(n):  # a fine Euler grid: its O(ε²/n) error is far below the O(ε²) being measured
            dw, ds = flow.drift(obj, wf, sf)
            wf, sf = wf + dw / n, {k: sf[k] + ds[k] / n for k in sf}
        gap = torch.linalg.vector_norm(wf - w_step) ** 2
        gap += sum(torch.linalg.vector_norm(sf[k] - s_step[k]) ** 2 for k in sf if k != "t")
        errors.append(float(gap.sqrt()))
    slopes = np.diff(np.log(errors)) / np.diff(np.log([0.02, 0.01, 0.005]))
    assert (slopes > 1.8).all() and (slopes < 2.3).all(), (errors, slopes)


def test_generalized_eigenpairs_against_dense_scipy():
    """The flow's U for P = diag(p) of an RMSProp state: HU = PUΛ, UᵀPU = I, Λ the top of eigh(H, P)."""
    obj = _classifier()
    rule = RMSProp(0.05, beta2=0.9, eps=1e-4)
    w = obj.theta0.clone()
    state = rule.fold(rule.initial_state(w), obj.grad(w))
    for _ in range(5):
        w, state = rule.step(w, state, obj.grad(w))
    p = rule.preconditioner(state)
    flow = AdaptiveCentralState(rule, "central", eig_tol=1e-10, track=0.01, critical=0.02)
    values, vectors = flow._eigenpairs(obj, w, p)
    u = vectors * p.rsqrt()[:, None]
    h = obj.hessian(w).numpy()
    dense = scipy.linalg.eigh(h, np.diag(p.numpy()), eigvals_only=True)[::-1]
    k = values.numel()
    assert k >= 2
    np.testing.assert_allclose(values.numpy(), dense[:k], rtol=1e-8)
    np.testing.assert_allclose(u.T.numpy() @ np.diag(p.numpy()) @ u.numpy(), np.eye(k), atol=1e-8)
    np.testing.assert_allclose(h @ u.numpy(), np.diag(p.numpy()) @ u.numpy() @ np.diag(values.numpy()), atol=1e-7)


def _parts(exact: bool):
    obj = _classifier()
    rule = RMSProp(0.05, beta2=0.9, eps=1e-4)
    w = obj.theta0.clone()
    state = rule.fold(rule.initial_state(w), obj.grad(w))
    p = rule.preconditioner(state)
    flow = AdaptiveCentralState(rule, "central", eig_tol=1e-10, track=0.01, critical=0.02, max_k=3)
    values, vectors = flow._eigenpairs(obj, w, p)
    u = (vectors * p.rsqrt()[:, None])[:, :3]
    parts = _Linearised(rule, state, p, u, obj.third_derivatives(w, u), rule.threshold, adiabatic=False)
    if exact:  # diag(HΣH) with the exact HU = PUΛ: the public code's form
        hu = p[:, None] * u * values[:3]
        parts.square_shift = lambda x: torch.einsum("di,...ij,dj->...d", hu, x.to(hu), hu)
    return parts


def test_the_sdcp_operator_is_self_adjoint_and_psd_and_the_exact_form_is_not():
    b = _parts(exact=False).operator(0.25)
    assert float((b - b.T).abs().max()) <= 1e-12 * float(b.abs().max())
    assert float(torch.linalg.eigvalsh(0.5 * (b + b.T))[0]) >= -1e-12 * float(b.abs().max())
    exact = _parts(exact=True).operator(0.25)
    assert float((exact - exact.T).abs().max()) > 1e-6 * float(exact.abs().max())  # λᵢλⱼ ≠ λₖλₗ


@pytest.mark.parametrize("rule", [RMSProp(1.0, beta2=0.9), Adam(1.0, beta1=0.9, beta2=0.99)], ids=["rmsprop", "adam"])
def test_central_flows_above_the_edge_hold_the_effective_sharpness(rule):
    """The classifier started above the edge (λ(P⁻¹H) ≈ 1.3τ): the central flow brings the effective sharpness to
    τ and holds it, with SDCP residuals recorded and small, a finite predicted loss."""
    obj = _classifier()
    w = obj.theta0.clone()
    state = rule.fold(rule.initial_state(w), obj.grad(w))
    values, _ = AdaptiveCentralState(rule, "central")._eigenpairs(obj, w, rule.preconditioner(state))
    lr = 1.3 * rule.threshold / float(values[0])  # λ(P⁻¹H) is proportional to η
    run = adaptive_flow(obj, w, dataclasses.replace(rule, lr=lr), 30)
    assert run.status == "complete", run.events
    sharp = run.metric("effective_sharpness")
    assert sharp[0] > 1.2 * rule.threshold and run.metric("critical")[0] >= 1
    assert sharp[10:].max() <= rule.threshold * 1.02, sharp
    assert run.metric("infeasibility").max() <= 1e-8 and run.metric("complementarity").max() <= 1e-6
    assert np.isfinite(run.metric("predicted_loss")).all()


def test_a_run_off_an_unbounded_objective_ends_diverged_and_says_so():
    """RMSProp at η = 1e6 on the cubic toy (unbounded below): the loss runs off; the run stops loudly."""
    from flows import toys

    with pytest.warns(RuntimeWarning, match="diverged"):
        run = adaptive_flow(toys.get("cubic"), None, RMSProp(1e6, beta2=0.9), 20)
    assert run.status == "diverged" and run.events[-1]["kind"] == "divergence" and len(run) < 21


def test_adams_stable_flow_converges_to_the_matrix_exponential_and_keeps_its_envelope_at_four_substeps():
    """E = ½λx² with ε ≫ √ν (P = ε/η constant) and no bias correction: the stable flow is the linear oscillator
    ẋ = −(η/ε)m, ṁ = c₁(λx − m), solved by expm. At a = λη/ε = 30 (below Adam's 38) its frequency is ≈ 1.8 per step:
    explicit Euler at dt = ¼ would grow (stable only for dt < 1/a); the semi-implicit substeps converge at first order
    and keep the envelope at 4 substeps."""
    lam, a, eps, beta1, steps = 1.0, 30.0, 1e6, 0.9, 40
    eta = a * eps / lam
    obj = Objective.from_function(lambda th: 0.5 * lam * th[0] ** 2, 1)
    rule = Adam(eta, beta1=beta1, beta2=0.99, eps=eps, bias_correction=False)
    c1 = (1 - beta1) / beta1
    field = np.array([[0.0, -eta / eps], [c1 * lam, -c1]])
    start = np.array([1.0, (1 - beta1) * lam])  # s(0) = fold(s₀, g(x₀)): m = (1 − β₁)λx₀
    exact = np.array([(scipy.linalg.expm(field * n) @ start)[0] for n in range(steps + 1)])
    errors, envelopes = [], []
    for substeps in (4, 16, 64):
        flow = adaptive_flow(obj, torch.tensor([1.0], dtype=torch.float64), rule, steps, flow="stable",
                             substeps=substeps, states="full", progress=False)
        x = flow.state_matrix()[:, 0]
        errors.append(np.abs(x - exact).max())
        envelopes.append(np.abs(x[-10:]).max())
    assert 3.0 < errors[1] / errors[2] < 5.5, errors  # first order: 4× the substeps, ~4× less error
    assert errors[2] < 0.02, errors
    np.testing.assert_allclose(envelopes[0], np.abs(exact[-10:]).max(), rtol=0.1)


def test_the_ablated_flow_sharpens_along_its_closed_form_while_the_central_flow_holds_the_edge():
    """On E = ½(c + y)x² − s·y the ablated flow ẇ = −(2/S)∇L has x → 0 (ẋ ≈ −2x) and ẏ = 2s/S with S ≈ c + y, so
    S(n)² = S(0)² + 4sn over n steps; the GD central flow at η holds S at 2/η instead. Scalar rules only."""
    obj, lr, steps = _toy(), 0.1, 300
    theta0 = torch.tensor([0.01, 0.0], dtype=torch.float64)
    ablated = adaptive_flow(obj, theta0, GD(lr), steps, flow="ablated", substeps=4, progress=False)
    central = adaptive_flow(obj, theta0, GD(lr), steps, progress=False)
    expected = np.sqrt(C ** 2 + 4 * S * np.arange(steps + 1))
    np.testing.assert_allclose(ablated.metric("sharpness")[50:], expected[50:], rtol=2e-3)
    np.testing.assert_allclose(ablated.metric("effective_step"), 2.0 / ablated.metric("sharpness"), rtol=1e-12)
    assert ablated.metric("sharpness")[-1] > 1.05 * 2 / lr  # past the edge the central flow holds
    np.testing.assert_allclose(central.metric("effective_sharpness")[-50:], 2.0, rtol=1e-3)
    state = AdaptiveCentralState(GD(lr), "ablated")
    w = theta0.clone()
    dw, _ = state.drift(obj, w, GD(lr).fold(GD(lr).initial_state(w), obj.grad(w)))
    np.testing.assert_allclose(dw.numpy(), -(2.0 / state.report["sharpness"]) * obj.grad(w).numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="scalar preconditioner.*rmsprop"):
        adaptive_flow(obj, theta0, RMSProp(lr), 5, flow="ablated")


def test_the_batched_operator_is_b_applied_to_every_symmetric_x():
    """B built as one batch over the basis equals B[X] evaluated on its own, for random symmetric X (RMSProp: the
    curvature and the ν path)."""
    torch.manual_seed(1)
    parts = _parts(exact=False)
    b = parts.operator(0.25)
    for _ in range(3):
        x = torch.randn(3, 3, dtype=torch.float64)
        x = x + x.T
        np.testing.assert_allclose((b @ x.reshape(-1)).reshape(3, 3).numpy(),
                                   parts.stability_part(x, 0.25).numpy(), rtol=1e-10, atol=1e-14)


def test_one_eigen_solve_per_step_tracks_the_solve_at_every_substep():
    """eig_refresh=1 (Rayleigh–Ritz on [V, MV] between solves) against eig_refresh=0 on the classifier started above
    the edge, where U turns fastest. Measured: predicted losses within 0.22%, effective sharpness within 1.3%. With
    Rayleigh–Ritz on V alone the turn of U within a step was missed: the next solve found λ₁(P⁻¹H) = 2.69 where the
    solve at every substep holds 1.99 (35%)."""
    obj, rule = _classifier(), RMSProp(1.0, beta2=0.9)
    w = obj.theta0.clone()
    state = rule.fold(rule.initial_state(w), obj.grad(w))
    values, _ = AdaptiveCentralState(rule, "central")._eigenpairs(obj, w, rule.preconditioner(state))
    rule = dataclasses.replace(rule, lr=1.3 * rule.threshold / float(values[0]))
    every = adaptive_flow(obj, w, rule, 30, progress=False)
    once = adaptive_flow(obj, w, rule, 30, eig_refresh=1, progress=False)
    assert once.config["ritz_matvecs"] > 0 and once.config["eigen_matvecs"] < every.config["eigen_matvecs"]
    np.testing.assert_allclose(once.metric("predicted_loss"), every.metric("predicted_loss"), rtol=2e-2)
    np.testing.assert_allclose(once.metric("effective_sharpness"), every.metric("effective_sharpness"), rtol=2e-2)
