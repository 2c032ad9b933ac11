"""Second-order products through a ``@once_differentiable`` backward are refused, not silently wrong.

Double backward through such a Function raises nothing in torch 2.13: it treats the backward's saved tensors
as constants. The oracle is a central difference of gradients, which sees the whole second derivative.
"""
import pytest
import torch
from torch.autograd.function import once_differentiable

from flows import EigenTracker, Objective, central_flow, gradient_descent, integrate, top_eigenpairs


class _Tanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.tanh(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (1 - torch.tanh(x) ** 2)  # differentiable: double backward is right


class _OnceTanh(_Tanh):
    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (1 - torch.tanh(x) ** 2)


class _Act(torch.nn.Module):
    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function.apply(x)


def _objective(function) -> Objective:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), _Act(function), torch.nn.Linear(5, 2)).double()
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
    return Objective.from_module(model, torch.nn.functional.mse_loss, (x, y))


def _finite_difference_hvp(obj: Objective, theta, v, eps=1e-5):
    return (obj.grad(theta + eps * v) - obj.grad(theta - eps * v)) / (2 * eps)


def test_a_differentiable_custom_backward_is_accepted_and_exact():
    obj = _objective(_Tanh)
    theta = obj.theta0
    v = torch.randn_like(theta)
    torch.testing.assert_close(obj.hvp(theta, v), _finite_difference_hvp(obj, theta, v), rtol=1e-6, atol=1e-8)


def test_the_silent_error_exists_and_every_second_order_entry_refuses_it():
    bad = _objective(_OnceTanh)
    theta = bad.theta0
    v = torch.randn_like(theta)
    # what torch itself gives through the once-differentiable backward (the check bypassed): far off
    bad._first_order_only = []
    wrong = bad.hvp(theta, v)
    exact = _finite_difference_hvp(bad, theta, v)
    assert float((wrong - exact).norm() / exact.norm()) > 0.05
    bad._first_order_only = None
    needle = r"layer '1' \(_Act, Function _OnceTanh\).*once_differentiable"
    calls = [lambda: bad.hvp(theta, v), lambda: bad.hessian_operator(theta), lambda: bad.hessian(theta),
             lambda: bad.third_derivatives(theta, v), lambda: top_eigenpairs(bad, theta, k=1),
             lambda: EigenTracker(k=1).update(bad, theta), lambda: integrate(bad, theta, 0.1, flow="igr", steps=2),
             lambda: central_flow(bad, theta, 0.1, 2)]
    for call in calls:
        with pytest.raises(ValueError, match=needle):
            call()
    # first-order tools keep working on the same model
    assert gradient_descent(bad, theta, 0.1, 3).status == "complete"
    assert integrate(bad, theta, 0.1, flow="gf", steps=2).status == "complete"


def test_a_function_objective_names_the_function():
    def loss(theta):
        return (_OnceTanh.apply(theta) ** 2).sum() + (theta ** 4).sum()
    obj = Objective.from_function(loss, 4, theta0=torch.randn(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="Function _OnceTanh"):
        obj.hvp(obj.theta0, torch.ones(4, dtype=torch.float64))
    assert torch.isfinite(obj.grad(obj.theta0)).all()


def test_a_function_in_the_loss_is_named_as_the_loss():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    obj = Objective.from_module(model, lambda out, t: (_OnceTanh.apply(out - t) ** 2).mean(), (x, y))
    with pytest.raises(ValueError, match=r"loss_fn \(Function _OnceTanh\)"):
        top_eigenpairs(obj, obj.theta0, k=1)
