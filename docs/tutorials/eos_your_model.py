# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Your own model, from zero to the edge-of-stability figure
#
# Full-batch gradient descent at rate h drives the sharpness λ_max (the top Hessian eigenvalue) up to 2/h and
# holds it there (Cohen et al. 2021). This tutorial takes a model driftlab has never seen — a small GroupNorm
# convolutional net on scikit-learn's 8×8 digits, with cross-entropy — and draws that figure at ICML column width.
#
# The tests run this file with `DRIFTLAB_TUTORIAL_STEPS=12`; the default is the full run.

# %%
import os

import torch
from sklearn.datasets import load_digits

from analysis import EoSDetector, Sharpness, plots
from flows import Objective, gradient_descent, top_eigenpairs

STEPS = int(os.environ.get("DRIFTLAB_TUTORIAL_STEPS", "400"))
torch.manual_seed(0)

# %% [markdown]
# ## 1. The model and the data, as you would write them
# Any `nn.Module` and loss work. `Objective.from_module` flattens the parameters into one vector θ and gives the
# loss, gradient and Hessian-vector products of E(θ) = loss(model(x; θ), y) over the whole batch.

# %%
digits = load_digits()
x = torch.tensor(digits.images[:512], dtype=torch.float64).unsqueeze(1) / 16.0
y = torch.tensor(digits.target[:512])
model = torch.nn.Sequential(
    torch.nn.Conv2d(1, 8, 3), torch.nn.GroupNorm(2, 8), torch.nn.Tanh(),
    torch.nn.Conv2d(8, 8, 3), torch.nn.GroupNorm(2, 8), torch.nn.Tanh(),
    torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 10),
).double()
objective = Objective.from_module(model, torch.nn.functional.cross_entropy, (x, y))
print(f"D = {objective.dim} parameters, E(θ₀) = {objective.loss(objective.theta0).item():.4f}")

# %% [markdown]
# ## 2. A rate near the edge
# λ_max at initialisation is one Lanczos solve. Take h so that 2/h sits above it: progressive sharpening must
# then bring λ_max up to the threshold.

# %%
initial = top_eigenpairs(objective, objective.theta0, k=1)
print(initial.summary())
lr = 1.2 / initial.values[0].item()
print(f"h = {lr:.4f}, 2/h = {2 / lr:.2f}")

# %% [markdown]
# ## 3. Gradient descent, measuring the sharpness every few steps
# `Sharpness(every=n)` is a callback: it tracks the top eigenvalue with a warm-started solver and records it in
# the trajectory as the metric `sharpness`. Nothing computed is lost: a run that diverges or is interrupted
# returns the steps done, with its status.

# %%
trajectory = gradient_descent(objective, lr=lr, steps=STEPS, callbacks=[Sharpness(every=max(1, STEPS // 40))],
                              states="none")
print(trajectory.summary())

# %% [markdown]
# ## 4. What happened, in words
# `EoSDetector` reads the trajectory: progressive sharpening (a Kendall trend test before the crossing), the
# first crossing of 2/h, hovering in a band around it, loss spikes.

# %%
report = EoSDetector().detect(trajectory)
print(report.summary())

# %% [markdown]
# ## 5. The figure, at ICML column width
# `plots.style(venue="icml", column="double")` sizes the figure for both columns of the ICML template (6.75 in,
# 8 pt text); `plots.eos` draws the loss and the sharpness against its threshold, with the detector's events.

# %%
with plots.style(venue="icml", column="double", ncols=2):
    fig = plots.eos(trajectory, reports=[report], labels=["GroupNorm CNN"])
    fig.savefig("eos_your_model.pdf")
print("width (in):", fig.get_size_inches()[0])

# %% [markdown]
# ## 6. Keep everything
# Trajectories and reports save to `.npz` + `.json` and load back exactly; `driftlab plot eos_run.npz --venue
# icml` redraws the figure from the file.

# %%
trajectory.save("eos_run")
report.save("eos_report")
print(type(report).load("eos_report").summary() == report.summary())
