"""What every benchmark shares: the peers and the one-model setup they are timed on, timing helpers, residual
checks, and the saved table (``stem.csv`` + ``stem.md``) a benchmark's ``plot`` prints.

Speed is measured in benchmarks only: ratios side by side in one process, interleaved rounds, medians, thread
settings pinned (``experiments.cli.threads``) and printed in each table's header.
"""
from __future__ import annotations

import importlib.util
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from experiments.zoo.anchors import Anchor
from flows import Objective

PEERS = {"pyhessian": "pyhessian", "hessian-eigenthings": "hessian_eigenthings", "curvlinops": "curvlinops"}


def available_peers() -> tuple[list[str], list[str]]:
    """(installed peers, one-line notes for the missing ones)."""
    have, notes = [], []
    for name, module in PEERS.items():
        if importlib.util.find_spec(module) is None:
            notes.append(f"{name}: not installed, skipped (pip install -e '.[bench]')")
        else:
            have.append(name)
    return have, notes


class Setup:
    """One anchor with driftlab's objectives and each peer's operator built on the same model and data."""

    def __init__(self, a: Anchor, peers: list[str]) -> None:
        self.anchor = a
        self.model = a.model
        self.loss_fn = a.loss_fn
        self.x, self.y = a.data
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.obj = Objective.from_module(self.model, self.loss_fn, a.data, name=a.name)
            self.fwd = Objective.from_module(self.model, self.loss_fn, a.data, hvp_method="forward_over_reverse")
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        assert self.obj.theta0 is not None  # from_module sets it
        self.theta: Tensor = self.obj.theta0
        gen = torch.Generator().manual_seed(0)
        self.v = torch.randn(self.obj.dim, generator=gen)
        self.v_list = [c.view_as(p) for c, p in zip(self.v.split([p.numel() for p in self.params]), self.params)]
        self.notes: list[str] = []
        self.peers = {name: getattr(self, "_" + name.replace("-", "_"))() for name in peers}

    def _math_kernel(self) -> Any:
        """Attention on the math kernel for peers (the fused CPU kernel has no second derivative)."""
        return sdpa_kernel(SDPBackend.MATH)

    def _hessian_eigenthings(self) -> Any:
        import hessian_eigenthings as he

        return he.HessianOperator(self.model, [(self.x, self.y)], he.supervised_loss(self.loss_fn))

    def _pyhessian(self) -> Any:
        from pyhessian import hessian

        modes = [(m, m.training) for m in self.model.modules()]
        ph = hessian(self.model, self.loss_fn, dataloader=[(self.x, self.y)], cuda=False)
        for m, flag in modes:  # PyHessian calls model.eval() silently; give the model its modes back
            m.training = flag
        return ph

    def _curvlinops(self) -> Any:
        from curvlinops import HessianLinearOperator

        loss = self.loss_fn
        if not isinstance(loss, torch.nn.Module):  # ½‖f − y‖² averaged over examples = (C/2)·MSELoss(mean)
            loss = torch.nn.MSELoss(reduction="mean")
            self.curvlinops_scale = self.y.shape[1] / 2
            note = "curvlinops: ½-MSE given as nn.MSELoss(mean), products scaled by C/2"
            self.notes += [note] if note not in self.notes else []
        else:
            self.curvlinops_scale = 1.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return HessianLinearOperator(self.model, loss, self.params, [(self.x, self.y)],
                                         check_deterministic=False)

    def plain_gradient(self) -> Any:
        with self._math_kernel():
            return torch.autograd.grad(self.loss_fn(self.model(self.x), self.y), self.params)

    def fresh_products(self) -> dict[str, Callable[[], Any]]:
        """name → a call that computes one fresh product (or the gradient)."""
        calls: dict[str, Callable[[], Any]] = {
            "plain autograd gradient": self.plain_gradient,
            "driftlab Objective.grad": lambda: self.obj.grad(self.theta),
            "driftlab hvp (double backward)": lambda: self.obj.hvp(self.theta, self.v),
            "driftlab hvp (forward-over-reverse)": lambda: self.fwd.hvp(self.theta, self.v),
        }
        peer_calls = {"hessian-eigenthings": lambda op: op.matvec(self.v),
                      "pyhessian": lambda op: op.dataloader_hv_product(self.v_list),
                      "curvlinops": lambda op: op @ self.v}
        for name, op in self.peers.items():
            calls[f"{name} fresh product"] = self._peer_call(peer_calls[name], op)
        return calls

    def _peer_call(self, call: Callable[[Any], Any], op: Any) -> Callable[[], Any]:
        def run() -> Any:
            with self._math_kernel():
                return call(op)
        return run


def residuals(obj: Objective, theta: torch.Tensor, values: torch.Tensor, vectors: torch.Tensor) -> np.ndarray:
    """‖Hu − λu‖/|λ| for each pair, from fresh HVPs (independent of the solver)."""
    hv = obj.hvp(theta, vectors.T.contiguous()).T
    return (torch.linalg.vector_norm(hv - vectors * values, dim=0) / values.abs()).cpu().numpy()


def median_seconds(call: Callable[[], Any], rounds: int) -> tuple[Any, float]:
    times, result = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def command_line(name: str) -> int:
    """``python -m experiments.benchmarks.X [--set …]`` runs ``driftlab run NAME`` with the same arguments."""
    from experiments.cli.main import main

    return main(["run", name, *sys.argv[1:]])
