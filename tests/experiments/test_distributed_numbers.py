"""Data-parallel objectives: 2 gloo processes give the 1-process numbers (the scaling benchmark's harness)."""
import numpy as np
import pytest

from experiments.benchmarks.scaling import measure

pytestmark = pytest.mark.distributed

CFG = {"n_train": 240, "widths": (64, 16, 10), "k": 3, "gd_steps": 20, "rounds": 1, "cores": 2, "timeout": 60.0}


def test_two_processes_equal_one_to_round_off():
    one, two = measure(1, CFG), measure(2, CFG)
    assert abs(one["loss"] - two["loss"]) <= 1e-14 * abs(one["loss"])
    for key in ("grad", "hvp", "theta_after_gd", "gd_losses"):
        np.testing.assert_allclose(two[key], one[key], rtol=1e-12, atol=1e-15, err_msg=key)
    np.testing.assert_allclose(two["eigenvalues"], one["eigenvalues"], rtol=1e-10)
    assert np.abs(one["grad"]).max() > 1e-6  # a real gradient, not zeros
