"""Data-parallel objectives: bad shards fail on every rank, without hanging (the 1-process equality of 2 gloo
processes is tested through the scaling benchmark's harness, tests/experiments/test_distributed_numbers.py)."""
import datetime
import os
import socket
import time

import pytest
import torch

pytestmark = pytest.mark.distributed

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bad_worker(rank, world, port, mode, queue):
    import torch.distributed as dist
    from models import fc_tanh, half_mse

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
