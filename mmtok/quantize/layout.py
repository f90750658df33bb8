"""Moving the channel dimension of (B, C, H, W), (B, T, C) or (N, C) tensors to rows of vectors and back."""
from __future__ import annotations

import torch


def resolve_channel_dim(channel_dim: int, ndim: int, what: str) -> int:
    """`channel_dim` as a non-negative axis of an `ndim`-d tensor (ValueError naming `what` otherwise)."""
    if not isinstance(channel_dim, int) or not -ndim <= channel_dim < ndim:
        raise ValueError(f"{what}: channel_dim={channel_dim!r} is not an axis of a {ndim}-d tensor")
    return channel_dim % ndim


def to_rows(z: torch.Tensor, channel_dim: int) -> tuple[torch.Tensor, torch.Size]:
    """(N, C) rows with N = product of the other dims, and the shape of those other dims (the index shape)."""
    moved = z.movedim(channel_dim, -1)
    return moved.reshape(-1, moved.shape[-1]), moved.shape[:-1]


def from_rows(rows: torch.Tensor, lead_shape: torch.Size, channel_dim: int) -> torch.Tensor:
    """Inverse of `to_rows`: (N, C) rows back to lead_shape with the channels at `channel_dim`."""
    return rows.reshape(*lead_shape, rows.shape[-1]).movedim(-1, channel_dim)
