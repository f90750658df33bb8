"""Emu3 VQ-VAE building blocks that the image VQ-GAN layers do not have.

- `CausalConv3d`: a 3D convolution whose time axis sees only the past (two frames of left context, zeros at the
  start, as in the published model whatever the kernel), with an optional `TemporalState` that carries those two
  frames from one chunk to the next, so a long video can be processed chunk by chunk with the same result as one
  pass. The context is concatenated in front once; the spatial zero padding is the convolution's own.
- `TemporalResnetBlock`, `TemporalDownsample`, `TemporalUpsample`: the latent-resolution temporal stacks
  (BatchNorm3d with running statistics, swish, causal convs; stride-2 downsampling; nearest 2x upsampling).
- `SpatialNorm`: GroupNorm modulated by the quantised latent (MoVQ-style), computed in one pass: the 1x1
  convolutions run at the latent resolution and are broadcast over each upsampled block instead of being
  evaluated on an interpolated copy.
- `Attention`: multi-head self-attention over all positions with Linear q/k/v/out projections (the published key
  layout), one fused q/k/v matmul and `scaled_dot_product_attention`.

Numerics follow the published Emu3 definitions (GroupNorm 32 groups eps 1e-6, BatchNorm eps 1e-5, swish); the
implementation is ours.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...image.layers import EPS, GROUPS, group_norm, runs_in_lowp

CONTEXT = 2  # frames of causal left context every temporal convolution sees


class TemporalState:
    """The causal context of a chunked pass: for every temporal convolution, the last input frames it saw.

    One state object per stream; pass it to every call of the stack, chunk after chunk. A fresh state means
    "the stream starts here" (zeros in front, as a one-pass run)."""

    def __init__(self):
        self._context: dict[int, torch.Tensor] = {}

    def take(self, module: nn.Module) -> torch.Tensor | None:
        return self._context.get(id(module))

    def put(self, module: nn.Module, frames: torch.Tensor) -> None:
        self._context[id(module)] = frames

    def clear(self) -> None:
        self._context.clear()


class CausalConv3d(nn.Module):
    """(B, C, T, H, W) -> (B, O, T', H', W'): Conv3d over [2 frames of context, x], spatial padding (k - s) split
    with the extra pixel first. Holds its convolution as `.conv` (the checkpoint's key layout)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int, int],
                 stride: tuple[int, int, int] = (1, 1, 1)):
        super().__init__()
        pads = [k - s for k, s in zip(kernel_size[1:], stride[1:])]
        self._symmetric = all(p % 2 == 0 for p in pads)
        self._spatial = (pads[1] // 2 + pads[1] % 2, pads[1] // 2, pads[0] // 2 + pads[0] % 2, pads[0] // 2)
        padding = (0, pads[0] // 2, pads[1] // 2) if self._symmetric else 0
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor, state: TemporalState | None = None) -> torch.Tensor:
        context = state.take(self) if state is not None else None
        if context is None:
            context = x.new_zeros(x.shape[0], x.shape[1], CONTEXT, *x.shape[3:])
        x = torch.cat([context, x], dim=2)
        if state is not None:
            state.put(self, x[:, :, -CONTEXT:].clone())  # a copy: the chunk itself is not kept
        if not self._symmetric:
            x = F.pad(x, self._spatial)
        return self.conv(x)


def _swish_(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x, inplace=not torch.is_grad_enabled())


class TemporalResnetBlock(nn.Module):
    """BatchNorm3d-swish-causal conv 3x3x3, twice, plus a (1x1x1-projected when channels change) shortcut."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = nn.BatchNorm3d(in_channels)
        self.conv1 = CausalConv3d(in_channels, out_channels, (3, 3, 3))
        self.norm2 = nn.BatchNorm3d(out_channels)
        self.conv2 = CausalConv3d(out_channels, out_channels, (3, 3, 3))
        self.nin_shortcut = nn.Conv3d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, state: TemporalState | None = None) -> torch.Tensor:
        h = self.conv1(_swish_(self.norm1(x)), state)
        h = self.conv2(_swish_(self.norm2(h)), state)
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class TemporalDownsample(nn.Module):
    """Halve the frame rate: causal conv with kernel (4, 3, 3), stride (2, 1, 1)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = CausalConv3d(channels, channels, (4, 3, 3), (2, 1, 1))

    def forward(self, x: torch.Tensor, state: TemporalState | None = None) -> torch.Tensor:
        return self.conv(x, state)


class TemporalUpsample(nn.Module):
    """Double the frame rate: every frame repeated twice, then a causal 3x3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = CausalConv3d(channels, channels, (3, 3, 3))

    def forward(self, x: torch.Tensor, state: TemporalState | None = None) -> torch.Tensor:
        return self.conv(x.repeat_interleave(2, dim=2), state)


def group_moments(x: torch.Tensor, groups: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(sample, group) mean and 1/std of a 4D tensor, (B, G, 1) each, fp32 or fp64 as x (fp32 for lower).

    Channels-last CPU input uses per-channel pairwise sums of x and x^2 (what `mmtok.image.layers.GroupNorm`
    does, accurate to ~1e-6 for VQ-GAN activations); other layouts use torch.var_mean over each group."""
    b, c, h, w = x.shape
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        rows = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
        total = rows.sum(1).view(b, groups, -1).sum(-1, keepdim=True)
        squares = torch.linalg.vecdot(rows, rows, dim=1).view(b, groups, -1).sum(-1, keepdim=True)
        count = h * w * (c // groups)
        mean = total / count
        var = (squares / count - mean * mean).clamp_min(0)
    else:
        var, mean = torch.var_mean(x.reshape(b, groups, -1), dim=-1, correction=0, keepdim=True)
    return mean, torch.rsqrt(var + eps)


class SpatialNorm(nn.Module):
    """GroupNorm(x) * conv_y(q) + conv_b(q), q the quantised latent upsampled (nearest) to x's size.

    x: (N, C, H, W), q: (N, D, h, w) with H, W integer multiples of h, w. The normalisation's affine and the
    modulation fold into one multiply-add per element, x * scale + shift, with scale and shift computed at the
    latent resolution and broadcast over each (H/h x W/w) block: no interpolated copy of q, no full-size
    conv_y / conv_b outputs. The result has x's memory format."""

    def __init__(self, quant_channels: int, channels: int):
        super().__init__()
        self.norm_layer = nn.GroupNorm(GROUPS, channels, eps=EPS, affine=True)
        self.conv_y = nn.Conv2d(quant_channels, channels, 1)
        self.conv_b = nn.Conv2d(quant_channels, channels, 1)

    def forward(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        n, c, height, width = x.shape
        h, w = q.shape[-2:]
        if height % h or width % w:
            raise ValueError(f"SpatialNorm: feature size {(height, width)} is not a multiple of the latent {(h, w)}")
        ry, rx = height // h, width // w
        mean, rstd = group_moments(x, self.norm_layer.num_groups, self.norm_layer.eps)  # (N, G, 1)
        gamma = self.norm_layer.weight.float().view(self.norm_layer.num_groups, -1)
        a = (rstd * gamma).reshape(n, c, 1, 1)  # x multiplier of the plain GroupNorm
        beta = self.norm_layer.bias.float().view(1, c, 1, 1) - (mean * rstd * gamma).reshape(n, c, 1, 1)
        y = self.conv_y(q).float()
        scale = a * y  # (N, C, h, w)
        shift = beta * y + self.conv_b(q).float()
        dtype = x.dtype
        scale, shift = scale.to(dtype), shift.to(dtype)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            xv = x.permute(0, 2, 3, 1).view(n, h, ry, w, rx, c)
            out = torch.addcmul(shift.permute(0, 2, 3, 1).view(n, h, 1, w, 1, c), xv,
                                scale.permute(0, 2, 3, 1).view(n, h, 1, w, 1, c))
            return out.view(n, height, width, c).permute(0, 3, 1, 2)
        xv = x.reshape(n, c, h, ry, w, rx)
        out = torch.addcmul(shift.view(n, c, h, 1, w, 1), xv, scale.view(n, c, h, 1, w, 1))
        return out.view(n, c, height, width)


class Attention(nn.Module):
    """Multi-head self-attention over all positions of a (B, C, H, W) map, Linear projections, no residual.

    Returns the attention output in x's layout (channels-last input gives channels-last output); the caller adds
    the residual. `lowp` runs the projections and attention in that dtype (softmax accumulated in fp32 by SDPA)."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"Attention: {channels} channels do not split into {heads} heads")
        self.heads = heads
        self.q_proj = nn.Linear(channels, channels)
        self.k_proj = nn.Linear(channels, channels)
        self.v_proj = nn.Linear(channels, channels)
        self.out_proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, lowp: torch.dtype | None = None) -> torch.Tensor:
        b, c, height, width = x.shape
        seq = x.permute(0, 2, 3, 1).reshape(b, height * width, c)  # a view for channels-last x
        weight = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
        bias = torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])
        out_weight, out_bias = self.out_proj.weight, self.out_proj.bias
        low = runs_in_lowp(c, lowp)
        if low:
            seq, weight, bias, out_weight = seq.to(lowp), weight.to(lowp), bias.to(lowp), out_weight.to(lowp)
        qkv = F.linear(seq, weight, bias).view(b, height * width, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, HW, d) each
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, height * width, c)
        out = F.linear(out, out_weight).float().add_(out_bias) if low else F.linear(out, out_weight, out_bias)
        return out.view(b, height, width, c).permute(0, 3, 1, 2)


class SpatialResnetBlock(nn.Module):
    """The decoder's ResNet block: SpatialNorm-swish-conv3x3 twice plus a (1x1-projected) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, quant_channels: int):
        super().__init__()
        self.norm1 = SpatialNorm(quant_channels, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = SpatialNorm(quant_channels, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        h = self.conv1(_swish_(self.norm1(x, q)))
        h = self.conv2(_swish_(self.norm2(h, q)))
        shortcut = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return shortcut + h if torch.is_grad_enabled() else h.add_(shortcut)


__all__ = ["CONTEXT", "TemporalState", "CausalConv3d", "TemporalResnetBlock", "TemporalDownsample",
           "TemporalUpsample", "SpatialNorm", "SpatialResnetBlock", "Attention", "group_moments", "group_norm"]
