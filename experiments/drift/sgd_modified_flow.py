"""SGD's modified flow on digits: mean SGD epoch endpoints against the modified flow and against gradient flow.

Smith, Dherin, Barrett, De 2021 (arXiv 2101.12176): with random shuffling, the *mean* SGD iterate after an epoch of
m batches follows θ' = −∇[E + (h/4m) Σₖ ‖∇E_k‖²] to O(m³h³) (flow ``sgd_modified``), while gradient flow on E is
off by O(m²h²). Here, for ``epochs`` epochs of the digits fc-tanh MLP (½-MSE, batch ``batch_size``, rate h): each
epoch draws one partition into m batches; ``runs`` SGD runs visit its batches in independent random orders from
the same start (the previous epoch's mean endpoint), and the modified flow and gradient flow (on the epoch's loss
Σₖ E_k/m) are integrated over the epoch's time m·h (RK4, h/``substeps``) from the same start. Reported per epoch:
‖mean SGD − modified flow‖, ‖mean SGD − gradient flow‖, the spread of single runs around their mean (the noise a
single run carries) and the noise floor of the mean, spread/√runs (distances below it are not resolved).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from analysis import plots
from experiments.cli.common import read_json, save_figure, write_json, write_table
from experiments.cli.context import RunContext
from experiments.zoo.datasets import (
    check_data,
    check_digits_widths,
    fc_tanh,
    fitted_widths,
    half_mse,
    load_split,
)
from flows import integrate
from flows.curvature.stochastic import MiniBatches, piece_grad


@dataclass
class Config:
    batch_size: int = 64
    """Examples per SGD batch."""
    lr: float = 0.05
    """SGD's learning rate h."""
    epochs: int = 20
    """Epochs; endpoints are compared after each."""
    runs: int = 64
    """SGD runs (shuffles) averaged for the mean epoch endpoint."""
    substeps: int = 2
    """RK4 steps per SGD step for the flows."""
    n_train: int = 0
    """Training examples (0: the whole digits training split)."""
    widths: tuple[int, ...] = (64, 200, 200, 10)
    """The fc-tanh MLP's layer widths (64 inputs, 10 outputs)."""
    data: str = "digits"
    """Data set: 'digits', or a classification set of experiments.zoo.papers (mnist1d, moons, circles, cohen-5k:PATH,
    cf-1k-4class:PATH, eoss-seeded:PATH); the MLP's first and last widths follow it."""

    def validate(self) -> None:
        check_data(self.data)
        check_digits_widths(self.widths)
        for name in ("batch_size", "epochs", "runs", "substeps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.runs < 2:
            raise ValueError(f"runs must be ≥ 2 (a mean and a spread), got {self.runs}")
        if not self.lr > 0 or self.n_train < 0:
            raise ValueError("lr must be > 0 and n_train ≥ 0")


def run(config: Config, out: Path, ctx: RunContext) -> None:
    split = load_split(config.data, seed=ctx.seed, n_train=config.n_train or None)
    model = fc_tanh(fitted_widths(config.widths, split), seed=ctx.seed)
    batches = MiniBatches(model, half_mse, split.train, config.batch_size, seed=ctx.seed)  # names a bad batch_size
    rows = ctx.unit("epochs", lambda: _epochs(batches, config, out, ctx), lambda: read_json(out / "epochs.json"))
    print(write_table(out / "sgd_modified_flow.csv", [rows[i] for i in sorted({0, 4, 9, len(rows) - 1})
                                                      if i < len(rows)]))


def _epochs(batches: MiniBatches, config: Config, out: Path, ctx) -> list[dict]:
    h = config.lr
    generator = torch.Generator().manual_seed(ctx.unit_seed("orders"))
    theta = None
    rows = []
    for e in range(1, config.epochs + 1):
        epoch = batches.epoch()
        if theta is None:
            assert epoch.theta0 is not None  # from_module sets it
            theta = epoch.theta0.to(ctx.device)
        m = len(epoch.pieces)
        ends = []
        for _ in range(config.runs):
            state = theta.clone()
            for k in torch.randperm(m, generator=generator).tolist():
                state = state - h * piece_grad(epoch, k, state)
            ends.append(state)
        stack = torch.stack(ends)
        mean = stack.mean(dim=0)
        flows = {}
        for name, options in (("sgd_modified", {"epoch": epoch}), ("gf", None)):
            traj = integrate(epoch, theta, h, flow=name, times=[0.0, m * h], method="rk4",
                             step_size=h / config.substeps,
                             flow_options=options, progress=False)
            flows[name] = torch.as_tensor(traj.state_matrix()[-1], dtype=theta.dtype, device=theta.device)
        modified, gradient = flows["sgd_modified"], flows["gf"]
        ctx.check()
        rows.append({"epoch": e, "batches m": m, "t = e·m·h": round(e * m * h, 4),
                     "‖mean SGD − modified flow‖": float(f"{(mean - modified).norm():.4g}"),
                     "‖mean SGD − gradient flow‖": float(f"{(mean - gradient).norm():.4g}"),
                     "single-run spread (rms)": float(f"{(stack - mean).norm(dim=1).pow(2).mean().sqrt():.4g}"),
                     "noise floor of the mean": float(
                         f"{(stack - mean).norm(dim=1).pow(2).mean().sqrt() / config.runs ** 0.5:.4g}"),
                     "step of the epoch ‖Δθ‖": float(f"{(mean - theta).norm():.4g}"),
                     "loss at the mean": float(f"{float(epoch.loss(mean)):.5g}")})
        theta = mean
    write_json(out / "epochs.json", rows)
    return rows


def plot(out: Path, figures: Path) -> list[Path]:
    rows = read_json(out / "epochs.json")
    epochs = [r["epoch"] for r in rows]
    with plots.style():
        fig, (ax,) = plots.subplots(1, height=3.2, width=5.0)
        ax.semilogy(epochs, [r["‖mean SGD − modified flow‖"] for r in rows], "o-", color=plots.color("igr"),
                    label="mean SGD − modified flow")
        ax.semilogy(epochs, [r["‖mean SGD − gradient flow‖"] for r in rows], "o-", color=plots.color("gf"),
                    label="mean SGD − gradient flow")
        ax.semilogy(epochs, [r["single-run spread (rms)"] for r in rows], ":", color="k",
                    label="one run − mean SGD (rms)")
        if "noise floor of the mean" in rows[0]:
            ax.semilogy(epochs, [r["noise floor of the mean"] for r in rows], "--", color="0.5",
                        label="noise floor of the mean (spread/√runs)")
        ax.set_xlabel("epoch (each from the previous mean endpoint)")
        ax.set_ylabel("distance after one epoch")
        ax.legend(fontsize=7)
        ax.set_title("SGD's modified flow on the digits MLP", fontsize=9)
        return save_figure(fig, figures, "sgd_modified_flow")
