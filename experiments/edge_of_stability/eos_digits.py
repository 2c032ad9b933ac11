"""Edge of stability on digits (MLP or CNN) or a local CIFAR-10: sharpness against 2/h, GD–GF distance, PF coefficients.

Full-batch GD at several learning rates on one of two architectures
(``arch``): the fc-tanh MLP with ½-MSE (Cohen et al. 2021's MSE setting), or a
small CNN on the 8×8 digits images with cross-entropy (``--set arch=cnn``, the
second architecture and loss). ``--set data=cifar10:PATH`` runs on a local copy
of CIFAR-10 (python batches; the first ``n_train`` training images, 2048 when
``n_train`` is 0) with the CNN.
Every ``sharpness_every`` steps the top-k Hessian eigenvalues are tracked
(warm-started Lanczos), giving λ_max and the PF stability coefficients
Re c(hλᵢ), c(x) = log(1 − x)/x. The gradient flow from the same θ₀ is
integrated (RK4) and compared with GD every ``gf_every`` steps. The
:class:`analysis.EoSDetector` then reports progressive sharpening, the first
crossing of 2/h, hovering, loss spikes and the step where GD and GF separate.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from analysis import EoSDetector, plots
from experiments.cli.common import number_key, read_json, save_figure, write_json, write_table
from experiments.cli.context import RunContext
from experiments.zoo.datasets import (
    check_data,
    check_digits_widths,
    cifar10,
    digits,
    digits_objective,
    fc_tanh,
    fitted_widths,
    half_mse,
    load_split,
    shard,
)
from experiments.zoo.papers import CIFAR_PRESETS
from flows import Objective, Recorder, StepContext, StepDecision, Trajectory, gradient_descent, integrate


@dataclass
class Config:
    lrs: tuple[float, ...] = (0.02, 0.1, 0.2)
    """GD's learning rates h."""
    steps: int = 600
    """GD steps per rate."""
    sharpness_every: int = 20
    """Measure the top-k eigenvalues every this many steps."""
    k: int = 4
    """Top eigenvalues tracked (and the PF coefficients Re c(hλᵢ) reported)."""
    gf_every: int = 20
    """Compare GD with the gradient flow every this many steps."""
    gf_step: float = 0.1
    """RK4 step for the gradient flow (capped at h)"""
    n_train: int = 0
    """Training examples (0: the whole training split; 2048 images for CIFAR-10)."""
    widths: tuple[int, ...] = (64, 200, 200, 10)
    """The MLP's layers."""
    arch: str = "mlp"
    """'mlp' (fc-tanh, ½-MSE) or 'cnn' (two conv-tanh layers + linear, cross-entropy)"""
    data: str = "digits"
    """'digits', 'cifar10:PATH' (a local folder of the python batches; arch=cnn), a CIFAR preset (cohen-5k:PATH,
    cf-1k-4class:PATH, eoss-seeded:PATH) or, for the MLP, mnist1d, moons or circles; the widths' ends follow it."""
    channels: int = 16
    """The CNN's channels per conv layer."""
    loss: str = "auto"
    """'auto' (½-MSE for the MLP, cross-entropy for the CNN), 'mse' or 'ce'."""

    def validate(self) -> None:
        check_digits_widths(self.widths)
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if not self.data.startswith("cifar10:"):
            check_data(self.data)  # digits, another classification set or a CIFAR preset (NAME:PATH)
            if self.arch == "cnn" and self.data.split(":")[0] not in ("digits", *CIFAR_PRESETS):
                raise ValueError(f"arch=cnn takes images: data 'digits', 'cifar10:PATH' or a CIFAR preset "
                                 f"({', '.join(f'{n}:PATH' for n in CIFAR_PRESETS)}), got {self.data!r}")
        if self.data.startswith("cifar10:"):
            if self.arch != "cnn":
                raise ValueError("data=cifar10:PATH needs arch=cnn (the images are 3×32×32)")
            folder = Path(self.data.split(":", 1)[1]).expanduser()
            if not (folder / "data_batch_1").exists():
                raise ValueError(f"data: no CIFAR-10 python batches in {str(folder)!r} (expected data_batch_1..5 "
                                 "and test_batch from cifar-10-python.tar.gz; nothing is downloaded)")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.channels < 1:
            raise ValueError(f"channels must be ≥ 1, got {self.channels}")
        if not self.lrs or any(h <= 0 for h in self.lrs):
            raise ValueError(f"lrs must be positive, got {self.lrs}")
        for name in ("steps", "sharpness_every", "k", "gf_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if not self.gf_step > 0 or self.n_train < 0:
            raise ValueError("gf_step must be > 0 and n_train ≥ 0")


ARCHS = ("mlp", "cnn")
LOSSES = ("auto", "mse", "ce")


def loss_function(config: Config) -> Callable[[Tensor, Tensor], Tensor]:
    """½-MSE (Cohen et al. 2021's MSE: ½‖f − y‖² summed over outputs, averaged over examples) or
    cross-entropy against the one-hot targets; ``auto`` picks MSE for the MLP and cross-entropy for the CNN."""
    return half_mse if _loss_name({"loss": config.loss, "arch": config.arch}) == "mse" else nn.CrossEntropyLoss()


def _loss_name(config: dict) -> str:
    loss, arch = config.get("loss", "auto"), config.get("arch", "mlp")
    return loss if loss != "auto" else ("mse" if arch == "mlp" else "ce")


def small_cnn(in_channels: int, side: int, channels: int = 16, classes: int = 10, seed: int = 0) -> nn.Module:
    """conv3×3-tanh, conv3×3-tanh (each followed by 2×2 max-pooling when the images are ≥ 16 pixels wide),
    flatten, linear: 12,730 parameters on 8×8 digits with 16 channels."""
    pool = side >= 16
    after = side // 4 if pool else side
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        layers: list[nn.Module] = []
        for c_in in (in_channels, channels):
            layers += [nn.Conv2d(c_in, channels, 3, padding=1), nn.Tanh()] + ([nn.MaxPool2d(2)] if pool else [])
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * after * after, classes))
    finally:
        torch.random.set_rng_state(state)


def eos_objective(config: Config, seed: int) -> Objective:
    """The experiment's full-batch objective: digits MLP (½-MSE), digits CNN or CIFAR-10 CNN (cross-entropy)."""
    if config.arch == "mlp" and config.loss in ("auto", "mse"):
        obj, _, _ = digits_objective(seed=seed, n_train=config.n_train or None, widths=config.widths,
                                     data=config.data)
        return obj  # sharded over ranks under torch.distributed, like every objective here
    if config.arch == "mlp":
        split = load_split(config.data, seed=seed, n_train=config.n_train or None)
        return Objective.from_module(fc_tanh(fitted_widths(config.widths, split), seed=seed), loss_function(config),
                                     shard(*split.train), name=f"{config.data.split(':')[0]}-fc-tanh")
    if config.data.split(":")[0] in CIFAR_PRESETS:
        split = load_split(config.data, seed=seed, n_train=config.n_train or None)
        x = split.x_train.reshape(-1, 3, 32, 32)
        side = 32
        c_in = 3
    elif config.data == "digits":
        split = digits(seed=seed, n_train=config.n_train or None)
        x = split.x_train.reshape(-1, 1, 8, 8)
        side = 8
        c_in = 1
    else:
        split = cifar10(config.data.split(":", 1)[1], n_train=config.n_train or 2048, n_test=0)
        x = split.x_train
        side = 32
        c_in = 3
    model = small_cnn(c_in, side, config.channels, seed=seed)
    return Objective.from_module(model, loss_function(config), shard(x, split.y_train),
                                 name=f"{config.data.split(':')[0]}-cnn")


def run(config: Config, out: Path, ctx: RunContext) -> None:
    obj = eos_objective(config, ctx.seed)
    assert obj.theta0 is not None  # from_module sets it
    theta0 = obj.theta0.to(ctx.device)
    rows = []
    for h in config.lrs:
        row_path = out / f"h{number_key(h)}" / "row.json"
        rows.append(ctx.unit(f"h{number_key(h)}",
                             lambda h=h, row_path=row_path: _one_rate(obj, theta0, h, config, out, ctx, row_path),
                             lambda row_path=row_path: read_json(row_path)))
    write_json(out / "eos_summary.json", rows)
    print(write_table(out / "eos_summary.csv", rows))


def _one_rate(obj, theta0, h: float, config: Config, out: Path, ctx, row_path: Path) -> dict:
    """GF on a coarse grid, then GD with the EoS detector and the GD–GF distance; saves both and a summary row."""
    grid = np.arange(0, config.steps + 1, config.gf_every)
    gf = integrate(obj, theta0, h, flow="gf", times=torch.as_tensor(grid * h, dtype=torch.float64), method="rk4",
                   step_size=min(h, config.gf_step), progress=ctx.progress)
    ctx.check()
    gf_states = {int(n): torch.as_tensor(s, dtype=theta0.dtype, device=theta0.device)
                 for n, s in zip(grid, gf.state_matrix())}

    def distances(c: StepContext, decision: StepDecision, rec: Recorder) -> None:
        rec.log("distance_from_start", float(torch.linalg.vector_norm(c.theta - theta0)))
        if c.step in gf_states:
            rec.log("gf_distance", float(torch.linalg.vector_norm(c.theta - gf_states[c.step])))

    det = EoSDetector(sharpness_every=config.sharpness_every, k=config.k)
    gd = gradient_descent(obj, theta0, lr=h, steps=config.steps, states="none", callbacks=[det, distances],
                          progress=ctx.progress)
    ctx.check()
    report = det.detect(gd, drift=gd.metric("gf_distance"))
    gd.events.extend(e.to_dict() for e in report.events)
    gf.states, gf.state_mode = None, "none"
    gd.save(out / f"h{number_key(h)}" / "gd")
    gf.save(out / f"h{number_key(h)}" / "gf")
    sharp = gd.metric("sharpness")
    row = {"h": h, "2/h": 2 / h, "λ_max(θ₀)": float(sharp[0]), "max λ_max": float(np.nanmax(sharp)),
           "progressive sharpening": (report.progressive_sharpening if report.progressive_sharpening is not None
                                      else f"undetermined ({report.sharpening_points} points)"),
           "first crossing (step)": report.first_crossing if report.first_crossing is not None else "none",
           "hover fraction": round(report.hover_fraction, 2), "loss spikes": len(report.spikes),
           "GD–GF separation (step)": report.separation_step if report.separation_step is not None else "none",
           "final loss": float(gd.losses[-1]), "status": gd.status}
    write_json(row_path, row)
    return row


def plot(out: Path, figures: Path) -> list[Path]:
    rows = read_json(out / "eos_summary.json")
    with plots.style():
        fig, axes = plots.subplots(4, ncols=2, width=4.2, height=3.0)
        for i, row in enumerate(rows):
            h = row["h"]
            gd = Trajectory.load(out / f"h{number_key(h)}" / "gd")
            colour = plots.CYCLE[i % len(plots.CYCLE)]
            steps = np.arange(len(gd))
            axes[0].semilogy(steps, gd.losses, color=colour, label=f"GD h={h:g}")
            sharp = gd.metric("sharpness")
            ok = np.isfinite(sharp)
            axes[1].plot(steps[ok], sharp[ok], "o-", ms=2, color=colour, label=f"λ_max, h={h:g}")
            axes[1].axhline(2 / h, color=colour, ls="--", lw=0.9)
            dist = gd.metric("gf_distance")
            ok = np.isfinite(dist)
            axes[2].semilogy(steps[ok][1:], dist[ok][1:], "o-", ms=2, color=colour, label=f"h={h:g}")
            for e in gd.events:
                if e.get("kind") == "eos_crossing":
                    for ax in (axes[1], axes[2]):
                        ax.axvline(e["step"], color=colour, ls=":", lw=1)
        top_sharp = max(r["max λ_max"] for r in rows)
        axes[1].set_ylim(0, 1.5 * top_sharp)  # 2/h lines above this are off the chart (listed in the table)
        top = rows[-1]
        gd = Trajectory.load(out / f"h{number_key(top['h'])}" / "gd")
        steps = np.arange(len(gd))
        for j in range(10):
            name = f"pf_re_c_{j}"
            if name not in gd.metrics:
                break
            rc = gd.metric(name)
            ok = np.isfinite(rc)
            axes[3].plot(steps[ok], rc[ok], "o-", ms=2, label=f"i = {j + 1}")
        axes[3].axhline(0.0, color="0.3", lw=0.8)
        axes[3].axhline(-1.0, color="0.6", lw=0.6, ls=":")
        loss = _loss_name(read_json(out / "manifest.json").get("config", {}))
        axes[0].set(title="train loss", xlabel="GD step",
                    ylabel="½‖f − y‖² (train)" if loss == "mse" else "cross-entropy (train)")
        axes[1].set(title="sharpness and 2/h (dashed); first crossing dotted", xlabel="GD step", ylabel="λ_max")
        axes[2].set(title="distance between GD and the gradient flow", xlabel="GD step n",
                    ylabel="‖θ_GD(n) − θ_GF(n·h)‖")
        axes[3].set(title=f"PF coefficients Re c(hλᵢ), top {len(axes[3].lines) - 2}, h = {top['h']:g}",
                    xlabel="GD step",
                    ylabel="Re c(hλᵢ)  (> 0: growing, < 0: decaying; GF is −1)")
        for ax in axes:
            ax.legend(fontsize=7)
        config = read_json(out / "manifest.json").get("config", {})
        arch, data = config.get("arch", "mlp"), config.get("data", "digits")
        what = ("fc-tanh MLP" if arch == "mlp" else "CNN") + (", ½-MSE" if loss == "mse" else ", cross-entropy")
        fig.suptitle(f"Edge of stability: {data.split(':')[0]} {what}, full batch")
        stem = "eos_digits" if arch == "mlp" else f"eos_{data.split(':')[0]}_cnn"
        stem += "" if loss == ("mse" if arch == "mlp" else "ce") else f"_{loss}"  # a non-default loss
        return save_figure(fig, figures, stem)


def plot_seeds(folders: list[Path], figures: Path) -> list[Path]:
    """Loss, sharpness and GD–GF distance per rate: the mean over seeds with a ± 1 sd band."""
    rows = read_json(folders[0] / "eos_summary.json")
    config = read_json(folders[0] / "manifest.json").get("config", {})
    with plots.style():
        fig, axes = plots.subplots(3, ncols=3, width=4.2, height=3.0)
        for i, row in enumerate(rows):
            h, colour = row["h"], plots.CYCLE[i % len(plots.CYCLE)]
            runs = [Trajectory.load(f / f"h{number_key(h)}" / "gd") for f in folders]
            n = min(len(t) for t in runs)
            steps = np.arange(n)
            plots.mean_band(axes[0], steps, [t.losses[:n] for t in runs], color=colour, label=f"h={h:g}", log=True)
            for ax, name in ((axes[1], "sharpness"), (axes[2], "gf_distance")):
                series = np.array([t.metric(name)[:n] for t in runs])
                measured = np.isfinite(series).any(axis=0)
                plots.mean_band(ax, steps[measured], series[:, measured], color=colour, label=f"h={h:g}",
                                marker="o", ms=2, log=name == "gf_distance")
            axes[1].axhline(2 / h, color=colour, ls="--", lw=0.9)
        top = max(float(np.nanmax(Trajectory.load(f / f"h{number_key(r['h'])}" / "gd").metric("sharpness")))
                  for f in folders for r in rows)
        axes[1].set_ylim(0, 1.5 * top)
        axes[0].set(title="train loss", xlabel="GD step")
        axes[1].set(title="sharpness and 2/h (dashed)", xlabel="GD step", ylabel="λ_max")
        axes[2].set(title="distance between GD and the gradient flow", xlabel="GD step",
                    ylabel="‖θ_GD(n) − θ_GF(n·h)‖")
        for ax in axes:
            ax.legend(fontsize=7)
        arch, loss = config.get("arch", "mlp"), _loss_name(config)
        what = ("fc-tanh MLP" if arch == "mlp" else "CNN") + (", ½-MSE" if loss == "mse" else ", cross-entropy")
        fig.suptitle(f"Edge of stability on digits ({what}): mean ± 1 sd over {len(folders)} seeds "
                     "(initialisation and data split)")
        stem = "eos_digits" if arch == "mlp" else "eos_digits_cnn"
        stem += "" if loss == ("mse" if arch == "mlp" else "ce") else f"_{loss}"  # a non-default loss
        return save_figure(fig, figures, stem + "_seeds")
