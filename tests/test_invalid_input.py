"""Property tests: random invalid arguments give a clear error of the documented type, naming the argument."""
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis import (
    CONTROLLERS,
    PAL,
    Alice,
    Constant,
    CorridorDetector,
    CorridorLR,
    DriftAdjustedLR,
    EoSDetector,
    WNGrad,
    get_controller,
)
from experiments.cli.main import main
from flows import (
    FIELDS,
    METHODS,
    EigenTracker,
    Objective,
    compare,
    gradient_descent,
    integrate,
    local_error,
    sharpness,
    stability_threshold,
    top_eigenpairs,
)
from flows.objective import toys

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
OBJ = toys.get("pf-quadratic")

not_positive = st.one_of(st.floats(max_value=0.0, allow_nan=False), st.just(math.nan), st.just(math.inf),
                         st.just(-math.inf))
not_a_number = st.one_of(st.text(max_size=5), st.none(), st.lists(st.integers(), max_size=2), st.just(True))
bad_rate = st.one_of(not_positive, not_a_number)
bad_count = st.one_of(st.integers(max_value=-1), st.floats(allow_nan=True),
                      not_a_number.filter(lambda v: v is not True))
VALID = {*FIELDS, *METHODS, *CONTROLLERS, *toys.names(), "LA", "SA", "LM", "exact", "finite_difference", "fixed",
         "sgdm", "adam"}
unknown_name = st.text(min_size=1, max_size=12).filter(lambda s: s not in VALID)


def _raises(fn, *names):
    with pytest.raises((ValueError, TypeError)) as info:
        fn()
    message = str(info.value)
    assert any(n in message for n in names), message
    assert "\n" not in message.strip() or len(message) < 400


@SETTINGS
@given(lr=bad_rate)
def test_bad_rates_everywhere(lr):
    _raises(lambda: gradient_descent(OBJ, lr=lr, steps=2), "lr")
    _raises(lambda: integrate(OBJ, lr=lr, steps=2), "lr")
    _raises(lambda: compare(OBJ, lr=lr, steps=2, flows=("gf",)), "lr")
    _raises(lambda: local_error(OBJ, OBJ.theta0, lr, flow="gf"), "lr")
    _raises(lambda: stability_threshold(lr), "lr")
    _raises(lambda: Constant(lr=lr), "lr")
    _raises(lambda: WNGrad(lr=lr), "lr")
    _raises(lambda: Alice(lr=lr), "lr")


@SETTINGS
@given(steps=bad_count)
def test_bad_counts(steps):
    _raises(lambda: gradient_descent(OBJ, lr=0.1, steps=steps), "steps")
    _raises(lambda: integrate(OBJ, lr=0.1, steps=steps), "steps")
    _raises(lambda: top_eigenpairs(OBJ, OBJ.theta0, k=steps), "k")
    _raises(lambda: EoSDetector(sharpness_every=steps), "sharpness_every")


@SETTINGS
@given(name=unknown_name)
def test_unknown_names_list_the_choices(name):
    _raises(lambda: integrate(OBJ, flow=name, lr=0.1, steps=2), "valid choices", "one of")
    _raises(lambda: compare(OBJ, lr=0.1, steps=2, flows=(name,)), "valid choices", "one of")
    _raises(lambda: top_eigenpairs(OBJ, OBJ.theta0, k=1, which=name), "which")
    _raises(lambda: toys.get(name), "pf-quadratic")
    _raises(lambda: get_controller(name), "alice")
    _raises(lambda: integrate(OBJ, flow="gf", lr=0.1, steps=2, method=name), "method")
    _raises(lambda: DriftAdjustedLR(hvp=name), "hvp")
    _raises(lambda: Alice(limit_method=name), "limit_method")


@SETTINGS
@given(size=st.integers(min_value=0, max_value=6).filter(lambda n: n != 2),
       kind=st.sampled_from(["tensor", "list", "complex-shape", "string"]))
def test_wrong_shapes_and_types_of_theta(size, kind):
    bad = {"tensor": torch.zeros(size, dtype=torch.float64), "list": [0.0] * size,
           "complex-shape": torch.zeros(2, 2, dtype=torch.float64), "string": "theta"}[kind]
    _raises(lambda: gradient_descent(OBJ, bad, lr=0.1, steps=1), "theta0")
    _raises(lambda: integrate(OBJ, bad, lr=0.1, steps=1), "theta0")
    _raises(lambda: OBJ.grad(bad), "theta")
    _raises(lambda: sharpness(OBJ, bad), "theta")


@SETTINGS
@given(p=st.one_of(st.floats(max_value=-1e-9, allow_nan=False), st.just(math.nan), st.just(math.inf)),
       value=bad_rate)
def test_controller_and_detector_settings(p, value):
    _raises(lambda: DriftAdjustedLR(p=p), "p")
    _raises(lambda: DriftAdjustedLR(max_lr=value), "max_lr")
    _raises(lambda: CorridorLR(scale=value), "scale")
    _raises(lambda: PAL(mu=value), "mu")
    _raises(lambda: PAL(s_max=value), "s_max")
    _raises(lambda: EoSDetector(band=value), "band")
    _raises(lambda: CorridorDetector(score_threshold=-abs(value) - 1 if isinstance(value, float)
                                     and math.isfinite(value) else math.nan), "score_threshold")
    _raises(lambda: EigenTracker(k=1, tol=value), "tol")


def test_objective_constructors():
    _raises(lambda: Objective.from_function("not callable", 2), "fn")
    _raises(lambda: Objective.from_function(lambda t: t, 2, theta0=[0.0, 1.0]), "scalar")
    _raises(lambda: Objective.from_module("model", torch.nn.functional.mse_loss,
                                          (torch.zeros(2, 1), torch.zeros(2, 1))), "model")
    _raises(lambda: Objective.from_module(torch.nn.Linear(1, 1), torch.nn.functional.mse_loss,
                                          (torch.zeros(2, 1), torch.zeros(2, 1)), mode="sideways"), "mode")


cli_keys = st.sampled_from(["steps", "lrs", "samples_per_step", "rtol", "atol", "flows"])
cli_values = st.one_of(st.text(alphabet="abcxyz!@#", min_size=1, max_size=6), st.sampled_from(["-1", "0", "-0.5", "nan",
                                                                                              "inf", "1e400", ""]))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=cli_keys, value=cli_values)
def test_cli_rejects_bad_values_in_one_line(key, value, tmp_path, capsys):
    code = main(["run", "pf-quadratic", "--set", f"{key}={value}", "--out", str(tmp_path / "o"),
                 "--figures", str(tmp_path / "f"), "--quiet", "--set", "steps=1", "--set", "samples_per_step=1"]
                if key not in ("steps", "samples_per_step") else
                ["run", "pf-quadratic", "--set", f"{key}={value}", "--out", str(tmp_path / "o"),
                 "--figures", str(tmp_path / "f"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2, (key, value, err)
    assert "Traceback" not in err and "\n" not in err, err


def test_differentiating_the_measured_loss_is_refused_not_zero():
    """Objective.loss has no graph: torch.func.grad of it would silently be zero, so it raises instead."""
    import torch

    from flows import Objective

    obj = Objective.from_function(lambda t: (t ** 3).sum(), 2)
    theta = torch.tensor([1.0, 2.0], dtype=torch.float64)
    with pytest.raises(TypeError, match="measurement without a graph"):
        torch.func.grad(obj.loss)(theta)
    with pytest.raises(TypeError, match="measurement without a graph"):
        obj.loss(theta.clone().requires_grad_(True))
    assert float(obj.loss(theta)) == 9.0
    assert torch.func.grad(lambda t: sum(p(t) for p in obj.pieces))(theta).tolist() == [3.0, 12.0]
