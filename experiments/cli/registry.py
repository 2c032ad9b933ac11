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
    "pf-quadratic": "experiments.principal_flow.pf_quadratic",
    "pf-toys": "experiments.principal_flow.pf_toys",
    "pf-branch": "experiments.principal_flow.pf_branch",
    "drift-digits": "experiments.drift.drift_digits",
    "eos-digits": "experiments.edge_of_stability.eos_digits",
    "eos-adam": "experiments.edge_of_stability.eos_adam",
    "eos-sgd": "experiments.edge_of_stability.eos_sgd",
    "eos-momentum": "experiments.edge_of_stability.eos_momentum",
    "sgd-modified-flow": "experiments.drift.sgd_modified_flow",
    "corridors": "experiments.step_sizes.corridors",
    "controllers-digits": "experiments.step_sizes.controllers_digits",
    "bea-order": "experiments.drift.bea_order",
    "central-flow-toy": "experiments.edge_of_stability.central_flow_toy",
    "flow-arena": "experiments.edge_of_stability.flow_arena",
    "landscape-digits": "experiments.drift.landscape_digits",
    "igr-flat-minima": "experiments.drift.igr_flat_minima",
    "pf-spikes": "experiments.principal_flow.pf_spikes",
    "polyak-family": "experiments.step_sizes.polyak_family",
    "dal-tradeoff": "experiments.step_sizes.dal_tradeoff",
    "bench-hvp": "experiments.benchmarks.hvp",
    "bench-spectrum": "experiments.benchmarks.spectrum",
    "bench-flows": "experiments.benchmarks.flow_solvers",
    "bench-scaling": "experiments.benchmarks.scaling",
    "bench-anchors": "experiments.benchmarks.anchors",
    "bench-adaptive": "experiments.benchmarks.adaptive",
    "bench-hessian-kit": "experiments.benchmarks.hessian_kit",
}


def names() -> list[str]:
    return list(EXPERIMENTS)


def get(name: str) -> ModuleType:
    """The experiment module registered under ``name``."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; valid choices: {', '.join(EXPERIMENTS)}")
    return importlib.import_module(EXPERIMENTS[name])
