"""Thread settings of every library a benchmark touches: pinned for the measurement, printed with the table.

A ratio against a baseline means nothing when one side runs with oversubscribed
threads (scipy's OpenBLAS at 2 threads beside torch's 2 on 2 cores made
``eigsh`` 4× slower), so every benchmark pins torch's intra-op pool and every
BLAS/OpenMP pool that threadpoolctl finds to the same count, and writes them
in its header.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def describe_threads() -> str:
    """torch's intra-/inter-op threads and each BLAS/OpenMP pool loaded in this process, as one line."""
    from threadpoolctl import threadpool_info

    pools = [f"{p.get('internal_api')} {p.get('version') or ''} ({p.get('prefix')}) {p.get('num_threads')}"
             .replace("  ", " ") for p in threadpool_info()]
    return (f"threads: torch {torch.get_num_threads()} intra-op / {torch.get_num_interop_threads()} inter-op; "
            + ("; ".join(pools) if pools else "no BLAS/OpenMP pool loaded"))


def load_thread_pools() -> None:
    """Import the libraries whose BLAS/OpenMP pools a benchmark may use, so that a limit set now reaches them
    (threadpoolctl limits only the pools loaded when it is called)."""
    import scipy.sparse.linalg  # noqa: F401
    import sklearn.datasets  # noqa: F401


@contextlib.contextmanager
def pinned_threads(threads: int = 0) -> Iterator[str]:
    """Pin torch and every BLAS/OpenMP pool to ``threads`` (0: torch's current count) and yield the description."""
    load_thread_pools()
    from threadpoolctl import threadpool_limits

    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ValueError(f"threads must be an int ≥ 0 (0: torch's current count), got {threads!r}")
    count = threads or torch.get_num_threads()
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        with threadpool_limits(limits=count):
            yield describe_threads()
    finally:
        torch.set_num_threads(before)
