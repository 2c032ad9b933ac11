"""Learning-rate controllers on the digits MLP, full batch and mini-batch, and on two toys.

Full batch (``flows.gradient_descent`` with ``controller=``): constant GD at
several rates, the corridor rate CLR, DAL-p for p ∈ {0.5, 1, 2}, WNGrad, PAL
and Alice, with the sharpness (every ``sharpness_every`` steps) and the test
accuracy (every ``eval_every`` steps) recorded. Mini-batch: the same methods
as ``torch.optim`` optimizers in an ordinary loop (DAL with finite-difference
Hg). Toys: the PF quadratic and the corridor x + y². Wall time per step
excludes the diagnostics (sharpness, test accuracy).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from analysis import EoSDetector, get_controller, plots
from experiments.cli.common import read_json, read_table, save_figure, write_json, write_table
from experiments.cli.context import RunContext
from experiments.zoo.datasets import check_data, check_digits_widths, digits_objective
from experiments.zoo.training import digits_problem, minibatch
from flows import Recorder, StepContext, StepDecision, Trajectory, gradient_descent
from flows.objective import toys
from flows.objective.layout import ParameterLayout

# spec → (controller name, the keyword its number sets, display name)
KINDS = {"constant": ("constant", "lr", "GD"), "clr": ("clr", "max_lr", "CLR"), "dal": ("dal", "p", "DAL"),
         "wngrad": ("wngrad", "lr", "WNGrad"), "pal": ("pal", "mu", "PAL"), "alice": ("alice", "lr", "Alice")}


def parse_method(spec: str) -> tuple[str, dict, str]:
    """``"dal:1"`` → ("dal", {"p": 1.0}, "DAL-1"); ``"constant:0.2"`` → ("constant", {"lr": 0.2}, "GD h=0.2")."""
    kind, _, arg = spec.partition(":")
    if kind not in KINDS:
        raise ValueError(f"unknown method {spec!r}; valid kinds: {', '.join(KINDS)} (optionally kind:number)")
    name, key, label = KINDS[kind]
    kw = {}
    if arg:
        try:
            kw[key] = float(arg)
        except ValueError:
            raise ValueError(f"method {spec!r}: {arg!r} is not a number") from None
    if kind == "constant":
        if not kw:
            raise ValueError(f"method {spec!r}: constant needs a rate, e.g. constant:0.1")
        label = f"GD h={arg}"
    elif kind == "dal":
        label = f"DAL-{arg or '1'}"
    elif arg:
        label = f"{label} ({key}={arg})"
    return name, kw, label


@dataclass
class Config:
    steps: int = 500
    """Full-batch steps per method."""
    methods: tuple[str, ...] = ("constant:0.02", "constant:0.2", "clr", "dal:0.5", "dal:1", "dal:2", "wngrad:1",
                                "pal", "alice:0.01")
    """Full-batch methods, as 'kind[:number]' specs (``experiments.zoo.training``)."""
    minibatch_methods: tuple[str, ...] = ("constant:0.05", "constant:0.2", "clr:5", "dal:1", "wngrad:1", "pal",
                                          "alice:0.01")
    """Mini-batch methods, as 'kind[:number]' specs."""
    epochs: int = 20
    """Mini-batch epochs per method."""
    batch_size: int = 64
    """Examples per mini-batch."""
    toy_steps: int = 30
    """Steps on each of the two toys."""
    sharpness_every: int = 25
    """Measure λ_max every this many full-batch steps."""
    eval_every: int = 10
    """Measure the test accuracy every this many steps."""
    n_train: int = 0
    """Training examples (0: the whole training split, 1500 images)."""
    widths: tuple[int, ...] = (64, 200, 200, 10)
    """The fc-tanh MLP's layer widths (64 inputs, 10 outputs)."""
    data: str = "digits"
    """Data set: 'digits', or a classification set of experiments.zoo.papers (mnist1d, moons, circles, cohen-5k:PATH,
    cf-1k-4class:PATH, eoss-seeded:PATH); the MLP's first and last widths follow it."""

    def validate(self) -> None:
        check_data(self.data)
        check_digits_widths(self.widths)
        for spec in self.methods + self.minibatch_methods:
            parse_method(spec)
        if not self.methods:
            raise ValueError("methods must name at least one method")
        for name in ("steps", "epochs", "batch_size", "toy_steps", "sharpness_every", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.n_train < 0:
            raise ValueError(f"n_train must be ≥ 0, got {self.n_train}")


class _Timed:
    """Wraps a diagnostic callback and accumulates its wall time (to subtract from the step time)."""

    def __init__(self, fn) -> None:
        self.fn, self.seconds = fn, 0.0

    def __call__(self, ctx: StepContext, decision: StepDecision, recorder: Recorder) -> None:
        t0 = time.perf_counter()
        self.fn(ctx, decision, recorder)
        self.seconds += time.perf_counter() - t0


def _accuracy(model, names, shapes, theta, x, labels) -> float:
    params = ParameterLayout(tuple(names), tuple(shapes)).unflatten(theta)
    with torch.no_grad():
        out = torch.func.functional_call(model, params, (x,))
    return float((out.argmax(1) == labels).float().mean())


def run(config: Config, out: Path, ctx: RunContext) -> None:
    rows = []
    for spec in config.methods:
        stem = out / "fullbatch" / _stem(spec)
        rows.append(ctx.unit(f"fullbatch/{spec}", lambda spec=spec: _fullbatch(spec, config, out, ctx),
                             lambda stem=stem: read_json(stem.with_name(stem.name + ".row.json"))))
    minibatch = {}
    for spec in config.minibatch_methods:
        path = out / "minibatch" / f"{_stem(spec)}.json"

        def compute(spec=spec, path=path) -> dict:
            result = _minibatch(spec, config, ctx)
            write_json(path, result)
            return result

        result = ctx.unit(f"minibatch/{spec}", compute, lambda path=path: read_json(path))
        minibatch[spec] = result
        rows.append({"setting": f"mini-batch {config.batch_size}", "method": result["label"],
                     "status": result["status"], "final train loss": result["train_loss"][-1],
                     "test acc": result["test_acc"][-1],
                     "grad evals/step": result["evaluations"] / max(len(result["lr"]), 1),
                     "ms/step": result["ms_per_step"], "median lr": float(np.nanmedian(result["lr"]))})
    write_json(out / "minibatch.json", minibatch)
    ctx.unit("toys", lambda: _toys(config, out), lambda: None)
    print(write_table(out / "summary.csv", rows))


def _fullbatch(spec: str, config: Config, out: Path, ctx) -> dict:
    """One full-batch run: saves the trajectory and its summary row (``NAME.row.json``)."""
    obj, split, model = digits_objective(seed=ctx.seed, n_train=config.n_train or None, widths=config.widths,
                                             data=config.data)
    dev = ctx.device
    theta0 = obj.theta0.to(dev)
    x_test, labels_test = split.x_test.to(dev), split.labels_test.to(dev)
    name, kw, label = parse_method(spec)
    det = _Timed(EoSDetector(sharpness_every=config.sharpness_every))

    def test_acc(c: StepContext, decision: StepDecision, rec: Recorder, every: int = config.eval_every) -> None:
        if c.step % every == 0:
            rec.log("test_acc",
                    _accuracy(model, obj.parameter_names, obj.parameter_shapes, c.theta, x_test, labels_test))

    acc = _Timed(test_acc)
    controller = get_controller(name, **kw)
    t0 = time.perf_counter()
    traj = gradient_descent(obj, theta0, lr=kw.get("lr", 0.1), steps=config.steps, controller=controller,
                            states="none", callbacks=[det, acc], progress=ctx.progress)
    wall = time.perf_counter() - t0 - det.seconds - acc.seconds
    ctx.check()
    traj.config.update(method=spec, label=label)
    stem = out / "fullbatch" / _stem(spec)
    traj.save(stem)
    n = len(traj) - 1
    evals = traj.metric("evaluations")
    accs = traj.metric("test_acc")
    row = {"setting": "full batch", "method": label, "status": traj.status,
           "final train loss": float(traj.losses[-1]),
           "test acc": float(accs[np.isfinite(accs)][-1]) if np.isfinite(accs).any() else math.nan,
           "grad evals/step": float(evals[n - 1] / n) if n else math.nan,
           "ms/step": 1e3 * wall / max(n, 1),
           "median lr": float(np.nanmedian(traj.metric("lr")))}
    write_json(stem.with_name(stem.name + ".row.json"), row)
    return row


def _toys(config: Config, out: Path) -> None:
    toy_rows = []
    for toy in ("pf-quadratic", "corridor-xy2"):
        t_obj = toys.get(toy)
        for spec in config.methods:
            name, kw, label = parse_method(spec)
            traj = gradient_descent(t_obj, lr=kw.get("lr", 0.1), steps=config.toy_steps,
                                    controller=get_controller(name, **kw), states="none", max_loss=1e6)
            toy_rows.append({"toy": toy, "method": label, "status": traj.status, "E(θ0)": float(traj.losses[0]),
                             f"E after {config.toy_steps} steps": float(traj.losses[-1])})
    write_table(out / "toys.csv", toy_rows)


def _minibatch(spec: str, config: Config, ctx) -> dict:
    """One mini-batch run with the ``torch.optim`` form of the controller (:func:`experiments.zoo.training.minibatch`,
    DAL with finite-difference Hg, batches ordered by the run's seed)."""
    problem = digits_problem(ctx.seed, config.n_train, config.widths, config.data)
    return minibatch(problem, spec, config.epochs, config.batch_size, 0, ctx, ctx.seed)


def _stem(spec: str) -> str:
    """A file name for a method spec ("constant:0.02" → "constant_0p02"; dots would read as suffixes)."""
    return spec.replace(":", "_").replace(".", "p")


def _style(i: int) -> dict:
    return {"color": plots.CYCLE[i % len(plots.CYCLE)], "linestyle": ("-", "--", ":", "-.")[i // len(plots.CYCLE) % 4]}


def plot(out: Path, figures: Path) -> list[Path]:
    methods = read_json(out / "manifest.json").get("config", {}).get("methods", [])
    paths = [out / "fullbatch" / f"{_stem(spec)}.npz" for spec in methods]  # the files this run wrote, in order
    if not paths:
        raise FileNotFoundError(f"{out / 'manifest.json'} lists no full-batch methods")
    runs = [Trajectory.load(p) for p in paths]
    minibatch = read_json(out / "minibatch.json")
    read_table(out / "summary.csv")
    with plots.style():
        fig, axes = plots.subplots(9, ncols=3, width=3.6, height=2.7)
        labels = [t.config.get("label", "?") for t in runs] + [r["label"] for r in minibatch.values()]
        index = {lab: i for i, lab in enumerate(dict.fromkeys(labels))}  # one style per method in every panel
        for traj in runs:
            lab = traj.config.get("label", "?")
            st = _style(index[lab])
            steps = np.arange(len(traj))
            evals = np.concatenate([[0.0], traj.metric("evaluations")[:-1]])
            acc = traj.metric("test_acc")
            ok = np.isfinite(acc)
            axes[0].semilogy(steps, traj.losses, label=lab, **st)
            axes[1].semilogy(evals, traj.losses, **st)
            axes[2].plot(steps[ok], acc[ok], **st)
            axes[3].semilogy(steps[:-1], traj.metric("lr")[:-1], lw=0.7, **st)
            sharp, lr = traj.metric("sharpness"), traj.metric("lr")
            m = np.isfinite(sharp) & np.isfinite(lr) & (lr > 0)
            if traj.config.get("controller") != "Alice":  # Alice's rate φ scales per-coordinate steps
                axes[4].semilogy(steps[m], sharp[m] * lr[m] / 2, marker="o", ms=2, **st)
            axes[5].plot(evals[ok], acc[ok], **st)
        axes[4].axhline(1.0, color="0.3", lw=0.8)
        for res in minibatch.values():
            st = _style(index[res["label"]])
            epochs = np.arange(len(res["train_loss"]))
            axes[6].semilogy(epochs, res["train_loss"], label=res["label"], **st)
            axes[7].plot(epochs, res["test_acc"], **st)
            axes[8].semilogy(np.arange(len(res["lr"])), res["lr"], lw=0.6, **st)
        titles = [("full batch: train loss", "GD step", "½‖f − y‖² (train)"),
                  ("full batch: cost", "gradient/loss evaluations", "½‖f − y‖² (train)"),
                  ("full batch: test accuracy", "GD step", "test accuracy"),
                  ("full batch: chosen rate", "GD step", "learning rate hₙ"),
                  ("sharpness vs 2/h", "GD step", "λ_max·hₙ / 2   (1 = edge of stability)"),
                  ("full batch: test accuracy vs cost", "gradient/loss evaluations", "test accuracy"),
                  ("mini-batch: train loss", "epoch", "½‖f − y‖² (full train set)"),
                  ("mini-batch: test accuracy", "epoch", "test accuracy"),
                  ("mini-batch: chosen rate", "optimizer step", "learning rate hₙ")]
        for ax, (title, xl, yl) in zip(axes, titles):
            ax.set_title(title)
            ax.set_xlabel(xl)
            ax.set_ylabel(yl)
        for ax in (axes[2], axes[5], axes[7]):
            ax.set_ylim(0.8, 1.0)
        axes[0].legend(ncol=2, fontsize=7)
        axes[6].legend(ncol=2, fontsize=7)
        fig.suptitle("Learning-rate controllers on the digits fc-tanh MLP (MSE)")
        return save_figure(fig, figures, "controllers_digits")
