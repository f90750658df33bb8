"""VQ-GAN building blocks: GroupNorm, ResNet block, spatial self-attention, down/upsampling.

Numerically these follow the taming-transformers / LlamaGen definitions (GroupNorm with 32 groups and
eps 1e-6, swish, zero-padded stride-2 downsampling, nearest-neighbour upsampling, single-head attention
with scale C^-0.5), so published weights load and reproduce their outputs. The implementation is ours and
aimed at inference speed: fused scaled-dot-product attention, in-place activations when no gradient is
recorded, and no layout assumptions (channels-last inputs stay channels-last).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GROUPS = 32
EPS = 1e-6


def group_norm(channels: int) -> nn.GroupNorm:
    """The normalisation every VQ-GAN block uses: 32 groups, eps 1e-6, affine."""
    return nn.GroupNorm(GROUPS, channels, eps=EPS, affine=True)


def _norm_swish(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """GroupNorm followed by swish (x * sigmoid(x)); in place when no autograd graph is being built."""
    return F.silu(norm(x), inplace=not torch.is_grad_enabled())


class ResnetBlock(nn.Module):
    """norm-swish-conv3x3 twice plus a (1x1-projected when channels change) shortcut."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(_norm_swish(self.norm1, x))
        h = self.conv2(_norm_swish(self.norm2, h))
        shortcut = x if self.nin_shortcut is None else self.nin_shortcut(x)
        if torch.is_grad_enabled():
            return shortcut + h
        return h.add_(shortcut)


class AttnBlock(nn.Module):
    """Single-head self-attention over all spatial positions, with a residual connection.

    q, k, v and the output projection are 1x1 convolutions in the checkpoint layout, applied here as one
    matmul over the (B, HW, C) sequence so that `scaled_dot_product_attention` gets unit-stride inputs and
    takes its fused (flash) path on CPU and GPU instead of materialising the (HW x HW) weights.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        # positions as a sequence: (B, HW, C); the 1x1 convs become one fused q/k/v matmul
        h = self.norm(x).flatten(2).transpose(1, 2)
        weight = torch.cat([self.q.weight, self.k.weight, self.v.weight]).flatten(1)
        bias = torch.cat([self.q.bias, self.k.bias, self.v.bias])
        q, k, v = F.linear(h, weight, bias).unsqueeze(1).chunk(3, dim=-1)  # each (B, 1, HW, C), unit stride
        out = F.scaled_dot_product_attention(q, k, v).squeeze(1)
        out = F.linear(out, self.proj_out.weight.flatten(1), self.proj_out.bias)  # (B, HW, C)
        return x + out.transpose(1, 2).view(b, c, height, width)  # a view: channels-last strides


class Downsample(nn.Module):
    """Halve the resolution: pad one zero row/column at the bottom/right, then a stride-2 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour upsampling followed by a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
