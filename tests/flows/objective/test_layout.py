"""The flat θ ⇄ named parameters layout, against the model's own parameters."""
import pytest
import torch

from flows.objective.layout import ParameterLayout


def test_layout_round_trips_the_parameters_of_a_cnn(cnn_objective):
    model = cnn_objective.model
    layout = ParameterLayout.of(model)
    params = [p for p in model.parameters() if p.requires_grad]
    theta = layout.flatten(params)
    assert layout.dim == theta.numel() == cnn_objective.dim
    assert list(layout.names) == cnn_objective.parameter_names
    for (name, p), view in zip(model.named_parameters(), layout.split(theta)):
        assert view.shape == p.shape
        torch.testing.assert_close(view, p.detach(), rtol=0, atol=0, msg=name)
    new = torch.arange(layout.dim, dtype=theta.dtype)
    layout.write(params, new)
    torch.testing.assert_close(layout.flatten(params), new, rtol=0, atol=0)
    assert set(layout.unflatten(new)) == set(layout.names)


def test_frozen_parameters_are_not_in_theta_and_a_wrong_length_is_named():
    model = torch.nn.Linear(3, 2)
    model.bias.requires_grad_(False)
    layout = ParameterLayout.of(model)
    assert layout.names == ("weight",) and layout.dim == 6
    with pytest.raises(ValueError, match=r"theta must have shape \(6,\)"):
        layout.split(torch.zeros(8))
