# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Step-size controllers in an ordinary torch training loop
#
# Every driftlab controller (CLR, DAL-p, WNGrad, PAL, Alice, SPS_max, ALI-G) is also a `torch.optim.Optimizer`:
# `step(closure)` evaluates the loss and gradient through the closure, lets the controller choose the step, and
# writes it back group by group. A `torch.optim.lr_scheduler` scales the controller's step as it scales SGD's.
# Here: an LSTM regressor on noisy sine waves, PAL (a parabolic line search) against plain SGD.
#
# The tests run this file with `DRIFTLAB_TUTORIAL_STEPS=5`.

# %%
import os

import torch

from analysis.controllers import ConstantOptimizer, PALOptimizer

STEPS = int(os.environ.get("DRIFTLAB_TUTORIAL_STEPS", "200"))
gen = torch.Generator().manual_seed(0)
phase = 6.28 * torch.rand(64, 1, generator=gen)
t = torch.linspace(0, 3, 12)
series = torch.sin(phase + t) + 0.05 * torch.randn(64, 12, generator=gen)
x, y = series[:, :-1, None], series[:, -1:]


class Forecaster(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(1, 16, batch_first=True)
        self.head = torch.nn.Linear(16, 1)

    def forward(self, inputs):
        return self.head(self.lstm(inputs)[0][:, -1])


def train(make_optimizer, steps: int = STEPS) -> list[float]:
    torch.manual_seed(0)
    model = Forecaster()
    optimizer = make_optimizer(model.parameters())
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, steps // 2), gamma=0.5)
    losses = []

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    for _ in range(steps):
        losses.append(float(optimizer.step(closure)))
        scheduler.step()
    return losses


# %%
sgd = train(lambda p: ConstantOptimizer(p, lr=0.1))
pal = train(lambda p: PALOptimizer(p))
print(f"after {STEPS} steps: SGD {sgd[-1]:.4f}, PAL {pal[-1]:.4f} (start {sgd[0]:.4f})")
