"""The Hessian kit on the edge-of-stability run: exact loss planes with paths, spectral densities, GGN vs Hessian.

GD at h = ``lr`` on the digits MLP (the run of ``eos-digits`` at h = 0.2) with the top eigenvalues tracked every
``sharpness_every`` steps and the generalised Gauss–Newton matrix's λ_max every ``ggn_every`` steps. Three moments
are taken from the detector's report: half-way to the first crossing of 2/h (progressive sharpening), the crossing,
and the middle of the hovering phase (half-way from the crossing to the end). At each moment θₘ:

* **the (u₁, g) plane**: d₁ = u₁ (the top Hessian eigenvector, unit), d₂ = the gradient's component orthogonal
  to u₁, made unit (so both axes are distances in parameter space); E(θₘ + a·d₁ + b·d₂) is evaluated exactly on
  a ``grid`` × ``grid`` lattice covering the paths. GD's next ``window`` iterates, the gradient flow and the
  principal flow (top-``k``, the rest as gradient flow) from θₘ over the same time are drawn by their
  least-squares coordinates in the plane, and each path's largest distance off the plane is reported: the
  picture is exact for the loss surface, and says how far each path is from it;
* **the Hessian spectral density** by stochastic Lanczos quadrature (``density_starts`` probes ×
  ``density_steps`` steps; Gaussian smoothing of 1% of the node spread), the 2/h line and the top-k eigenvalues
  coloured by their principal-flow regime Re c(hλ);
* **tr H** by Hutch++ (``trace_matvecs`` products, with its standard error), λ_max of the GGN, and the sharpness
  of every layer (the top eigenvalue of that layer's Hessian block).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from analysis import EoSDetector, plots
from experiments.cli.common import read_json, save_figure, write_json, write_table
from experiments.cli.context import RunContext
from experiments.zoo.datasets import check_data, check_digits_widths, digits_objective
from flows import (
    Objective,
    Recorder,
    SpectralDensity,
    StepContext,
    StepDecision,
    Trajectory,
    ggn_eigenpairs,
    gradient_descent,
    hessian_trace,
    integrate,
    loss_plane,
    parameter_eigenpairs,
    plane_coordinates,
    spectral_density,
    top_eigenpairs,
)

MOMENTS = ("before crossing", "at crossing", "hovering")
PATHS = ("gd", "gf", "pf_topk")


@dataclass
class Config:
    lr: float = 0.2
    """GD's learning rate h (0.2 reaches the edge of stability on digits)."""
    steps: int = 600
    """GD steps."""
    sharpness_every: int = 10
    """Measure λ_max every this many steps."""
    ggn_every: int = 20
    """Measure the Gauss–Newton matrix's λ_max every this many steps."""
    k: int = 4
    """Eigenvalues tracked, marked on the densities, and the principal flow's top-k."""
    window: int = 20
    """GD steps drawn from each moment."""
    substeps: int = 4
    """RK4 steps per GD step for the flows."""
    grid: int = 41
    """Points per side of each loss plane."""
    margin: float = 0.3
    """The plane extends this fraction beyond the paths on each side."""
    density_starts: int = 10
    """Random starts (probes) of each stochastic Lanczos spectral density."""
    density_steps: int = 80
    """Lanczos steps per start of each spectral density."""
    trace_matvecs: int = 99
    """Hessian-vector products of each Hutch++ trace estimate."""
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
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for name in ("steps", "sharpness_every", "ggn_every", "k", "window", "substeps", "density_starts",
                     "density_steps", "trace_matvecs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.grid < 3 or not self.margin >= 0 or self.n_train < 0:
            raise ValueError("grid must be ≥ 3, margin ≥ 0 and n_train ≥ 0")
        if self.steps < 4 * self.sharpness_every:
            raise ValueError(f"steps must be ≥ 4·sharpness_every = {4 * self.sharpness_every} (three moments)")


class GGNSharpness:
    """A ``gradient_descent`` callback: λ_max of the Gauss–Newton matrix every ``every`` steps (metric
    ``ggn_sharpness``), Lanczos warm-started from the last eigenvector."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.vector: Tensor | None = None

    def __call__(self, c: StepContext, decision: StepDecision, rec: Recorder) -> None:
        if c.step % self.every:
            return
        pairs = ggn_eigenpairs(c.objective, c.theta, 1, v0=self.vector)
        self.vector = pairs.vectors[:, 0]
        rec.log("ggn_sharpness", float(pairs.values[0]))


def run(config: Config, out: Path, ctx: RunContext) -> None:
    obj, _, _ = digits_objective(seed=ctx.seed, n_train=config.n_train or None, widths=config.widths,
                                 data=config.data)
    assert obj.theta0 is not None  # from_module sets it
    theta0 = obj.theta0.to(ctx.device)
    moments = ctx.unit("run", lambda: _gd_run(obj, theta0, config, out, ctx),
                       lambda: read_json(out / "moments.json"))
    rows = []
    for label, step in moments.items():
        key = label.replace(" ", "-")
        row_path = out / key / "row.json"
        rows.append(ctx.unit(key, lambda step=step, label=label, key=key, row_path=row_path:
                             _moment(obj, config, out, key, label, step, row_path, ctx),
                             lambda row_path=row_path: read_json(row_path)))
    write_json(out / "landscape_summary.json", rows)
    print(write_table(out / "landscape_summary.csv", rows))


def _gd_run(obj: Objective, theta0: Tensor, config: Config, out: Path, ctx) -> dict[str, int]:
    """GD with the EoS detector and the GGN's λ_max; θ saved at every measurement; the three moments chosen."""
    saved: dict[int, Tensor] = {}

    def keep(c: StepContext, decision: StepDecision, rec: Recorder) -> None:
        if c.step % config.sharpness_every == 0:
            saved[c.step] = c.theta.detach().clone()

    det = EoSDetector(sharpness_every=config.sharpness_every, k=config.k)
    gd = gradient_descent(obj, theta0, lr=config.lr, steps=config.steps, states="none",
                          callbacks=[det, GGNSharpness(config.ggn_every), keep], progress=ctx.progress)
    if gd.status != "complete":
        raise ValueError(f"GD at h = {config.lr} ended {gd.status}: no edge-of-stability run to draw")
    report = det.detect(gd)
    gd.events.extend(e.to_dict() for e in report.events)
    gd.save(out / "gd")
    moments = choose_moments(report.first_crossing, config.steps, config.sharpness_every)
    for label, step in moments.items():
        folder = out / label.replace(" ", "-")
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(saved[step].cpu(), folder / "theta.pt")
    write_json(out / "moments.json", moments)
    return moments


def choose_moments(crossing: int | None, steps: int, every: int) -> dict[str, int]:
    """Half-way to the first crossing, the crossing, and half-way from it to the end, on the measurement grid;
    without a crossing, a quarter, half and three quarters of the run (the labels stay, the table says so)."""
    def snap(n: float) -> int:
        return int(min(max(every * round(n / every), every), every * (steps // every)))

    if crossing is None:
        return dict(zip(MOMENTS, (snap(steps / 4), snap(steps / 2), snap(3 * steps / 4))))
    return dict(zip(MOMENTS, (snap(crossing / 2), snap(crossing), snap((crossing + steps) / 2))))


def _paths(obj: Objective, theta: Tensor, config: Config, ctx) -> dict[str, Tensor]:
    """GD's next ``window`` iterates and the GF and PF paths over the same time from θ (rows: t = n·h)."""
    h, n = config.lr, config.window
    gd = gradient_descent(obj, theta, lr=h, steps=n, states="full", progress=ctx.progress)
    paths = {"gd": torch.as_tensor(gd.state_matrix(), dtype=theta.dtype)}
    for name in ("gf", "pf_topk"):
        ctx.check()
        traj = integrate(obj, theta, h, flow=name, steps=n, method="rk4", step_size=h / config.substeps,
                         k=config.k, eig_refresh=h, progress=ctx.progress)
        paths[name] = torch.as_tensor(traj.state_matrix(), dtype=theta.dtype)
    return paths


def plane_directions(obj: Objective, theta: Tensor, u1: Tensor) -> tuple[Tensor, Tensor]:
    """d₁ = u₁/‖u₁‖ and d₂ = the unit component of ∇E(θ) orthogonal to d₁."""
    d1 = u1 / torch.linalg.vector_norm(u1)
    g = obj.grad(theta)
    d2 = g - torch.dot(g, d1) * d1
    norm = torch.linalg.vector_norm(d2)
    if not float(norm) > 1e-12 * float(torch.linalg.vector_norm(g)):
        raise ValueError("the gradient is parallel to u₁: the (u₁, g) plane is a line")
    return d1, d2 / norm


def _moment(obj: Objective, config: Config, out: Path, key: str, label: str, step: int, row_path: Path,
            ctx) -> dict:
    """Plane, paths, density, trace, GGN and per-layer sharpness at one moment; saves them and a table row."""
    folder = out / key
    theta = torch.load(folder / "theta.pt").to(ctx.device)
    top = top_eigenpairs(obj, theta, config.k, tol=1e-4)
    d1, d2 = plane_directions(obj, theta, top.vectors[:, 0])
    paths = _paths(obj, theta, config, ctx)
    ctx.check()
    coords, off_plane = {}, {}
    for name, states in paths.items():
        xy, residual = plane_coordinates(states, theta, d1, d2)
        coords[name], off_plane[name] = xy.tolist(), float(residual.max())
    every = np.concatenate([np.asarray(c) for c in coords.values()])
    alphas, betas = square_grid(every, config.margin, config.grid)
    plane = loss_plane(obj, theta, d1, d2, alphas, betas)
    density = spectral_density(obj, theta, config.density_starts, config.density_steps, seed=ctx.unit_seed(key))
    tr = hessian_trace(obj, theta, config.trace_matvecs, seed=ctx.unit_seed(key))
    ggn = ggn_eigenpairs(obj, theta, 1, tol=1e-4)
    layers = layer_sharpness(obj, theta)
    write_json(folder / "plane.json", {"alphas": plane.alphas.tolist(), "betas": plane.betas.tolist(),
                                       "values": plane.values.tolist()})
    write_json(folder / "density.json", {"nodes": density.nodes.tolist(), "weights": density.weights.tolist(),
                                         "matvecs": density.matvecs})
    write_json(folder / "paths.json", {"coords": coords, "off_plane": off_plane, "eigenvalues": top.values.tolist(),
                                       "lr": config.lr, "step": step, "label": label, "layers": layers})
    h = config.lr
    row = {"moment": label, "step": step, "hλ₁": round(h * float(top.values[0]), 4),
           "hλ₁ (GGN)": round(h * float(ggn.values[0]), 4),
           "tr H (Hutch++)": f"{tr.value:.2f} ± {tr.standard_error:.2f}",
           "density HVPs": density.matvecs,
           **{f"off plane ({name})": f"{off_plane[name]:.2e}" for name in PATHS},
           "GD path length": round(float(torch.linalg.vector_norm(paths["gd"].diff(dim=0), dim=1).sum()), 4),
           **{f"λ₁ layer {name}": round(value, 3) for name, value in layers.items()}}
    write_json(row_path, row)
    return row


def square_grid(points: np.ndarray, margin: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Two axes of ``size`` points with the same span (so the plane is drawn to scale, a circle stays a circle),
    centred on the points' bounding box and ``margin`` of the larger extent beyond it on each side."""
    low, high = points.min(axis=0), points.max(axis=0)
    span = float(max((high - low).max(), 1e-6 * max(np.abs(points).max(), 1.0)))
    centre = (low + high) / 2
    half = span * (0.5 + margin)
    return tuple(np.linspace(c - half, c + half, size) for c in centre)  # type: ignore[return-value]


def layer_sharpness(obj: Objective, theta: Tensor) -> dict[str, float]:
    """The sharpness of each layer (module prefix of the parameter names): λ_max of its Hessian block."""
    assert obj.layout is not None  # digits_objective builds from a module
    prefixes = list(dict.fromkeys(name.rsplit(".", 1)[0] for name in obj.layout.names))
    return {prefix: float(parameter_eigenpairs(obj, theta, [prefix + "."], 1, tol=1e-4).values[0])
            for prefix in prefixes}


def plot(out: Path, figures: Path) -> list[Path]:
    moments = read_json(out / "moments.json")
    with plots.style():
        fig, axes = plots.subplots(9, ncols=3, width=4.0, height=3.3)
        for j, label in enumerate(moments):
            folder = out / label.replace(" ", "-")
            info = read_json(folder / "paths.json")
            plane = read_json(folder / "plane.json")
            _draw_plane(axes[j], {key: np.asarray(value, dtype=float) for key, value in plane.items()}, info)
            density = read_json(folder / "density.json")
            sd = SpectralDensity(np.asarray(density["nodes"]), np.asarray(density["weights"]), density["matvecs"])
            plots.spectral_density(axes[3 + j], sd, lr=info["lr"], eigenvalues=info["eigenvalues"])
            axes[3 + j].set_title(f"Hessian spectral density, step {info['step']}")
        _draw_run(axes[6], axes[7], axes[8], out, moments)
        fig.suptitle(f"Digits MLP at the edge of stability (h = {_lr(out):g}): "
                     "exact (u₁, g) planes, spectra, GGN vs Hessian")
        return save_figure(fig, figures, "landscape_digits")


def _lr(out: Path) -> float:
    return float(read_json(out / "manifest.json")["config"]["lr"])


def _draw_plane(ax, plane, info: dict) -> None:
    a = plane["alphas"]
    b = plane["betas"]
    values = plane["values"]
    levels = np.quantile(values, np.linspace(0.0, 1.0, 16))
    contour = ax.contourf(a, b, values.T, levels=np.unique(levels), cmap="viridis")
    ax.figure.colorbar(contour, ax=ax, fraction=0.046)
    styles = {"gd": ("GD", "o-", plots.OKABE_ITO["vermillion"]), "gf": ("gradient flow", "-", "white"),
              "pf_topk": ("principal flow (top-k)", "--", plots.OKABE_ITO["orange"])}
    for name, (title, style, colour) in styles.items():
        xy = np.asarray(info["coords"][name])
        ax.plot(xy[:, 0], xy[:, 1], style, ms=2.5, lw=1.1, color=colour,
                label=f"{title} (off plane ≤ {info['off_plane'][name]:.1e})")
    ax.plot([0], [0], "k*", ms=8)
    ax.set_aspect("equal")
    h_lambda = info["lr"] * info["eigenvalues"][0]
    ax.set(title=f"{info['label']}: step {info['step']}, hλ₁ = {h_lambda:.2f}", xlabel="a along u₁",
           ylabel="b along g ⊥ u₁")
    ax.legend(fontsize=6, loc="lower right")


def _draw_run(ax_sharp, ax_layers, ax_loss, out: Path, moments: dict[str, int]) -> None:
    gd = Trajectory.load(out / "gd")
    h = _lr(out)
    steps = np.arange(len(gd))
    for name, title, colour in (("sharpness", "Hessian λ_max", "black"),
                                ("ggn_sharpness", "Gauss–Newton λ_max", plots.OKABE_ITO["blue"])):
        series = gd.metric(name)
        ok = np.isfinite(series)
        ax_sharp.plot(steps[ok], series[ok], "o-", ms=2, color=colour, label=title)
    ax_sharp.axhline(2 / h, color=plots.OKABE_ITO["orange"], ls="--", label="2/h")
    ax_loss.semilogy(steps, gd.losses, color="black", lw=0.9)
    for step in moments.values():
        for ax in (ax_sharp, ax_loss):
            ax.axvline(step, color="0.5", ls=":", lw=1)
    ax_sharp.set(title="sharpness along the run (moments dotted)", xlabel="GD step", ylabel="λ_max")
    ax_sharp.legend(fontsize=7)
    ax_loss.set(title="train loss", xlabel="GD step", ylabel="½‖f − y‖²")
    layers = [read_json(out / label.replace(" ", "-") / "paths.json")["layers"] for label in moments]
    names = list(layers[0])
    width = 0.8 / len(layers)
    for i, (label, values) in enumerate(zip(moments, layers)):
        ax_layers.bar(np.arange(len(names)) + i * width, [values[n] for n in names], width, label=label,
                      color=plots.CYCLE[i % len(plots.CYCLE)])
    ax_layers.set_xticks(np.arange(len(names)) + 0.4 - width / 2, [f"layer {n}" for n in names])
    ax_layers.set(title="per-layer sharpness (λ_max of each block)", ylabel="λ_max")
    ax_layers.legend(fontsize=7)
