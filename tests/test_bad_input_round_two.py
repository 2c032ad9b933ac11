"""Bad input that used to get through (issue: nothing lost, nothing misreported, item 6), refused up front in
driftlab's words."""
import pytest
import torch

from experiments.cli.main import main
from flows import Objective, central_flow, gradient_descent, top_eigenpairs
from flows.objective import toys


@pytest.mark.parametrize("pair", ["lrs=inf", "lrs=1e400", "lrs=0.1,-inf", "steps=10,", "lrs=nan"])
def test_non_finite_numbers_in_set_are_refused_before_running(pair, capsys, tmp_path):
    assert main(["run", "eos-digits", "--out", str(tmp_path / "o"), "--quiet", "--set", pair],
                restore_signals=True) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--set {pair}" in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_infinite_rate_bounds_are_refused(capsys, tmp_path):
    assert main(["run", "bea-order", "--out", str(tmp_path / "o"), "--quiet", "--set", "h_max=inf"],
                restore_signals=True) == 2
    assert "expected a finite float" in capsys.readouterr().err


@pytest.mark.parametrize("n_train", [0, 100000])
def test_a_training_set_size_the_data_cannot_give_is_refused(n_train):
    from experiments.zoo.datasets import digits

    with pytest.raises(ValueError, match=r"n_train must be an int in \[1, 1500\]"):
        digits(n_train=n_train)


@pytest.mark.parametrize("budget", [0, -5, 2.5, True])
def test_bad_eigensolver_budgets_are_refused(budget):
    obj = toys.get("pf-quadratic")
    with pytest.raises(ValueError, match="max_matvecs must be a positive int"):
        top_eigenpairs(obj, obj.theta0, 1, method="lanczos", max_matvecs=budget)


def test_a_function_without_a_graph_is_refused_at_construction():
    with pytest.raises(TypeError, match="no autograd graph"):
        Objective.from_function(lambda t: (t.detach() ** 2).sum(), 2)
    with pytest.raises(TypeError, match="no autograd graph"):
        Objective.from_function(lambda t: torch.tensor(float(t.sum().item() ** 2)), 2, theta0=[1.0, 2.0])


def test_a_complex_theta_is_refused_by_the_real_runners():
    obj = toys.get("pf-quadratic")
    z = obj.theta0.to(torch.complex128)
    with pytest.raises(TypeError, match="theta0 is complex"):
        gradient_descent(obj, z, 0.1, 3)
    with pytest.raises(TypeError, match="theta0 is complex"):
        central_flow(obj, z, 0.1, 3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_named():
    with pytest.raises(ValueError, match="no CUDA device is available here"):
        toys.get("pf-quadratic", device="cuda")
