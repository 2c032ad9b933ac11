"""Data-parallel full-batch objectives: the process group, the all-reduce of every sum, and the shard check."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor


def resolve_group(process_group: Any):
    """The process group to reduce over, or None (one process)."""
    import torch.distributed as dist

    if process_group is None:
        return None
    if isinstance(process_group, str):
        if process_group != "auto":
            raise ValueError(f"process_group must be 'auto', None or a ProcessGroup, got {process_group!r}")
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return None
        return dist.group.WORLD
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("process_group was given but torch.distributed is not initialised")
    return process_group


def all_reduce_sum(group) -> Callable[[Tensor], Tensor]:
    """A reduction that sums a tensor over the ranks of ``group`` (complex tensors as pairs of reals)."""
    import torch.distributed as dist

    def reduce(t: Tensor) -> Tensor:
        out = torch.view_as_real(t).clone() if t.is_complex() else t.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return torch.view_as_complex(out) if t.is_complex() else out

    return reduce


_DTYPE_CODES = (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128)


def check_shards(group, params: Sequence[Tensor], batches: list[tuple[Tensor, Tensor]], n_local: int) -> int:
    """Same D and example shapes on every rank (else a ValueError on every rank); returns N = Σ shard sizes."""
    import torch.distributed as dist

    x0, y0 = batches[0]
    device = params[0].device  # nccl reduces CUDA tensors only; gloo takes CPU ones
    codes = {dtype: i for i, dtype in enumerate(_DTYPE_CODES)}
    sig = torch.tensor([sum(p.numel() for p in params), x0[0].numel(), y0[0].numel() if y0.ndim > 1 else 1,
                        codes.get(params[0].dtype, -1), codes.get(x0.dtype, -1)],
                       dtype=torch.float64, device=device)
    lo, hi = sig.clone(), sig.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN, group=group)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX, group=group)
    if not torch.equal(lo, hi):
        what = [n for n, a, b in zip(("parameter count D", "input size per example", "target size per example",
                                      "parameter dtype", "input dtype"), lo.tolist(), hi.tolist()) if a != b]
        raise ValueError(f"data-parallel shards disagree across ranks on {', '.join(what)} "
                         f"(min {lo.tolist()}, max {hi.tolist()} for [D, input, target, parameter dtype, input "
                         f"dtype], dtypes coded {', '.join(f'{i}={d}' for i, d in enumerate(_DTYPE_CODES))}) "
                         f"on rank {dist.get_rank(group)}")
    n = torch.tensor([float(n_local)], dtype=torch.float64, device=device)
    dist.all_reduce(n, op=dist.ReduceOp.SUM, group=group)
    return int(n.item())


def broadcast_from_first(tensor: Tensor, group: Any) -> None:
    """Overwrite ``tensor`` on every rank with the group's first rank's value (one starting point for all)."""
    import torch.distributed as dist

    dist.broadcast(tensor, src=dist.get_global_rank(group, 0) if group is not dist.group.WORLD else 0, group=group)
