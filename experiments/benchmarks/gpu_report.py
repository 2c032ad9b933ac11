"""`make bench-gpu`: the CUDA tests and the HVP, eigensolver and flow-cost tables on a GPU, gathered into one file.

Run on a machine with a CUDA device (it refuses without one, naming the check). It runs, each under its own time
limit so the whole stays within ``--budget`` seconds (default 480):

1. ``pytest tests/flows/curvature/test_device.py`` (the hot paths stay on the device; CUDA cases included);
2. ``driftlab run bench-hvp``, ``bench-spectrum``, ``bench-flows`` and ``bench-batching`` (whether one batched
   backward beats a loop of single products on the GPU, what ``batching="auto"`` assumes there) with
   ``--device cuda`` into ``--out``;

and writes ``--report`` (default ``docs/benchmarks_gpu.md``): the device, torch and CUDA versions, each step's
status and seconds, and the Markdown tables. A step that fails or runs out of time is reported as such;
the others still run. ``--dry-run`` prints the plan without running anything (what the CPU tests check).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCHES = ("bench-hvp", "bench-spectrum", "bench-flows", "bench-batching")
TABLES = {"bench-hvp": ["bench_hvp.md"], "bench-spectrum": ["bench_spectrum.md"],
          "bench-flows": ["bench_flows.md", "bench_flows_central.md"], "bench-batching": ["bench_batching.md"]}


def plan(out: Path) -> list[tuple[str, list[str]]]:
    """(name, command) of every step, in order."""
    steps = [("cuda-tests", [sys.executable, "-m", "pytest", "-q", "tests/flows/curvature/test_device.py"])]
    for name in BENCHES:
        steps.append((name, [sys.executable, "-m", "experiments", "run", name, "--device", "cuda", "--out",
                             str(out / name), "--overwrite", "--quiet"]))
    return steps


def _device_line() -> str:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("bench-gpu: torch.cuda.is_available() is False; run it on a machine with a CUDA device "
                         "and a CUDA build of torch (make install TORCH_SPEC=...)")
    return (f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
            f"{torch.cuda.get_device_properties(0).total_memory / 2 ** 30:.0f} GiB")


def main(argv: list[str] | None = None) -> int:
    """Run the plan (or print it with ``--dry-run``) and write the report; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/gpu"))
    parser.add_argument("--report", type=Path, default=Path("docs/benchmarks_gpu.md"))
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for all steps together")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    steps = plan(args.out)
    if args.dry_run:
        for name, command in steps:
            print(f"{name}: {' '.join(command)}")
        return 0
    lines = ["# driftlab on a GPU", "", f"Device: {_device_line()}. Written by `make bench-gpu` "
             f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).", "", "| step | status | seconds |",
             "|---|---|---|"]
    tables: list[str] = []
    start, failed = time.monotonic(), False
    for i, (name, command) in enumerate(steps):
        left = args.budget - (time.monotonic() - start)
        limit = max(10.0, left / (len(steps) - i))
        clock = time.monotonic()
        try:
            status = "ok" if subprocess.run(command, timeout=limit).returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            status = f"out of time ({limit:.0f} s)"
        failed |= status != "ok"
        lines.append(f"| {name} | {status} | {time.monotonic() - clock:.0f} |")
        for table in TABLES.get(name, []):
            path = args.out / name / table
            if path.is_file():
                tables += ["", f"## {name}: {table}", "", path.read_text().strip()]
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text("\n".join(lines + tables) + "\n")
    print(f"report: {args.report}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
