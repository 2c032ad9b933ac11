"""The experiment registry: name → module, imported lazily so that `driftlab list` stays fast.

Every experiment module defines:

* ``DESCRIPTION`` — one line;
* ``Config`` — a dataclass whose defaults run on a 2-core CPU in minutes;
* ``run(config, out, progress) -> None`` — computes and saves results into ``out``;
* ``plot(out, figures) -> list[Path]`` — draws PNG+PDF from saved results only.
"""
from __future__ import annotations

import importlib
from types import ModuleType

EXPERIMENTS: dict[str, str] = {
    "pf-quadratic": "experiments.pf_quadratic",
    "pf-toys": "experiments.pf_toys",
    "pf-branch": "experiments.pf_branch",
    "drift-digits": "experiments.drift_digits",
    "eos-digits": "experiments.eos_digits",
    "eos-adam": "experiments.eos_adam",
    "eos-sgd": "experiments.eos_sgd",
    "eos-momentum": "experiments.eos_momentum",
    "sgd-modified-flow": "experiments.sgd_modified_flow",
    "corridors": "experiments.corridors",
    "controllers-digits": "experiments.controllers_digits",
    "bea-order": "experiments.bea_order",
    "central-flow-toy": "experiments.central_flow_toy",
    "flow-arena": "experiments.flow_arena",
    "landscape-digits": "experiments.landscape_digits",
    "igr-flat-minima": "experiments.igr_flat_minima",
    "pf-spikes": "experiments.pf_spikes",
    "polyak-family": "experiments.polyak_family",
    "dal-tradeoff": "experiments.dal_tradeoff",
    "bench-hvp": "experiments.bench_hvp",
    "bench-spectrum": "experiments.bench_spectrum",
    "bench-flows": "experiments.bench_flows",
    "bench-scaling": "experiments.bench_scaling",
    "bench-anchors": "experiments.bench_anchors",
    "bench-adaptive": "experiments.bench_adaptive",
    "bench-hessian-kit": "experiments.bench_hessian_kit",
}


def names() -> list[str]:
    return list(EXPERIMENTS)


def get(name: str) -> ModuleType:
    """The experiment module registered under ``name``."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; valid choices: {', '.join(EXPERIMENTS)}")
    return importlib.import_module(EXPERIMENTS[name])
