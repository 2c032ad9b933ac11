"""One memory estimate (flows.records.trajectory.record_bytes) for every runner that sizes arrays from user input:
within 1.5× of a measured peak, aware of the process's address-space limit, and checked before anything is allocated."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flows import Objective, central_flow, loss_plane
from flows.records.trajectory import MemoryEstimateError

ROOT = Path(__file__).resolve().parents[3]

MEASURE = r"""
import json, sys, torch
from flows import Objective, gradient_descent
from flows.records.trajectory import record_bytes
torch.set_num_threads(1)
dim, steps = int(sys.argv[1]), int(sys.argv[2])
obj = Objective.from_function(lambda t: 0.5 * (t * t).sum(), dim)
theta = torch.ones(dim, dtype=torch.float64)
gradient_descent(obj, theta, 0.1, 2, states="full")  # warm up the allocator and torch
def rss(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
before = rss("VmRSS:")
traj = gradient_descent(obj, theta, 0.1, steps, states="full")
print(json.dumps({"peak": rss("VmHWM:") - before, "estimate": record_bytes(steps + 1, dim, "full")}))
"""

LIMITED = r"""
import resource, sys, torch
from flows import Objective, gradient_descent
from flows.records.trajectory import MemoryEstimateError, available_memory
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
assert available_memory() < 4 << 30, available_memory()
obj = Objective.from_function(lambda t: 0.5 * (t * t).sum(), 1000)
try:
    gradient_descent(obj, torch.ones(1000, dtype=torch.float64), 0.1, 10, states="projection", projection_size=10**6)
except MemoryEstimateError as err:
    print("refused:", err)
"""


def test_the_estimate_is_within_one_and_a_half_of_the_measured_peak():
    out = subprocess.run([sys.executable, "-c", MEASURE, "200000", "150"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={"MALLOC_MMAP_THRESHOLD_": "65536", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout.strip().splitlines()[-1])
    ratio = found["estimate"] / found["peak"]
    assert 1 / 1.5 <= ratio <= 1.5, found


def test_the_address_space_limit_is_honoured():
    out = subprocess.run([sys.executable, "-c", LIMITED], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout and "projection" in out.stdout  # the 8 GB projection matrix, before allocating


def test_central_flow_and_planes_are_sized_before_allocating():
    obj = Objective.from_function(lambda t: 0.5 * (t * t).sum(), 3)
    theta = torch.ones(3, dtype=torch.float64)
    with pytest.raises(MemoryEstimateError, match="recording 1,000,000,000,001 rows"):
        central_flow(obj, theta, 0.1, 10 ** 12)
    grid = torch.zeros(10 ** 5)
    with pytest.raises(MemoryEstimateError, match="plane of 100,000 × 100,000 points"):
        loss_plane(obj, theta, torch.tensor([1.0, 0, 0]), torch.tensor([0, 1.0, 0]), grid, grid)
