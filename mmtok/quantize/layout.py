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


def checked_rows(z, channel_dim: int, dim: int, what: str) -> tuple[torch.Tensor, torch.Size, int]:
    """`to_rows` of a quantizer input after checking it: a floating tensor with `dim` channels at `channel_dim`
    (ValueError naming `what` otherwise). Returns (rows, lead shape, the resolved channel axis)."""
    if not isinstance(z, torch.Tensor) or not z.is_floating_point():
        raise ValueError(f"{what}: z must be a floating tensor")
    axis = resolve_channel_dim(channel_dim, z.dim(), what)
    if z.shape[axis] != dim:
        raise ValueError(f"{what}: z has {z.shape[axis]} channels at channel_dim={axis} (shape {tuple(z.shape)}), "
                         f"expected dim={dim}")
    rows, lead = to_rows(z, axis)
    return rows, lead, axis
