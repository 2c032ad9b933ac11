"""Training runs of a learning-rate controller on a problem, full batch and mini-batch, with their diagnostics.

A :class:`Problem` is a model, a loss, train and test data and (where known) the optimal full-batch loss E*:
:func:`digits_problem` (the fc-tanh MLP, ½-MSE) and :func:`breast_cancer_problem` (logistic regression, convex,
E* found by L-BFGS). A method is a spec string, ``kind[:number]``:

=========== ======================================= ===========================================
spec        controller                              number
=========== ======================================= ===========================================
constant:h  GD/SGD at rate h                        the rate (required)
clr[:cap]   CLR = Polyak step with E* = 0           cap on the rate (none: uncapped)
polyak      Polyak step with the problem's E*       — (full batch; E* must be known)
sps[:cap]   SPS_max, c = ½ (Loizou et al. 2021)     γ_b, the cap (default 1)
alig[:cap]  ALI-G, δ = 1e-5 (Berrada et al. 2020)   η, the cap (default 1)
dal[:p]     DAL-p                                   p (default 1)
wngrad[:h]  WNGrad                                  initial rate (default 0.1)
pal         PAL                                     μ (default 1)
alice[:h]   Alice                                   rate (default 0.01)
=========== ======================================= ===========================================

:func:`fullbatch` runs ``flows.gradient_descent`` with the controller (sharpness every ``sharpness_every`` steps,
test accuracy every ``eval_every``); :func:`minibatch` runs its ``torch.optim`` form in an ordinary epoch loop
(DAL with finite-difference Hg), the full-batch sharpness measured every ``sharpness_every`` optimizer steps.
A run whose loss passes ``BLOW_UP`` × max(1, E(θ₀)) ends as diverged (the runner's own bound, 1e12, lets a run
sit at a loss of 1e10 and call it complete). Both return a summary row with the final train loss (and E − E*),
test accuracy, median rate and the fraction of measured steps with hₙλ_max(θₙ)/2 > 1 (beyond the edge of stability).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from analysis import EoSDetector, get_controller
from analysis.controllers import ControllerOptimizer, StepController
from experiments.zoo.datasets import (
    breast_cancer,
    check_data,
    check_digits_widths,
    fc_tanh,
    fitted_widths,
    half_mse,
    load_split,
)
from flows import EigenTracker, Objective, Recorder, StepContext, StepDecision, gradient_descent

BLOW_UP = 1e4
KINDS = ("constant", "clr", "polyak", "sps", "alig", "dal", "wngrad", "pal", "alice")


@dataclass
class Schedule:
    """The settings every controller comparison shares (an experiment's ``Config`` extends it)."""

    steps: int = 500
    """Full-batch steps per method."""
    epochs: int = 10
    """Mini-batch epochs per method."""
    batch_size: int = 64
    """Examples per mini-batch."""
    sharpness_every: int = 10
    """Steps between full-batch sharpness measurements."""
    n_train: int = 0
    """Digits training examples (0: the whole split)."""
    widths: tuple[int, ...] = (64, 200, 200, 10)
    """The fc-tanh MLP's layer widths (64 inputs, 10 outputs)."""
    data: str = "digits"
    """Data set: 'digits', or a classification set of experiments.zoo.papers (mnist1d, moons, circles, cohen-5k:PATH,
    cf-1k-4class:PATH, eoss-seeded:PATH); the MLP's first and last widths follow it."""

    def validate(self) -> None:
        check_data(self.data)
        check_digits_widths(self.widths)
        for name in ("steps", "epochs", "batch_size", "sharpness_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.n_train < 0:
            raise ValueError(f"n_train must be ≥ 0, got {self.n_train}")


@dataclass
class Problem:
    """A model (never trained in place by :func:`fullbatch`), its loss, data and known optimum."""

    name: str
    model: nn.Module
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    train: tuple[Tensor, Tensor]
    test_x: Tensor
    test_labels: Tensor
    predict: Callable[[Tensor], Tensor]  # outputs → class labels
    e_star: float = math.nan

    def objective(self) -> Objective:
        return Objective.from_module(self.model, self.loss_fn, self.train, name=self.name)

    def accuracy(self, outputs: Tensor) -> float:
        return float((self.predict(outputs) == self.test_labels).double().mean())


def digits_problem(seed: int, n_train: int = 0, widths: tuple[int, ...] = (64, 200, 200, 10),
                   data: str = "digits") -> Problem:
    """fc-tanh with ½-MSE on digits (or another classification ``data`` set, widths' ends fitted to it)."""
    split = load_split(data, seed=seed, n_train=n_train or None)
    return Problem(data.split(":")[0], fc_tanh(fitted_widths(widths, split), seed=seed), half_mse, split.train,
                   split.x_test, split.labels_test, lambda out: out.argmax(1))


def _bce(outputs: Tensor, targets: Tensor) -> Tensor:
    return nn.functional.binary_cross_entropy_with_logits(outputs.squeeze(-1), targets)


def breast_cancer_problem(seed: int) -> Problem:
    """Logistic regression (a linear layer and the mean binary cross-entropy, float64) on breast cancer; E* is the
    minimum of the training loss, found by scipy's L-BFGS from zero to a gradient norm below 1e-10."""
    split = breast_cancer(seed=seed)
    gen = torch.Generator().manual_seed(seed)
    model = nn.Linear(30, 1).double()
    with torch.no_grad():
        model.weight.normal_(0.0, 0.1, generator=gen)
        model.bias.zero_()
    problem = Problem("breast-cancer", model, _bce, (split.x_train, split.labels_train.double()), split.x_test,
                      split.labels_test, lambda out: (out.squeeze(-1) > 0).long())
    problem.e_star = optimal_loss(problem.objective())
    return problem


def optimal_loss(obj: Objective) -> float:
    """min E by L-BFGS (scipy) on the flat float64 objective, from θ = 0; a convex problem's E*."""
    from scipy.optimize import minimize

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        theta = torch.as_tensor(x, dtype=torch.float64)
        loss, grad = obj.loss_and_grad(theta)
        return float(loss), grad.detach().numpy().astype(np.float64)

    result = minimize(fun, np.zeros(obj.dim), jac=True, method="L-BFGS-B",
                      options={"gtol": 1e-10, "ftol": 1e-15, "maxiter": 100_000})
    if not np.linalg.norm(fun(result.x)[1]) < 1e-6:
        raise ValueError(f"{obj.name}: L-BFGS did not find the minimum (‖g‖ = {np.linalg.norm(result.jac):.1e})")
    return float(result.fun)


def controller(spec: str, problem: Problem, minibatch: bool = False) -> tuple[StepController, str, float]:
    """(controller, display label, the runner's base rate) for a method spec (table in the module docstring)."""
    kind, _, arg = spec.partition(":")
    if kind not in KINDS:
        raise ValueError(f"unknown method {spec!r}; valid kinds: {', '.join(KINDS)} (optionally kind:number)")
    try:
        number = float(arg) if arg else None
    except ValueError:
        raise ValueError(f"method {spec!r}: {arg!r} is not a number") from None
    if kind == "constant":
        if number is None:
            raise ValueError(f"method {spec!r}: constant needs a rate, e.g. constant:0.1")
        return get_controller("constant", lr=number), f"{'SGD' if minibatch else 'GD'} h={arg}", number
    if kind == "polyak":
        if minibatch or not math.isfinite(problem.e_star):
            raise ValueError(f"method {spec!r} needs the optimal loss E*: full batch on a problem that knows it")
        return get_controller("clr", e_star=problem.e_star), "Polyak (exact E*)", 0.1
    choices: dict[str, dict[str, Any]] = {
        "clr": {} if number is None else {"max_lr": number},
        "sps": {"max_lr": 1.0 if number is None else number},
        "alig": {"max_lr": 1.0 if number is None else number},
        "dal": {"p": 1.0 if number is None else number, **({"hvp": "finite_difference"} if minibatch else {})},
        "wngrad": {"lr": 0.1 if number is None else number},
        "pal": {} if number is None else {"mu": number},
        "alice": {"lr": 0.01 if number is None else number}}
    settings = choices[kind]
    cap = settings.get("max_lr", math.inf)
    names = {"clr": "CLR" if number is None else f"CLR (cap {cap:g})", "sps": f"SPS_max (γ_b {cap:g})",
             "alig": f"ALI-G (η {cap:g})", "dal": f"DAL-{settings.get('p', 1.0):g}", "wngrad": "WNGrad", "pal": "PAL",
             "alice": "Alice"}
    return get_controller(kind, **settings), names[kind], settings.get("lr", 0.1)


def _flat(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad])


def fullbatch(problem: Problem, spec: str, steps: int, sharpness_every: int, eval_every: int, ctx
              ) -> tuple[dict, Any]:
    """One full-batch run; (summary row, trajectory)."""
    obj = problem.objective()
    assert obj.theta0 is not None  # from_module sets it
    theta0 = obj.check_theta(obj.theta0.to(ctx.device))
    control, label, base = controller(spec, problem)
    detector = EoSDetector(sharpness_every=sharpness_every)
    test_x = problem.test_x.to(ctx.device)

    def test_accuracy(c, rec: Recorder) -> None:
        if c.step % eval_every == 0:
            params = obj.layout.unflatten(c.theta) if obj.layout is not None else {}
            with torch.no_grad():
                out = torch.func.functional_call(problem.model, params, (test_x,))
            rec.log("test_acc", problem.accuracy(out.cpu()))

    spent = [0.0]  # seconds in the diagnostics, not counted in the step time

    def diagnostics(c: StepContext, decision: StepDecision, rec: Recorder) -> None:
        tick = time.perf_counter()
        detector(c, decision, rec)
        test_accuracy(c, rec)
        spent[0] += time.perf_counter() - tick

    start = time.perf_counter()
    bound = BLOW_UP * max(1.0, float(obj.loss(theta0)))
    traj = gradient_descent(obj, theta0, lr=base, steps=steps, controller=control, states="none",
                            callbacks=[diagnostics], progress=ctx.progress, max_loss=bound)
    seconds = time.perf_counter() - start - spent[0]
    acc = traj.metric("test_acc")
    lr, sharp = traj.metric("lr"), traj.metric("sharpness")
    return _row(problem, label, traj.status, np.asarray(traj.losses, dtype=float),
                float(acc[np.isfinite(acc)][-1]) if np.isfinite(acc).any() else math.nan, lr, sharp,
                seconds / max(len(traj) - 1, 1)), traj


def _row(problem: Problem, label: str, status: str, losses: np.ndarray, accuracy: float, lr: np.ndarray,
         sharp: np.ndarray, seconds_per_step: float) -> dict:
    measured = np.isfinite(lr) & np.isfinite(sharp)
    loss = float(losses[-1])
    return {"problem": problem.name, "method": label, "status": status, "final train loss": loss,
            "best train loss": float(np.nanmin(losses)),
            "E − E*": loss - problem.e_star if math.isfinite(problem.e_star) else math.nan,
            "test acc": accuracy, "median lr": float(np.nanmedian(lr)) if np.isfinite(lr).any() else math.nan,
            "beyond the edge (hλ/2 > 1)": float(np.mean(lr[measured] * sharp[measured] / 2 > 1))
            if measured.any() else math.nan,
            "ms/step": 1e3 * seconds_per_step}  # the optimizer's own work, diagnostics excluded


def minibatch(problem: Problem, spec: str, epochs: int, batch_size: int, sharpness_every: int, ctx,
              seed: int) -> dict:
    """One mini-batch run with the controller's ``torch.optim`` form; the per-epoch curves and a summary row.
    ``sharpness_every`` = 0 measures no sharpness; ``seed`` orders the batches."""
    control, label, _ = controller(spec, problem, minibatch=True)
    model = problem.model.to(ctx.device)
    x, y = (t.to(ctx.device) for t in problem.train)
    opt = ControllerOptimizer(model.parameters(), control)
    obj, tracker = problem.objective(), EigenTracker(k=1)
    gen = torch.Generator().manual_seed(seed)
    calls, seconds = [0], 0.0
    curves: dict[str, Any] = {"label": label, "status": "complete", "train_loss": [], "test_acc": [], "lr": [],
                              "sharpness": [], "sharpness_lr": [], "epoch_steps": []}

    def record() -> None:
        with torch.no_grad():
            curves["train_loss"].append(float(problem.loss_fn(model(x), y)))
            curves["test_acc"].append(problem.accuracy(model(problem.test_x.to(ctx.device)).cpu()))

    record()
    bound = BLOW_UP * max(1.0, curves["train_loss"][0])
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen).to(ctx.device)
        for begin in range(0, len(x), batch_size):
            idx = order[begin:begin + batch_size]

            def closure(xb=x[idx], yb=y[idx]):
                calls[0] += 1
                opt.zero_grad()
                loss = problem.loss_fn(model(xb), yb)
                loss.backward()
                return loss

            tick = time.perf_counter()
            refused = opt.refused_steps
            opt.step(closure)
            seconds += time.perf_counter() - tick
            ctx.check()
            if opt.refused_steps > refused:
                curves["status"] = "diverged"
                break
            curves["lr"].append(float(opt.last_info.get("lr", math.nan)))
            if sharpness_every and (len(curves["lr"]) - 1) % sharpness_every == 0:
                curves["sharpness"].append(float(tracker.update(obj, _flat(model)).values[0]))
                curves["sharpness_lr"].append(curves["lr"][-1])
        record()
        curves["epoch_steps"].append(len(curves["lr"]))
        if curves["status"] != "complete" or not curves["train_loss"][-1] < bound:
            curves["status"] = "diverged"
            break
    steps = max(len(curves["lr"]), 1)
    curves["evaluations"], curves["ms_per_step"] = calls[0], 1e3 * seconds / steps
    curves["row"] = _row(problem, label, curves["status"], np.asarray(curves["train_loss"]), curves["test_acc"][-1],
                         np.asarray(curves["sharpness_lr"], dtype=float), np.asarray(curves["sharpness"], dtype=float),
                         seconds / steps)
    return curves
