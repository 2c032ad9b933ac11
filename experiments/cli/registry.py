"""The experiment registry: name → module, description and measured runtime, so that ``driftlab list`` imports
no experiment module (``driftlab show`` and ``run`` import the one they need).

The experiment contract, one module per experiment:

* ``Config`` — a dataclass whose defaults run on a 2-core CPU in minutes, with a docstring under every field (what
  ``driftlab show`` prints) and a ``validate()`` that refuses bad values naming the field;
* ``run(config, out, ctx)`` — computes and saves results into ``out``; ``ctx`` is a
  :class:`~experiments.cli.context.RunContext` (device, seed, progress, finished units);
* ``plot(out, figures) -> list[Path]`` — draws PNG+PDF from saved results only;
* optionally ``plot_seeds(folders, figures)`` — the mean-with-band figure over ``--seeds`` runs.
"""
from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType


@dataclass(frozen=True)
class Entry:
    """One registered experiment: its module path, one line of description, and the wall-clock time of its default
    config as measured on the 2-core CPU development machine (None: not measured; ``driftlab show`` then points at
    the time a local run records in its manifest)."""

    module: str
    description: str
    runtime: str | None = None


EXPERIMENTS: dict[str, Entry] = {
    "pf-quadratic": Entry(
        "experiments.principal_flow.pf_quadratic",
        "PF paper quadratic: GD iterates with GF, IGR and PF paths at h = 0.5, 0.9, 1.05",
    ),
    "pf-toys": Entry(
        "experiments.principal_flow.pf_toys",
        "saddle and sharp-minimum toys: GD and PF leave where GF and IGR stay",
    ),
    "pf-branch": Entry(
        "experiments.principal_flow.pf_branch",
        "exact PF across the branch cut of log(1 − hλ): principal vs continued branch, solvers, drift from GD",
    ),
    "drift-digits": Entry(
        "experiments.drift.drift_digits",
        "drift of GF, IGR, PF top-k from GD on the digits MLP at h·λ_max ≈ 0.8 and 1.5",
    ),
    "eos-digits": Entry(
        "experiments.edge_of_stability.eos_digits",
        "edge of stability on digits: loss, sharpness vs 2/h, GD–GF distance, PF coefficients",
    ),
    "eos-adam": Entry(
        "experiments.edge_of_stability.eos_adam",
        "full-batch Adam on digits: preconditioned sharpness λ₁(P⁻¹H) against (2+2β₁)/((1−β₁)h) = 38/h",
        "36 s",
    ),
    "eos-sgd": Entry(
        "experiments.edge_of_stability.eos_sgd",
        "SGD on digits, batch 16/64/256: batch sharpness and λ_max against 2/h",
        "55 s",
    ),
    "eos-sgd-gap": Entry(
        "experiments.edge_of_stability.sgd_gap",
        "the stochastic sharpness gap: SGD's λ_max below 2/h against b = 16…256, fitted slope and ΔS = ηβσ_u²/(4α)",
    ),
    "eos-sgd-momentum": Entry(
        "experiments.edge_of_stability.sgd_momentum",
        "SGD with heavy-ball β = 0, 0.5, 0.9 across batch sizes: batch sharpness against 2(1−β)/h and 2(1+β)/h",
    ),
    "eos-momentum": Entry(
        "experiments.edge_of_stability.eos_momentum",
        "heavy-ball GD on digits with β = 0, 0.5, 0.9: λ_max against 2(1+β)/h",
        "27 s",
    ),
    "sgd-modified-flow": Entry(
        "experiments.drift.sgd_modified_flow",
        "mean SGD epoch endpoints (batch 64) against SGD's modified flow and gradient flow, 20 epochs",
        "10 min",
    ),
    "corridors": Entry(
        "experiments.step_sizes.corridors",
        "corridor score, straightness and loss linearity along GD on a corridor toy and the digits MLP",
    ),
    "controllers-digits": Entry(
        "experiments.step_sizes.controllers_digits",
        "controllers (GD, CLR, DAL-p, WNGrad, PAL, Alice) on digits full/mini-batch and two toys",
    ),
    "bea-order": Entry(
        "experiments.drift.bea_order",
        "log-log local error of GF, IGR, third order and PF against h, with fitted slopes",
    ),
    "central-flow-toy": Entry(
        "experiments.edge_of_stability.central_flow_toy",
        "the central-flows example (swish MLP, h = 0.1): GD, gradient flow and the central flow",
        "1 min 52 s",
    ),
    "central-rmsprop": Entry(
        "experiments.edge_of_stability.central_adaptive",
        "central flows of Scalar RMSProp, RMSProp and Adam against the discrete runs on digits and a LayerNorm MLP",
        "17 min 20 s",
    ),
    "flow-arena": Entry(
        "experiments.edge_of_stability.flow_arena",
        "GF, IGR, PF top-k (both rests) and the central flow scored against GD on the toy and on digits",
        "14 min",
    ),
    "landscape-digits": Entry(
        "experiments.drift.landscape_digits",
        "EoS run on digits seen through the Hessian kit: exact (u₁, g) planes with GD/GF/PF paths, ESDs, GGN",
        "6.4 min",
    ),
    "igr-flat-minima": Entry(
        "experiments.drift.igr_flat_minima",
        "IGR (Barrett & Dherin 2021, Fig. 1): GD with larger h lands at flatter minima, as the IGR flow predicts",
    ),
    "pf-spikes": Entry(
        "experiments.principal_flow.pf_spikes",
        "PF instability analysis on digits: PF-predicted loss rate vs GD's one-step change around spikes",
    ),
    "polyak-family": Entry(
        "experiments.step_sizes.polyak_family",
        "CLR vs SPS_max, ALI-G, WNGrad, PAL, Alice and a constant sweep on digits and breast cancer",
    ),
    "dal-tradeoff": Entry(
        "experiments.step_sizes.dal_tradeoff",
        "DAL-p trade-off on digits: p ∈ {0.25…2} vs a constant-rate sweep, full batch and mini-batch",
    ),
    "bench-hvp": Entry(
        "experiments.benchmarks.hvp",
        "time per loss, gradient and HVP (fresh, retained graph, batched) on the digits MLP",
    ),
    "bench-spectrum": Entry(
        "experiments.benchmarks.spectrum",
        "top-10 eigenpairs at an EoS point: Lanczos cold/warm vs scipy eigsh vs power iteration",
    ),
    "bench-flows": Entry(
        "experiments.benchmarks.flow_solvers",
        "cost per unit flow time: GF, IGR, PF top-k (k=1, 10) vs GD on the digits MLP",
    ),
    "bench-central": Entry(
        "experiments.benchmarks.central",
        "the central flow vs GD for the same steps, part by part, before/after #34's eigen settings, with accuracy",
    ),
    "bench-compiled": Entry(
        "experiments.benchmarks.compiled",
        "compiled (make_fx + torch.compile) vs eager HVPs and pair third derivatives on the anchor models",
    ),
    "bench-batching": Entry(
        "experiments.benchmarks.batching",
        "blocks of HVPs and pair vectors: one batched backward (vmap) vs a loop of single ones, per model",
    ),
    "bench-scaling": Entry(
        "experiments.benchmarks.scaling",
        "data-parallel objectives with torch.distributed: 1 vs 2 processes, equality and time per HVP/GD step",
    ),
    "bench-anchors": Entry(
        "experiments.benchmarks.anchors",
        "driftlab vs PyHessian, hessian-eigenthings, curvlinops: fresh HVP cost and top-10 eigenpairs",
        "about 15 min (with the peers)",
    ),
    "bench-adaptive": Entry(
        "experiments.benchmarks.adaptive",
        "HVPs of preconditioned vs plain warm tracking along Adam; batch sharpness to a 5% s.e. at batch 64",
    ),
    "bench-hessian-kit": Entry(
        "experiments.benchmarks.hessian_kit",
        "Hessian kit vs PyHessian and curvlinops: spectral density, trace, loss planes",
        "4.6 min (with the peers)",
    ),
}


def names() -> list[str]:
    """Every registered experiment name, in the order of ``driftlab list``."""
    return list(EXPERIMENTS)


def entry(name: str) -> Entry:
    """The registry entry of ``name`` (a ValueError naming the valid choices otherwise)."""
    if name not in EXPERIMENTS:
        from .common import closest

        raise ValueError(f"unknown experiment {name!r}{closest(name, EXPERIMENTS)}; valid choices: "
                         f"{', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def get(name: str) -> ModuleType:
    """The experiment module registered under ``name``."""
    return importlib.import_module(entry(name).module)


def field_help(config_class: type) -> dict[str, str]:
    """Each field of a ``Config`` dataclass → its docstring (the string literal under it in the class body, in the
    class or the dataclass it extends)."""
    found: dict[str, str] = {}
    for cls in reversed(config_class.__mro__):
        if not dataclasses.is_dataclass(cls):
            continue
        body = ast.parse(inspect.getsource(cls)).body[0].body  # type: ignore[attr-defined]
        for node, after in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr) \
                    and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str):
                found[node.target.id] = " ".join(after.value.value.split())
    return found


def local_runtime(name: str, results: Path = Path("results")) -> str | None:
    """The time of the last complete run of ``name`` in ``results/NAME`` (its manifest), and whether it used the
    default config; None when there is none."""
    try:
        manifest = json.loads((results / name / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("status") != "complete" or "seconds" not in manifest:
        return None
    defaults = dataclasses.asdict(get(name).Config())
    same = json.loads(json.dumps(defaults)) == manifest.get("config")
    return f"{manifest['seconds']} s in {results / name} ({'default' if same else 'changed'} config)"


def describe(name: str) -> list[str]:
    """The lines of ``driftlab show NAME``: description, runtime, then one block per config field."""
    item, module = entry(name), get(name)
    config = module.Config()
    help_of = field_help(module.Config)
    hints = {f.name: f.type for f in dataclasses.fields(config)}
    lines = [f"{name}: {item.description}", f"module: {item.module}",
             f"runtime of the defaults: {item.runtime or 'not measured'} (2-core CPU)"]
    local = local_runtime(name)
    if local is not None:
        lines.append(f"last local run: {local}")
    lines += ["", "fields (--set NAME=VALUE):"]
    for f in dataclasses.fields(config):
        default = getattr(config, f.name)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else str(default)
        lines.append(f"  {f.name}: {hints[f.name]} = {shown}")
        lines.append(f"      {help_of.get(f.name, '(undocumented)')}")
    return lines
