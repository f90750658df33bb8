"""Collectives that keep a quantizer's state identical on every rank, and do nothing without a process group.

Every helper is called by every rank in the same order with same-shaped tensors (an empty local batch
contributes zeros), so a rank with no data never leaves the others waiting in a collective.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a default process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over ranks in place; returns it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite `tensor` on every rank with rank `src`'s copy, in place; returns it."""
    if is_distributed():
        dist.broadcast(tensor, src=src)
    return tensor


def gather_counts(count: int, device: torch.device) -> list[int]:
    """Each rank's local `count` (e.g. its number of vectors), in rank order; [count] without a process group."""
    if not is_distributed():
        return [int(count)]
    world = dist.get_world_size()
    mine = torch.zeros(world, dtype=torch.int64, device=device)
    mine[dist.get_rank()] = int(count)
    dist.all_reduce(mine, op=dist.ReduceOp.SUM)
    return [int(c) for c in mine.tolist()]


def richest_rank(counts: list[int]) -> int:
    """The rank holding the most vectors (lowest rank on ties): the source for sampled codebook rows."""
    return max(range(len(counts)), key=lambda r: (counts[r], -r))
