"""Option objects (Solver, Spectrum, Recording): the same run as the keyword shorthands, and loud misuse."""
import numpy as np
import pytest
import torch

from flows import EigenTracker, Recording, Solver, Spectrum, compare, integrate, local_error


def test_objects_and_shorthands_give_the_same_run(mlp_objective):
    theta0 = mlp_objective.theta0
    by_keywords = integrate(mlp_objective, theta0, "pf_topk", 0.5, steps=3, method="rk4", step_size=0.1, k=2,
                            eig_tol=1e-6, eig_refresh=0.0, states="projection", projection_size=5)
    by_objects = integrate(mlp_objective, theta0, "pf_topk", 0.5, steps=3, solver=Solver("rk4", step_size=0.1),
                           spectrum=Spectrum(k=2, tol=1e-6, refresh=0.0),
                           recording=Recording("projection", projection_size=5))
    np.testing.assert_array_equal(by_keywords.states, by_objects.states)
    assert by_objects.states.shape == (4, 5)
    assert by_keywords.config == by_objects.config


def test_a_setting_given_twice_or_unknown_is_a_type_error(cubic):
    with pytest.raises(TypeError, match="give rtol inside solver= or as keywords, not both"):
        integrate(cubic, flow="gf", lr=0.1, steps=2, solver=Solver("dopri5"), rtol=1e-6)
    with pytest.raises(TypeError, match="give method inside solver="):
        integrate(cubic, None, "gf", 0.1, None, "rk4", steps=2, solver=Solver(step_size=0.01))
    with pytest.raises(TypeError, match=r"unknown keyword argument\(s\) \['rtl'\]"):
        compare(cubic, lr=0.1, steps=2, flows="gf", rtl=1e-6)
    with pytest.raises(TypeError, match="solver must be a flows.Solver"):
        local_error(cubic, flow="gf", lr=0.1, solver={"method": "rk4"})


@pytest.mark.parametrize("make,match", [
    (lambda: Solver(rtol=-1.0), "rtol"), (lambda: Solver(chunk=0), "chunk"), (lambda: Spectrum(k=0), "k"),
    (lambda: Spectrum(tol=float("nan")), "eig_tol"), (lambda: Spectrum(tracker="warm"), "tracker"),
    (lambda: Recording("some"), "states must be one of"), (lambda: Recording(projection_size=0), "projection_size"),
])
def test_bad_option_values_are_named(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_compare_and_local_error_take_the_objects(cubic):
    solver = Solver("rk4", step_size=0.005)
    cmp = compare(cubic, lr=0.1, steps=4, flows=("gf", "pf_topk"), solver=solver,
                  spectrum=Spectrum(k=2, tracker=EigenTracker(k=2, method="dense")), recording=Recording("none"))
    assert cmp.flows["gf"].states is None and len(cmp.drift["gf"]) == 5
    assert cmp.flows["pf_topk"].config["method"] == "rk4"
    err = local_error(cubic, flow="igr", lr=0.05, solver=Solver("dopri8", rtol=1e-12, atol=1e-14))
    assert err == pytest.approx(local_error(cubic, flow="igr", lr=0.05, rtol=1e-12, atol=1e-14), rel=1e-9)
    assert err > 0 and torch.isfinite(torch.tensor(err))
