"""Data-parallel objectives: 2 gloo processes give the 1-process numbers; bad shards fail on every rank."""
import datetime
import os
import time

import numpy as np
import pytest
import torch

from experiments.bench_scaling import _free_port, measure

pytestmark = pytest.mark.distributed

CFG = {"n_train": 240, "widths": (64, 16, 10), "k": 3, "gd_steps": 20, "rounds": 1, "cores": 2, "timeout": 60.0}


def test_two_processes_equal_one_to_round_off():
    one, two = measure(1, CFG), measure(2, CFG)
    assert abs(one["loss"] - two["loss"]) <= 1e-14 * abs(one["loss"])
    for key in ("grad", "hvp", "theta_after_gd", "gd_losses"):
        np.testing.assert_allclose(two[key], one[key], rtol=1e-12, atol=1e-15, err_msg=key)
    np.testing.assert_allclose(two["eigenvalues"], one["eigenvalues"], rtol=1e-10)
    assert np.abs(one["grad"]).max() > 1e-6  # a real gradient, not zeros


def _bad_worker(rank, world, port, mode, queue):
    import torch.distributed as dist

    from experiments.datasets import fc_tanh, half_mse
    from flows import Objective

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=5))
    start = time.perf_counter()
    try:
        x, y = torch.randn(8, 4, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
        if mode == "crash" and rank == 1:
            raise RuntimeError("rank 1 failed before building its objective")
        width = 6 + (rank if mode == "mismatch" else 0)
        dtype = torch.float32 if mode == "dtype" and rank == 1 else torch.float64
        Objective.from_module(fc_tanh((4, width, 2), dtype=dtype), half_mse, (x.to(dtype), y.to(dtype)))
        queue.put((rank, "ok", time.perf_counter() - start))
    except Exception as err:  # report every rank's error
        queue.put((rank, f"{type(err).__name__}: {err}", time.perf_counter() - start))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("mode", ["mismatch", "dtype", "crash"])
def test_bad_shards_fail_on_every_rank_without_hanging(mode):
    ctx = torch.multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_bad_worker, args=(r, 2, port, mode, queue)) for r in range(2)]
    for p in procs:
        p.start()
    reports = dict((r, (msg, t)) for r, msg, t in (queue.get(timeout=60) for _ in procs))
    for p in procs:
        p.join(timeout=30)
    if mode in ("mismatch", "dtype"):  # a float32/float64 mix used to abort a rank with SIGABRT
        what = "parameter count D" if mode == "mismatch" else "parameter dtype, input dtype"
        for rank in (0, 1):
            assert f"disagree across ranks on {what}" in reports[rank][0], reports
    else:
        assert "rank 1 failed" in reports[1][0]
        assert reports[0][0] != "ok" and reports[0][1] < 30, reports  # rank 0 gets an error, not a hang
