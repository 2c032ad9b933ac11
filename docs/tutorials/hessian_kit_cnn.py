# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # The Hessian kit on a CNN
#
# Top eigenpairs (thick-restart Lanczos on Hessian-vector products), the spectral density by stochastic Lanczos
# quadrature with its error band, and an exact loss plane with a GD path and how far the path is from the plane.
# The model: an InstanceNorm CNN with cross-entropy on the digits images.
#
# The tests run this file with `DRIFTLAB_TUTORIAL_STEPS=4`.

# %%
import os

import numpy as np
import torch
from sklearn.datasets import load_digits

from analysis import plots
from flows import Objective, gradient_descent, top_eigenpairs
from flows.curvature.density import spectral_density
from flows.curvature.landscape import loss_plane, plane_coordinates

STEPS = int(os.environ.get("DRIFTLAB_TUTORIAL_STEPS", "60"))
torch.manual_seed(0)
digits = load_digits()
x = torch.tensor(digits.images[:256], dtype=torch.float64).unsqueeze(1) / 16.0
y = torch.tensor(digits.target[:256])
model = torch.nn.Sequential(torch.nn.Conv2d(1, 6, 3), torch.nn.InstanceNorm2d(6, affine=True), torch.nn.ReLU(),
                            torch.nn.Flatten(), torch.nn.Linear(6 * 6 * 6, 10)).double()
objective = Objective.from_module(model, torch.nn.functional.cross_entropy, (x, y))

# %% [markdown]
# ## Top eigenpairs, with a certificate
# `converged=True` means every residual met the tolerance *and* the values were certified to be the k largest,
# with multiplicity. Results save and load: `pairs.save("pairs")`, `Eigenpairs.load("pairs")`.

# %%
pairs = top_eigenpairs(objective, objective.theta0, k=5)
print(pairs.summary())
pairs.save("pairs")

# %% [markdown]
# ## The spectral density, with its error band over the probes

# %%
density = spectral_density(objective, objective.theta0, starts=6, steps=40)
print(density.summary())
lr = 1.0 / pairs.values[0].item()
fig = plots.density(density, lr=lr, eigenvalues=pairs.values.tolist())
fig.savefig("density.png")

# %% [markdown]
# ## GD's path in the (u₁, start → end) plane
# The path's coordinates are exact least-squares projections; the residual panel says how far each point is from
# the plane (the loss drawn under a point is the plane's, not the path's, once the residual is not small).

# %%
run = gradient_descent(objective, lr=lr, steps=STEPS)
theta = objective.theta0
d1 = pairs.vectors[:, 0]
d2 = torch.as_tensor(run.states[-1]) - theta
plane = loss_plane(objective, theta, d1, d2, np.linspace(-1, 1, 21), np.linspace(-0.25, 1.25, 21))
coords, residual = plane_coordinates(run.states, theta, d1, d2)
fig = plots.loss_plane(plane, path=coords, residual=residual, path_label="GD")
fig.savefig("plane.png")
print(plane.summary(), f"largest off-plane residual {residual.max():.2e}")
