"""Input that used to be silently reinterpreted, or met with torch's raw errors, is named in driftlab's words."""
import warnings

import pytest
import torch
from torch import nn

from flows import Objective, top_eigenpairs


def _data(n=40, d=5, out=2):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, d, generator=g), torch.randn(n, out, generator=g)


def _mse(o, y):
    return 0.5 * ((o - y) ** 2).sum(-1).mean()


def test_a_float64_theta_on_a_float32_model_is_said_once_naming_both_dtypes():
    """One rule everywhere: results follow θ's precision (the design), and a θ in another precision than the
    model's says so once per objective, naming both, instead of silently."""
    obj = Objective.from_module(nn.Linear(5, 2), _mse, _data())
    with pytest.warns(RuntimeWarning, match=r"theta is torch.float64 but .* parameters are torch.float32"):
        assert obj.grad(obj.theta0.double()).dtype == torch.float64
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        top_eigenpairs(obj, obj.theta0.double(), 1)  # said once
        assert obj.grad(obj.theta0).dtype == torch.float32  # the model's own precision is silent


def test_per_example_losses_are_named_with_the_fix():
    with pytest.raises(ValueError, match=r"one loss per example \(shape \(8,\) on a probe of 8 examples\).*mean"):
        Objective.from_module(nn.Linear(5, 2), lambda o, y: ((o - y) ** 2).sum(1), _data(n=800))


def test_targets_that_would_broadcast_are_refused_naming_the_shapes():
    x, y = _data(out=1)
    with pytest.raises(ValueError, match=r"the targets \(shape \(8,\)\) meet a tensor of shape \(8, 1\) .* "
                                         r"broadcasts to \(8, 8\)"):
        Objective.from_module(nn.Linear(5, 1), _mse, (x, y[:, 0]))
    # a loss that reshapes the targets itself is fine
    Objective.from_module(nn.Linear(5, 1), lambda o, t: _mse(o[:, 0], t), (x, y[:, 0]))


def test_a_loss_function_that_fails_on_the_targets_is_named():
    x, _ = _data()
    labels = torch.randint(0, 3, (40,))  # 3 classes for a 2-output model
    with pytest.raises(ValueError, match=r"loss_fn fails on model outputs of shape \(8, 2\).*targets of shape \(8,\)"):
        Objective.from_module(nn.Linear(5, 2), nn.functional.mse_loss, (x, labels))


def test_inputs_that_do_not_fit_the_model_are_named():
    x, y = _data(d=6)
    with pytest.raises(ValueError, match=r"the model fails on inputs of shape \(8, 6\)"):
        Objective.from_module(nn.Linear(5, 2), _mse, (x, y))


def test_an_integer_loss_is_refused():
    with pytest.raises(TypeError, match="floating-point loss"):
        Objective.from_module(nn.Linear(5, 2), lambda o, y: (o > y).sum(), _data())


def test_integer_inputs_to_a_float_model_are_named():
    _, y = _data()
    with pytest.raises(ValueError, match=r"fails on inputs of shape \(8, 5\) and dtype torch.int64.*\.float\(\)"):
        Objective.from_module(nn.Linear(5, 2), _mse, (torch.randint(0, 3, (40, 5)), y))
