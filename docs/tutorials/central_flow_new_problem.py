# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # The central flow on a new problem
#
# At the edge of stability GD oscillates along the top eigen-directions while the time-averaged iterate moves
# smoothly. The central flow (Cohen et al. 2025) models that average: θ descends E while a semidefinite
# complementarity problem holds the critical eigenvalues at 2/η, and ½⟨H, Σ⟩ predicts the loss excess of the
# oscillation. Here: an attention classifier on scikit-learn's moons — a model no driftlab experiment uses.
#
# The tests run this file with `DRIFTLAB_TUTORIAL_STEPS=6`.

# %%
import os

import torch
from sklearn.datasets import make_moons

from analysis import plots
from flows import Objective, central_flow, gaussian_smoothed, gradient_descent, top_eigenpairs

STEPS = int(os.environ.get("DRIFTLAB_TUTORIAL_STEPS", "150"))
torch.manual_seed(0)


class TinyAttention(torch.nn.Module):
    """Each 2-D point becomes 4 tokens; one self-attention head; mean-pool; a linear head."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.embed = torch.nn.Linear(2, 4 * width)
        self.attend = torch.nn.MultiheadAttention(width, num_heads=1, batch_first=True)
        self.head = torch.nn.Linear(width, 2)
        self.width = width

    def forward(self, x):
        tokens = torch.tanh(self.embed(x)).reshape(len(x), 4, self.width)
        mixed, _ = self.attend(tokens, tokens, tokens, need_weights=False)
        return self.head(mixed.mean(1))


points, labels = make_moons(n_samples=128, noise=0.15, random_state=0)
objective = Objective.from_module(TinyAttention().double(), torch.nn.functional.cross_entropy,
                                  (torch.tensor(points), torch.tensor(labels)))

# %% [markdown]
# ## GD and the central flow at the same rate
# `central_flow` integrates the paper's discretisation (Euler substeps, a warm eigen-tracker, the SDCP); its rows
# are one per GD step and record `predicted_loss`, the critical count and X's eigenvalues `sigma_i`.
#
# This model is not tame: at hλ₀ = 1.9 or 2.5 GD diverges within a dozen steps, and at hλ₀ = 0.6 its sharpness
# overshoots 2/h (hλ up to 2.8) and falls back — a catapult — before it rises again. Measured, not assumed:
# the printout below says how well the central flow's prediction holds on it.

# %%
lr = 0.6 / top_eigenpairs(objective, objective.theta0, 1).values[0].item()
gd = gradient_descent(objective, lr=lr, steps=STEPS, states="none")
flow = central_flow(objective, None, lr, STEPS)
print(flow.summary())

# %% [markdown]
# ## Predicted against observed
# GD's loss oscillates; smoothed over a few steps it should follow the prediction E + ½⟨H, Σ⟩.

# %%
n = min(len(gd), len(flow))  # a run that diverged keeps the steps it did
smoothed = gaussian_smoothed(gd.losses[:n], 3.0)
tail = slice(n // 2, n)
error = abs(flow.metric("predicted_loss")[tail] - smoothed[tail]) / smoothed[tail]
print(f"mean relative error of the prediction over the second half: {100 * error.mean():.1f}%")
fig = plots.central_flow(flow, gd, smoothing=3.0)
fig.savefig("central_flow_new_problem.png")

# %% [markdown]
# The run saves like any trajectory: `flow.save("central")`, and `driftlab plot central.npz gd.npz` redraws it.

# %%
flow.save("central")
gd.save("gd")
