"""What the central flow is compared with: GD's second-order midpoints and its loss smoothed in time.

At the edge of stability GD oscillates with period about two steps. The midpoint
θ̄ₙ = (θₙ₋₁ + 2θₙ + θₙ₊₁)/4 (a second-order average: it cancels a period-2 oscillation exactly,
θ̄ = θ for θₙ₊₁ = θₙ₋₁ = −θₙ around θ, the [1, 2, 1]/4 filter) follows the time-averaged trajectory that
the central flow models (Cohen, Damian et al., ICLR 2025), and E(θ̄ₙ) is the loss along it;
:func:`gaussian_smoothed` averages a recorded series in time (a Gaussian kernel in steps), the time-averaged
loss that the central flow's prediction E + ½⟨H, Σ⟩ is compared with.
"""
from __future__ import annotations

from torch import Tensor

from flows.dynamics.gd import StepContext, StepDecision
from flows.records.trajectory import Recorder


class Midpoints:
    """A ``gradient_descent`` callback recording GD's second-order midpoints.

    ``midpoint_loss`` = E(θ̄ₙ) and ``midpoint_distance`` = ‖θₙ − θ̄ₙ‖ (the oscillation's size) at every row n
    with both neighbours (NaN at the first and last rows).

    One extra loss evaluation per step; θ̄ₙ is formed when θₙ₊₁ arrives, so the value lands one step late.
    """

    def __init__(self) -> None:
        self._previous: list[Tensor] = []

    def __call__(self, ctx: StepContext, decision: StepDecision, rec: Recorder) -> None:
        """Runner callback: once θₙ₊₁ has arrived, record the midpoint quantities at row n."""
        self._previous.append(ctx.theta.detach())
        if len(self._previous) < 3:
            return
        before, centre, after = self._previous[-3:]
        self._previous = self._previous[-2:]
        mid = 0.25 * (before + 2 * centre + after)
        row = rec.row - 1  # the row of θₙ (θₙ₊₁ has just been recorded)
        rec.set_metric("midpoint_loss", row, float(ctx.objective.loss(mid)))
        rec.set_metric("midpoint_distance", row, float((centre - mid).norm()))


