"""Every toy's autograd gradient/Hessian against its hand-written closed form, real and complex."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.objective import toys

coords = st.floats(min_value=-2.0, max_value=2.0, allow_nan=False)


@pytest.mark.parametrize("name", toys.names())
@settings(max_examples=25, deadline=None)
@given(x=coords, y=coords)
def test_closed_forms_real(name, x, y):
    spec = toys.spec(name)
    obj = toys.get(name)
    theta = torch.tensor([x, y], dtype=torch.float64)
    torch.testing.assert_close(obj.loss(theta), spec.fn(theta))
    torch.testing.assert_close(obj.grad(theta), spec.grad(theta), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(obj.hessian(theta), spec.hessian(theta), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", toys.names())
def test_closed_forms_complex_analytic_continuation(name):
    spec = toys.spec(name)
    obj = toys.get(name)
    theta = torch.tensor([0.3 + 0.7j, -0.4 - 0.2j], dtype=torch.complex128)
    torch.testing.assert_close(obj.grad(theta), spec.grad(theta).to(theta.dtype), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(obj.hessian(theta), spec.hessian(theta).to(theta.dtype), rtol=1e-12, atol=1e-12)
    v = torch.tensor([1.0 - 0.5j, 0.25 + 2j], dtype=torch.complex128)
    torch.testing.assert_close(obj.hvp(theta, v), spec.hessian(theta).to(theta.dtype) @ v)


def test_pf_quadratic_matches_paper():
    obj = toys.get("pf-quadratic")
    assert obj.theta0.tolist() == [-0.35, -0.2]
    eig = torch.linalg.eigvalsh(obj.hessian(obj.theta0))
    torch.testing.assert_close(eig, torch.tensor([0.02, 2.0], dtype=torch.float64))


def test_unknown_toy_lists_choices():
    with pytest.raises(ValueError, match="valid choices: .*pf-quadratic"):
        toys.get("nope")
