"""Controllers against hand computations of their published formulas, and flat θ = torch.optim."""
import copy
import math

import numpy as np
import pytest
import torch
from models import fc_tanh, gaussian_mixture, half_mse

from analysis import (
    PAL,
    Alice,
    Constant,
    CorridorDetector,
    CorridorLR,
    DriftAdjustedLR,
    EoSDetector,
    WNGrad,
    get_controller,
)
from analysis.controllers import (
    AliceOptimizer,
    ConstantOptimizer,
    CorridorLROptimizer,
    DriftAdjustedLROptimizer,
    PALOptimizer,
    WNGradOptimizer,
)
from flows import Objective, gradient_descent
from flows.objective import toys

F64 = torch.float64


def fn(f, theta0):
    return Objective.from_function(f, len(theta0), theta0=torch.tensor(theta0, dtype=F64))


# ---------------------------------------------------------------------------- CLR
def test_clr_reaches_zero_on_a_linear_loss_in_one_step():
    c = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    obj = fn(lambda t: 5.0 + c @ t, [0.3, 0.1, -0.2])
    traj = gradient_descent(obj, lr=1.0, steps=1, controller=CorridorLR(detector=CorridorDetector()))
    e0 = 5.0 + float(c @ obj.theta0)
    assert traj.metric("lr")[0] == pytest.approx(e0 / float(c @ c), rel=1e-14)
    assert abs(traj.losses[1]) < 1e-13
    assert traj.metric("in_corridor")[0] == 1.0


def test_clr_on_the_xy2_corridor_and_off_it():
    obj = toys.get("corridor-xy2")
    det = CorridorDetector()
    on = gradient_descent(obj, torch.tensor([3.0, 0.0], dtype=F64), lr=1.0, steps=1,
                          controller=CorridorLR(detector=det, outside="fallback", fallback_lr=0.01))
    assert on.metric("lr")[0] == pytest.approx(3.0) and abs(on.losses[1]) < 1e-14
    off = gradient_descent(obj, torch.tensor([3.0, 0.5], dtype=F64), lr=1.0, steps=2,
                           controller=CorridorLR(detector=CorridorDetector(), outside="fallback", fallback_lr=0.01))
    assert off.metric("in_corridor")[0] == 0.0 and off.metric("lr")[0] == 0.01
    # several Polyak steps on the quadratic bowl, by hand
    bowl = toys.get("pf-quadratic")
    traj = gradient_descent(bowl, lr=1.0, steps=4, controller=CorridorLR(scale=0.5, max_lr=0.8))
    a = np.diag([1.0, 0.01])
    th = bowl.theta0.numpy().copy()
    for n in range(4):
        e, g = th @ a @ th, 2 * a @ th
        h = min(0.5 * e / (g @ g), 0.8)
        assert traj.metric("lr")[n] == pytest.approx(h, rel=1e-13)
        th = th - h * g
    np.testing.assert_allclose(traj.states[-1], th, rtol=1e-13)


# ---------------------------------------------------------------------------- DAL
@pytest.mark.parametrize("hvp", ["exact", "finite_difference"])
def test_dal_gives_two_over_lambda_along_an_eigenvector(hvp):
    obj = toys.get("pf-quadratic")  # Hessian diag(2, 0.02)
    th = torch.tensor([0.5, 0.0], dtype=F64)
    for p, expected in [(1.0, 1.0), (2.0, 0.5), (0.5, 2 / math.sqrt(2))]:
        traj = gradient_descent(obj, th, lr=0.1, steps=1, controller=DriftAdjustedLR(p, hvp=hvp))
        assert traj.metric("v")[0] == pytest.approx(2.0, rel=1e-10)
        assert traj.metric("lr")[0] == pytest.approx(expected, rel=1e-10)


def test_dal_steps_by_hand_with_window_and_cap():
    obj = toys.get("pf-quadratic")
    traj = gradient_descent(obj, lr=0.05, steps=6, controller=DriftAdjustedLR(1.0, max_lr=1.5, start=1, stop=5))
    a = np.diag([1.0, 0.01])
    th = obj.theta0.numpy().copy()
    for n in range(6):
        g, hg = 2 * a @ th, 4 * a @ a @ th
        h = min(2 / (np.linalg.norm(hg) / np.linalg.norm(g)), 1.5) if 1 <= n < 5 else 0.05
        assert traj.metric("lr")[n] == pytest.approx(h, rel=1e-12)
        th = th - h * g


def test_one_writer_of_sharpness_beside_dal():
    """DAL records v; the sharpness beside it comes from one monitor (here inside the EoS detector), once per row."""
    from analysis import Sharpness
    from flows import Recorder

    obj = toys.get("pf-quadratic")
    writes = []
    log = Recorder.log

    def counting_log(self, name, value):
        writes.append(name)
        log(self, name, value)

    Recorder.log = counting_log
    try:
        traj = gradient_descent(obj, lr=0.1, steps=3, controller=DriftAdjustedLR(1.0),
                                callbacks=[EoSDetector(sharpness_every=1)])
    finally:
        Recorder.log = log
    np.testing.assert_allclose(traj.metric("sharpness"), 2.0, rtol=1e-6)
    assert writes.count("sharpness") == len(traj) == 4 and np.isfinite(traj.metric("v")[:3]).all()
    with pytest.raises(TypeError, match="detector"):
        DriftAdjustedLR(1.0, detector=EoSDetector())  # the companion moved to the callbacks
    monitor = Sharpness(every=2, k=2)
    traj = gradient_descent(obj, lr=0.1, steps=4, callbacks=[monitor])
    np.testing.assert_allclose(traj.metric("sharpness")[::2], 2.0, rtol=1e-6)
    np.testing.assert_allclose(traj.metric("eigenvalue_1")[::2], 0.02, rtol=1e-6)
    assert np.isnan(traj.metric("sharpness")[1::2]).all()


# ---------------------------------------------------------------------------- WNGrad
def test_wngrad_b_sequence():
    obj = toys.get("pf-quadratic")
    traj = gradient_descent(obj, lr=0.9, steps=5, controller=WNGrad(0.9))
    a = np.diag([1.0, 0.01])
    th, b = obj.theta0.numpy().copy(), 1 / 0.9
    for n in range(5):
        g = 2 * a @ th
        b = b + g @ g / b
        assert traj.metric("b")[n] == pytest.approx(b, rel=1e-13)
        th = th - g / b
    np.testing.assert_allclose(traj.states[-1], th, rtol=1e-13)


def test_wngrad_per_row_by_hand():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).to(F64)
    x, y = torch.randn(16, 3, dtype=F64), torch.randn(16, 2, dtype=F64)
    obj = Objective.from_module(model, half_mse, (x, y))
    traj = gradient_descent(obj, lr=0.5, steps=3, controller=WNGrad(0.5, per_row=True))
    w, bias = model.weight.detach().clone(), model.bias.detach().clone()
    b_rows, b_bias = torch.full((2,), 2.0, dtype=F64), torch.tensor(2.0, dtype=F64)
    for _ in range(3):
        w.requires_grad_(True), bias.requires_grad_(True)
        gw, gb = torch.autograd.grad(half_mse(x @ w.T + bias, y), (w, bias))
        with torch.no_grad():
            b_rows = b_rows + (gw ** 2).sum(1) / b_rows
            b_bias = b_bias + (gb ** 2).sum() / b_bias
            w, bias = w - gw / b_rows[:, None], bias - gb / b_bias
    np.testing.assert_allclose(traj.states[-1], torch.cat([w.reshape(-1), bias]).numpy(), rtol=1e-12)


# ---------------------------------------------------------------------------- PAL
def test_pal_four_cases():
    alpha = 1 / 0.6
    # 1: positive curvature, E = θ², θ = 1: a = 1, b = −2, s = α·1
    t = gradient_descent(fn(lambda t: (t ** 2).sum(), [1.0]), lr=1.0, steps=1, controller=PAL(beta=0.0))
    assert t.metric("pal_case")[0] == 1 and t.metric("pal_a")[0] == pytest.approx(1.0)
    assert t.states[1, 0] == pytest.approx(1 - alpha, rel=1e-14)
    # 2: negative curvature, E = −θ²: s = μ = 1
    t = gradient_descent(fn(lambda t: -(t ** 2).sum(), [1.0]), lr=1.0, steps=1, controller=PAL(beta=0.0))
    assert t.metric("pal_case")[0] == 2 and t.states[1, 0] == pytest.approx(2.0)
    # 3: not a descent direction: a previous direction opposite to g
    pal = PAL(beta=0.4)
    pal.state["direction"] = torch.tensor([-20.0], dtype=F64)
    t = gradient_descent(fn(lambda t: (t ** 2).sum(), [1.0]), lr=1.0, steps=1, controller=pal)
    assert t.metric("pal_case")[0] == 3 and t.states[1, 0] == 1.0
    # 4: clipped at s_max, E = 0.001 θ² at θ = 10: s = α·10 > 3.16
    t = gradient_descent(fn(lambda t: 0.001 * (t ** 2).sum(), [10.0]), lr=1.0, steps=1, controller=PAL(beta=0.0))
    assert t.metric("pal_clipped")[0] == 1 and t.states[1, 0] == pytest.approx(10 - 3.16, rel=1e-14)


def test_pal_conjugate_direction_by_hand():
    obj = toys.get("pf-quadratic")
    traj = gradient_descent(obj, lr=1.0, steps=3, controller=PAL())
    a = np.diag([1.0, 0.01])
    e = lambda v: v @ a @ v  # noqa: E731
    th, d = obj.theta0.numpy().copy(), np.zeros(2)
    for _ in range(3):
        g = 2 * a @ th
        d = g + 0.4 * d
        nd = np.linalg.norm(d)
        b = -(g @ d) / nd
        aa = e(th - d / nd) - e(th) - b
        s = min((1 / 0.6) * (-b / (2 * aa)) if aa > 0 and b < 0 else (1.0 if b < 0 else 0.0), 3.16)
        th = th - s * d / nd
    np.testing.assert_allclose(traj.states[-1], th, rtol=1e-12)


# ---------------------------------------------------------------------------- Alice
def _alice_by_hand(grad, theta0, steps, lr=0.01, b1=0.9, b2=0.999, eps=1e-8, quick=3, seed=0):
    """The reference algorithm, coordinate by coordinate in plain Python floats."""
    n_coord = len(theta0)
    mu, nu = list(theta0), list(theta0)
    G, R, H, V = [0.0] * n_coord, [0.0] * n_coord, [0.0] * n_coord, [0.0] * n_coord  # noqa: N806  (the paper's names)
    gen = torch.Generator().manual_seed(seed)
    out = [list(mu)]
    for n in range(1, steps + 1):
        cap = (n - 1) / n
        bb1, bb2, bb3 = min(b1, cap), min(b2, cap), min(1 - (quick + 1) * (1 - b2), cap)
        if n <= 1 / (1 - b1) or n % (quick + 1) == 0:
            z = torch.rand(n_coord, generator=gen, dtype=F64).tolist()
            dl = [-lr if zi < 0.5 else lr for zi in z]
            gp = grad([nu[i] + dl[i] for i in range(n_coord)])
            gm = grad([nu[i] - dl[i] for i in range(n_coord)])
            g0 = grad(nu)
            for i in range(n_coord):
                h = abs(0.5 * (gp[i] - gm[i]) / lr)
                H[i] = h + bb3 * (H[i] - h)
                rho = 2 * (0.5 * (gp[i] + gm[i]) - g0[i]) ** 2 / lr
                R[i] = rho + bb3 * (R[i] - rho)
        else:
            g0 = grad(nu)
        for i in range(n_coord):
            V[i] = g0[i] ** 2 + bb2 * (V[i] - g0[i] ** 2)
            G[i] = g0[i] + bb1 * (G[i] - g0[i])
        if n > 1 / (1 - b1):
            for i in range(n_coord):
                ag = abs(G[i])
                alpha = 0.75 / math.pi * R[i] / (ag + eps)
                h_opt = alpha + H[i] + math.sqrt(alpha * (alpha + 2 * H[i])) + eps
                d = ag / h_opt
                f = ag / (math.sqrt(V[i]) + eps)
                d = min(max(d, 0.0 * f), 2 * lr * f)
                d = -d if G[i] > 0 else d
                nu[i] = mu[i] + d
                mu[i] = mu[i] + (1 - b1) * d
        out.append(list(mu))
    return np.array(out)


def test_alice_against_its_formulas():
    f = lambda t: (torch.tensor([1.0, 3.0, 0.2], dtype=F64) * t ** 2).sum() + (t ** 4).sum()  # noqa: E731
    obj = fn(f, [0.8, -0.5, 1.2])

    def grad(v):
        return obj.grad(torch.tensor(v, dtype=F64)).tolist()

    traj = gradient_descent(obj, lr=1.0, steps=18, controller=Alice(lr=0.01))
    expected = _alice_by_hand(grad, obj.theta0.tolist(), 18)
    np.testing.assert_allclose(traj.states, expected, rtol=1e-12, atol=1e-15)
    assert np.all(traj.states[10] == traj.states[0])  # warm-up: no motion for 1/(1-β1) steps
    assert not np.allclose(traj.states[-1], traj.states[0])
    np.testing.assert_array_equal(traj.metric("alice_sample")[:18:1][10:], [0, 1, 0, 0, 0, 1, 0, 0])


# ---------------------------------------------------------------------------- flat θ = torch.optim
def _problem():
    x, y = gaussian_mixture(n=64, d=4, classes=3, seed=1)
    model = fc_tanh((4, 8, 3), seed=2, dtype=F64)
    return model, x, y


CASES = [
    (Constant, ConstantOptimizer, dict(lr=0.3, momentum=0.5), 6),
    (CorridorLR, CorridorLROptimizer, dict(max_lr=2.0), 6),
    (DriftAdjustedLR, DriftAdjustedLROptimizer, dict(p=1.0, hvp="finite_difference"), 6),
    (WNGrad, WNGradOptimizer, dict(lr=1.0, per_row=True), 6),
    (PAL, PALOptimizer, dict(), 6),
    (Alice, AliceOptimizer, dict(lr=0.01, quick_steps=2), 14),
]


def _torch_loop(model, x, y, opt, steps, create_graph=False):
    def closure():
        opt.zero_grad()
        loss = half_mse(model(x), y)
        loss.backward(create_graph=create_graph)
        return loss

    for _ in range(steps):
        opt.step(closure)
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("cls,opt_cls,kw,steps", CASES, ids=[c[0].__name__ for c in CASES])
def test_flat_and_torch_optim_forms_agree(cls, opt_cls, kw, steps):
    model, x, y = _problem()
    obj = Objective.from_module(model, half_mse, (x, y))
    flat = gradient_descent(obj, lr=kw.get("lr", 0.1), steps=steps, controller=cls(**kw))
    final = _torch_loop(model, x, y, opt_cls(model.parameters(), **kw), steps)
    assert not np.allclose(flat.states[-1], flat.states[0])
    np.testing.assert_allclose(final.numpy(), flat.states[-1], rtol=1e-10, atol=1e-12)


def test_exact_dal_in_the_torch_form_needs_create_graph():
    model, x, y = _problem()
    obj = Objective.from_module(model, half_mse, (x, y))
    flat = gradient_descent(obj, lr=0.1, steps=3, controller=DriftAdjustedLR(1.0))
    final = _torch_loop(model, x, y, DriftAdjustedLROptimizer(model.parameters(), p=1.0), 3, create_graph=True)
    np.testing.assert_allclose(final.numpy(), flat.states[-1], rtol=1e-10)
    model2, _, _ = _problem()
    with pytest.raises(ValueError, match="create_graph"):
        _torch_loop(model2, x, y, DriftAdjustedLROptimizer(model2.parameters(), p=1.0), 1)


@pytest.mark.parametrize("cls,opt_cls,kw,steps", CASES, ids=[c[0].__name__ for c in CASES])
def test_state_dict_round_trip(cls, opt_cls, kw, steps):
    model, x, y = _problem()
    opt = opt_cls(model.parameters(), **kw)
    _torch_loop(model, x, y, opt, steps)
    saved_state, saved_params = copy.deepcopy(opt.state_dict()), copy.deepcopy(model.state_dict())
    straight = _torch_loop(model, x, y, opt, 4)
    model2, _, _ = _problem()
    model2.load_state_dict(saved_params)
    opt2 = opt_cls(model2.parameters(), **kw)
    opt2.load_state_dict(saved_state)
    resumed = _torch_loop(model2, x, y, opt2, 4)
    assert torch.equal(straight, resumed)


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("make,match", [
    (lambda: Constant(lr=0), "lr"), (lambda: Constant(lr=-1), "lr"), (lambda: Constant(lr=math.nan), "lr"),
    (lambda: DriftAdjustedLR(p=-1), "p"), (lambda: DriftAdjustedLR(hvp="magic"), "finite_difference"),
    (lambda: WNGrad(lr=0), "lr"), (lambda: PAL(mu=0), "mu"), (lambda: Alice(betas=(1.0, 0.9)), "betas"),
    (lambda: Alice(limit_method="x"), "adam"), (lambda: CorridorLR(outside="fallback"), "fallback_lr"),
    (lambda: get_controller("adamw"), "alice"),
])
def test_bad_settings_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_non_finite_steps_are_refused():
    model, x, y = _problem()
    opt = ConstantOptimizer(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]

    def bad():
        opt.zero_grad()
        loss = half_mse(model(x), y) * float("nan")
        loss.backward()
        return loss

    with pytest.warns(RuntimeWarning, match="refused"):
        opt.step(bad)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert opt.refused_steps == 1 and "non-finite" in opt.last_info["refused"]
    with pytest.raises(TypeError, match="closure"):
        opt.step()

    class Wild(Constant):
        def decide(self, ctx):
            return math.inf if ctx.step == 2 else 0.1

    obj = toys.get("pf-quadratic")
    traj = gradient_descent(obj, lr=0.1, steps=5, controller=Wild())
    assert traj.status == "diverged" and traj.events[-1]["kind"] == "refused_step"
    assert len(traj) == 3 and np.isfinite(traj.states).all()


def test_the_optimizer_form_reads_decisions_as_the_runner_does():
    from analysis.controllers.base import ControllerOptimizer, StepController

    class Bare(StepController):
        rate = 0.1

        def decide(self, ctx):
            return self.rate  # a bare float, which gradient_descent accepts as the rate

        def hyperparameters(self):
            return {}

    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    ctrl = Bare()
    opt = ControllerOptimizer([w], ctrl)

    def closure():
        opt.zero_grad()
        loss = (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    assert torch.allclose(w.detach(), torch.tensor([0.8, -1.6]))
    ctrl.rate = -0.1
    with pytest.raises(ValueError, match="negative rate"):
        opt.step(closure)


def _regression(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(32, 3, generator=gen, dtype=torch.float64), torch.randn(32, 2, generator=gen,
                                                                                dtype=torch.float64)
    model = fc_tanh((3, 5, 2), seed=seed, dtype=torch.float64)

    def closure_for(opt):
        def closure():
            opt.zero_grad()
            loss = half_mse(model(x), y)
            loss.backward()
            return loss
        return closure
    return model, closure_for


def _train(opt_factory, steps: int, restart_at: int | None = None):
    """Steps under a StepLR schedule; with ``restart_at``, optimizer and scheduler are rebuilt from state_dicts."""
    model, closure_for = _regression()
    opt = opt_factory(model.parameters())
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for n in range(steps):
        if n == restart_at:
            saved_opt, saved_sched = copy.deepcopy(opt.state_dict()), copy.deepcopy(sched.state_dict())
            opt = opt_factory(model.parameters())
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
            opt.load_state_dict(saved_opt)
            sched.load_state_dict(saved_sched)
        opt.step(closure_for(opt))
        sched.step()
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]), opt


def test_an_lr_scheduler_drives_the_controller_rate_as_it_drives_sgd():
    sgd, _ = _train(lambda p: torch.optim.SGD(p, lr=0.3), 7)
    ours, opt = _train(lambda p: ConstantOptimizer(p, lr=0.3), 7)
    torch.testing.assert_close(ours, sgd, rtol=1e-12, atol=1e-14)
    assert opt.last_info["lr"] == pytest.approx(0.3 * 0.5 ** 3)  # the schedule reached the step
    resumed, _ = _train(lambda p: ConstantOptimizer(p, lr=0.3), 7, restart_at=3)
    torch.testing.assert_close(resumed, ours, rtol=0, atol=0)


def test_param_group_edits_are_validated():
    model, closure_for = _regression()
    opt = AliceOptimizer(model.parameters(), lr=0.01)
    opt.param_groups[0]["betas"] = (0.5, 0.9)
    opt.step(closure_for(opt))
    assert opt.controller.betas == (0.5, 0.9)
    opt.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['lr'\] must be a finite number ≥ 0"):
        opt.step(closure_for(opt))
    first, second = list(model.parameters())[:2], list(model.parameters())[2:]
    with pytest.raises(ValueError, match="only 'lr' and 'weight_decay' may differ"):
        PALOptimizer([{"params": first}, {"params": second, "mu": 0.5}])


def test_sps_max_and_alig_are_their_papers_formulas_in_both_forms():
    """E = ½‖θ‖² at θ = (3, 4): E = 12.5, ‖g‖² = 25. SPS_max (c = ½): 2·12.5/25 = 1 (cap 10) and 0.4 under a cap of
    0.4; ALI-G: 12.5/(25 + δ); a loss below E* takes no step."""
    import torch

    from analysis.controllers import ALIG, ALIGOptimizer, SPSMax, SPSMaxOptimizer
    from flows import Objective, gradient_descent

    obj = Objective.from_function(lambda t: 0.5 * (t * t).sum(), 2)
    theta0 = torch.tensor([3.0, 4.0], dtype=torch.float64)
    for controller, expected in ((SPSMax(c=0.5, max_lr=10.0), 1.0), (SPSMax(c=0.5, max_lr=0.4), 0.4),
                                 (ALIG(max_lr=10.0, delta=0.5), 12.5 / 25.5), (ALIG(e_star=20.0), 0.0)):
        traj = gradient_descent(obj, theta0, lr=0.1, steps=1, controller=controller, states="none")
        assert traj.metric("lr")[0] == pytest.approx(expected, rel=1e-12)
    w = torch.nn.Parameter(theta0.clone())
    for opt, expected in ((SPSMaxOptimizer([w], c=0.5, max_lr=10.0), 1.0), (ALIGOptimizer([w], max_lr=0.3), 0.3)):
        with torch.no_grad():
            w.copy_(theta0)

        def closure(opt=opt):
            opt.zero_grad()
            loss = 0.5 * (w * w).sum()
            loss.backward()
            return loss
        opt.step(closure)
        torch.testing.assert_close(w.detach(), theta0 * (1 - expected))
    for bad in (lambda: SPSMax(c=0.0), lambda: ALIG(delta=-1.0), lambda: ALIG(e_star=float("nan"))):
        with pytest.raises(ValueError):
            bad()


def test_exact_dal_reuses_the_runners_gradient_graph():
    """With hvp="exact" the runner keeps gₙ's graph and DAL's Hg is one backward pass through it: one forward per
    step instead of two, and the same rates as a fresh graph (the finite-difference form is untouched)."""
    calls = {"n": 0}
    a = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=torch.float64)

    def energy(th):
        calls["n"] += 1
        return 0.5 * th @ a @ th + 0.1 * th[0] ** 3

    from flows import Objective

    theta0 = torch.tensor([0.5, -0.3], dtype=torch.float64)

    def forwards_per_step(**settings) -> float:
        counts = []
        for steps in (6, 12):  # the difference leaves out the one-time probes of a new objective
            calls["n"] = 0
            gradient_descent(Objective.from_function(energy, 2), theta0, 0.1, steps,
                             controller=DriftAdjustedLR(1.0, **settings))
            counts.append(calls["n"])
        return (counts[1] - counts[0]) / 6

    assert forwards_per_step() == 1.0  # the runner's gradient; Hg is a backward pass through its graph
    assert forwards_per_step(hvp="finite_difference") == 2.0
    traj = gradient_descent(Objective.from_function(energy, 2), theta0, 0.1, 6, controller=DriftAdjustedLR(1.0))
    th = theta0.clone()
    for n in range(6):
        g = torch.func.grad(energy)(th)
        hg = torch.func.hessian(energy)(th) @ g
        h = min(2.0 / float(hg.norm() / g.norm()), 5.0)
        assert traj.metric("lr")[n] == pytest.approx(h, rel=1e-12)
        th = th - h * g
    assert DriftAdjustedLR(1.0).wants_hessian and not DriftAdjustedLR(1.0, hvp="finite_difference").wants_hessian
