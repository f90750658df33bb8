"""VQ-GAN building blocks: GroupNorm, ResNet block, spatial self-attention, down/upsampling.

Numerically these follow the taming-transformers / LlamaGen definitions (GroupNorm with 32 groups and
eps 1e-6, swish, zero-padded stride-2 downsampling, nearest-neighbour upsampling, single-head attention
with scale C^-0.5), so published weights load and reproduce their outputs. The implementation is ours and
aimed at inference speed: fused scaled-dot-product attention, in-place activations when no gradient is
recorded, and no layout assumptions (channels-last inputs stay channels-last).

The encoder blocks take an optional `lowp` dtype (bf16/fp16): the mixed-precision policy of the bf16 encode
path, see `lowp_conv` and docs/image.md. With `lowp=None` every block computes exactly as before (fp32, or
whatever an enclosing autocast decides, which is how the decoder runs in bf16).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import group_norm_channels_last

GROUPS = 32
EPS = 1e-6


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm whose channels-last CPU path is accurate.

    PyTorch's channels-last GroupNorm CPU kernel accumulates its statistics naively (errors near 1e-4 on
    64x64 activations, enough to move VQ latents past the fixtures' 1e-5); here per-channel sums of x and x^2
    use pairwise summation and the normalisation is one fused multiply-add in the same layout. The variance
    is E[x^2] - E[x]^2, accurate to ~1e-6 while a group's |mean| / std stays below ~100 (true of VQ-GAN
    activations); contiguous NCHW inputs and GPUs use PyTorch's kernel. At fp32 inference the compiled two-pass
    kernel (`mmtok.ops.group_norm_channels_last`, double-precision statistics) replaces both when available.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = group_norm_channels_last(x, self.weight, self.bias, self.num_groups, self.eps)
        if fused is not None:
            return fused
        if (x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or x.dim() != 4
                or x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last)):
            return super().forward(x)  # reduced precision: the native kernel's error is below bf16 rounding
        b, c, h, w = x.shape
        groups = self.num_groups
        rows = x.permute(0, 2, 3, 1).reshape(b, h * w, c)  # a view of the channels-last memory
        total = rows.sum(1).view(b, groups, -1).sum(-1, keepdim=True)
        squares = torch.linalg.vecdot(rows, rows, dim=1).view(b, groups, -1).sum(-1, keepdim=True)
        count = h * w * (c // groups)
        mean = total / count
        rstd = torch.rsqrt((squares / count - mean * mean).clamp_min(0) + self.eps)
        scale = (rstd * self.weight.view(groups, -1)).reshape(b, 1, c)
        shift = self.bias.view(1, 1, c) - (mean * rstd * self.weight.view(groups, -1)).reshape(b, 1, c)
        out = torch.addcmul(shift, rows, scale)
        return out.view(b, h, w, c).permute(0, 3, 1, 2)


def group_norm(channels: int) -> GroupNorm:
    """The normalisation every VQ-GAN block uses: 32 groups, eps 1e-6, affine."""
    return GroupNorm(GROUPS, channels, eps=EPS, affine=True)


def runs_in_lowp(in_channels: int, lowp: torch.dtype | None) -> bool:
    """Whether a layer reading `in_channels` channels multiplies in `lowp`: only when it reads more channels than
    there are GroupNorm groups. Narrower layers (the 3-channel image conv, 32-channel full-resolution levels of
    small models) gain little from bf16 and their rounding moves the latent most, so they stay fp32."""
    return lowp is not None and in_channels > GROUPS


def lowp_conv(conv: nn.Conv2d, x: torch.Tensor, lowp: torch.dtype | None) -> torch.Tensor:
    """`conv(x)` with inputs and weights rounded to `lowp` (products accumulated in fp32 by oneDNN / cuDNN),
    the bf16 output widened to fp32 before the fp32 bias is added, so the activations and the residual trunk
    that receive it stay fp32. Runs the plain fp32 `conv(x)` when `runs_in_lowp` says no."""
    if not runs_in_lowp(conv.in_channels, lowp):
        return conv(x)
    y = F.conv2d(x.to(lowp), conv.weight.to(lowp), None, conv.stride, conv.padding, conv.dilation, conv.groups)
    return y.float().add_(conv.bias.view(1, -1, 1, 1))


def _norm_swish(norm: nn.GroupNorm, x: torch.Tensor, lowp: torch.dtype | None = None) -> torch.Tensor:
    """GroupNorm followed by swish (x * sigmoid(x)); in place when no autograd graph is being built.

    With `lowp` (the input of a bf16 convolution) both run in fp32 and the result is rounded to `lowp` once; the
    statistics then come from PyTorch's kernel, whose channels-last error (~3e-5) is far below that rounding.
    At fp32 channels-last CPU inference one compiled kernel does both (see `GroupNorm`).
    """
    if lowp is None:
        fused = group_norm_channels_last(x, norm.weight, norm.bias, norm.num_groups, norm.eps, swish=True)
        if fused is not None:
            return fused
        return F.silu(norm(x), inplace=not torch.is_grad_enabled())
    y = F.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)
    return F.silu(y, inplace=not torch.is_grad_enabled()).to(lowp)


norm_swish = _norm_swish  # the public name, for the other VQ-GAN families built from these blocks


def _lowp_for(conv: nn.Conv2d, lowp: torch.dtype | None) -> torch.dtype | None:
    return lowp if runs_in_lowp(conv.in_channels, lowp) else None


lowp_for = _lowp_for


class ResnetBlock(nn.Module):
    """norm-swish-conv3x3 twice plus a (1x1-projected when channels change) shortcut."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, lowp: torch.dtype | None = None) -> torch.Tensor:
        h = lowp_conv(self.conv1, _norm_swish(self.norm1, x, _lowp_for(self.conv1, lowp)), lowp)
        h = lowp_conv(self.conv2, _norm_swish(self.norm2, h, _lowp_for(self.conv2, lowp)), lowp)
        shortcut = x if self.nin_shortcut is None else lowp_conv(self.nin_shortcut, x, lowp)
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

    def forward(self, x: torch.Tensor, lowp: torch.dtype | None = None) -> torch.Tensor:
        b, c, height, width = x.shape
        # positions as a sequence: (B, HW, C); the 1x1 convs become one fused q/k/v matmul
        h = self.norm(x).flatten(2).transpose(1, 2)
        weight = torch.cat([self.q.weight, self.k.weight, self.v.weight]).flatten(1)
        bias = torch.cat([self.q.bias, self.k.bias, self.v.bias])
        out_weight, out_bias = self.proj_out.weight.flatten(1), self.proj_out.bias
        if runs_in_lowp(c, lowp):  # bf16 matmuls (softmax accumulated in fp32 inside SDPA), fp32 norm and residual
            h, weight, bias, out_weight = h.to(lowp), weight.to(lowp), bias.to(lowp), out_weight.to(lowp)
        q, k, v = F.linear(h, weight, bias).unsqueeze(1).chunk(3, dim=-1)  # each (B, 1, HW, C), unit stride
        out = F.scaled_dot_product_attention(q, k, v).squeeze(1)
        if runs_in_lowp(c, lowp):
            out = F.linear(out, out_weight).float().add_(out_bias)
        else:
            out = F.linear(out, out_weight, out_bias)  # (B, HW, C)
        return x + out.transpose(1, 2).view(b, c, height, width)  # a view: channels-last strides


class Downsample(nn.Module):
    """Halve the resolution: pad one zero row/column at the bottom/right, then a stride-2 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor, lowp: torch.dtype | None = None) -> torch.Tensor:
        if runs_in_lowp(self.conv.in_channels, lowp):
            x = x.to(lowp)  # pad the half-size copy
        return lowp_conv(self.conv, F.pad(x, (0, 1, 0, 1)), lowp)


def _subpixel_taps(w: torch.Tensor, axis: int) -> list[torch.Tensor]:
    """The 3 taps of a 3x3 kernel along `axis` folded into 2 for each output phase of a 2x nearest upsample.

    Output row 2i+a of conv3x3(upsample(x)) reads upsampled rows 2i+a-1 .. 2i+a+1, which are input rows
    (i-1, i, i) for a=0 and (i, i, i+1) for a=1: two distinct input rows, so taps sharing a row are summed.
    """
    t0, t1, t2 = w.unbind(axis)
    return [torch.stack([t0, t1 + t2], axis), torch.stack([t0 + t1, t2], axis)]


def subpixel_weight(w: torch.Tensor) -> torch.Tensor:
    """(O, I, 3, 3) -> (4*O, I, 2, 2): one 2x2 kernel per output phase (a, b), phase-major."""
    phases = []
    for rows in _subpixel_taps(w, 2):  # (O, I, 2, 3) per row phase a
        phases.extend(_subpixel_taps(rows, 3))  # (O, I, 2, 2) per column phase b
    return torch.cat(phases, 0)


class _PhaseCache:
    """The phase weights derived from one (weight, bias) state, one copy per memory format asked for.

    It holds detached aliases of the source tensors, so their storage stays allocated while the cache lives:
    a data pointer seen here can then never be reused by another tensor, and (pointer, version counter, shape,
    strides, dtype, device) identifies the source state exactly. An in-place update bumps the version, a
    `.data` swap or `load_state_dict(assign=True)` changes the pointer; both rebuild.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        self.sources = (weight.detach(), bias.detach())
        self.versions = (weight._version, bias._version)
        self.by_format: dict[torch.memory_format, tuple[torch.Tensor, torch.Tensor]] = {}

    def matches(self, weight: torch.Tensor, bias: torch.Tensor) -> bool:
        return all(
            t.data_ptr() == s.data_ptr() and t._version == v and t.shape == s.shape and t.stride() == s.stride()
            and t.dtype == s.dtype and t.device == s.device
            for t, s, v in zip((weight, bias), self.sources, self.versions)
        )

    def get(self, memory_format: torch.memory_format) -> tuple[torch.Tensor, torch.Tensor]:
        if memory_format not in self.by_format:
            # built as ordinary tensors even inside inference_mode, so that they stay usable outside it
            with torch.inference_mode(False), torch.no_grad():
                self.by_format[memory_format] = _phase_weights(*self.sources, memory_format)
        return self.by_format[memory_format]


def _phase_weights(weight: torch.Tensor, bias: torch.Tensor,
                   memory_format: torch.memory_format) -> tuple[torch.Tensor, torch.Tensor]:
    return subpixel_weight(weight).contiguous(memory_format=memory_format), bias.repeat(4)


def _conv_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last for a (strictly) channels-last input, else contiguous: the layout the phase conv runs in."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour upsampling followed by a 3x3 conv.

    Computed without materialising the upsampled tensor: the four output phases of conv3x3(nearest2x(x))
    are 2x2 convolutions of x (16 instead of 36 multiply-adds per output pixel and channel pair), run as
    one convolution with 4x the output channels and interleaved. Equal to the direct form up to fp32
    summation order. The output has the input's memory format whatever the conv weight's layout is.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self._phase_cache: _PhaseCache | None = None  # derived from conv, not saved

    def phase_weights(self, memory_format: torch.memory_format = torch.contiguous_format
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """(4*O, I, 2, 2) weight in `memory_format` and (4*O,) bias.

        Cached when no autograd graph is recorded (no_grad or inference_mode), rebuilt whenever conv's weight
        or bias changes (in place, swapped, moved, cast). Not cached while compiling (the graph folds it) nor
        for parameters that are inference tensors (made inside inference_mode: they have no version counter, so
        an in-place change could not be seen).
        """
        weight, bias = self.conv.weight, self.conv.bias
        if (torch.is_grad_enabled() or torch.compiler.is_compiling()
                or weight.is_inference() or bias.is_inference()):
            return _phase_weights(weight, bias, memory_format)
        cache = self._phase_cache
        if cache is None or not cache.matches(weight, bias):
            cache = self._phase_cache = _PhaseCache(weight, bias)
        return cache.get(memory_format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        out_channels = self.conv.out_channels
        memory_format = _conv_format(x)
        weight, bias = self.phase_weights(memory_format)
        y = F.conv2d(F.pad(x, (1, 1, 1, 1)), weight, bias)  # (B, 4*O, H+1, W+1)
        y = y.unflatten(1, (2, 2, out_channels))  # (B, a, b, O, H+1, W+1)
        # output pixel (2i+a, 2j+c) is y[:, a, c, :, i+a, j+c]: four strided copies into one buffer
        if memory_format == torch.channels_last:
            out = y.new_empty(b, h, 2, w, 2, out_channels)
            for a in range(2):
                for c in range(2):
                    out[:, :, a, :, c] = y[:, a, c, :, a : a + h, c : c + w].permute(0, 2, 3, 1)
            return out.view(b, 2 * h, 2 * w, out_channels).permute(0, 3, 1, 2)
        out = y.new_empty(b, out_channels, h, 2, w, 2)
        for a in range(2):
            for c in range(2):
                out[:, :, :, a, :, c] = y[:, a, c, :, a : a + h, c : c + w]
        return out.view(b, out_channels, 2 * h, 2 * w)
