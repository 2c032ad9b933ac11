"""Mini-batch SGD through ``gradient_descent``'s runner: θ ← θ − h g_B, one fresh shuffle per epoch.

One epoch is a fresh shuffle cut into ⌊N/b⌋ batches (the remainder dropped); the full-batch loss is recorded
per step, so SGD is recorded like GD.
"""
from __future__ import annotations

from flows.curvature.stochastic import MiniBatches, piece_grad
from flows.dynamics.gd import Controller, StepContext, StepDecision
from flows.objective.objective import Objective


class SGDController(Controller):
    """SGD through ``gradient_descent``: each step uses the next batch of the current epoch (direction g_B).

    A new shuffle starts when an epoch ends; ``epoch_ends`` lists the steps after which an epoch finished.
    """

    def __init__(self, batches: MiniBatches) -> None:
        self.batches = batches
        self._epoch: Objective | None = None
        self._next = 0
        self.evaluations = 0
        self.epoch_ends: list[int] = []

    def hyperparameters(self) -> dict:
        """The batch size."""
        return {"batch_size": self.batches.batch_size}

    def decide(self, ctx: StepContext) -> StepDecision:
        """Direction g_B of the next batch of the current epoch (a new shuffle when the epoch is used up)."""
        if self._epoch is None or self._next == len(self._epoch.pieces):
            self._epoch, self._next = self.batches.epoch(), 0
        g = piece_grad(self._epoch, self._next, ctx.theta)
        self._next += 1
        if self._next == len(self._epoch.pieces):
            self.epoch_ends.append(ctx.step)
        return StepDecision(ctx.lr, direction=g, info={"batch": float(self._next - 1)})

    def current_batch(self) -> tuple[Objective, int]:
        """(epoch Objective, piece index) of the batch of the latest :meth:`decide`: the one step n used."""
        if self._epoch is None:
            raise RuntimeError("no step has been decided yet: current_batch() is defined after decide()")
        return self._epoch, self._next - 1
