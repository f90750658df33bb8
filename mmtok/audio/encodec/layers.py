"""EnCodec's SEANet layers: convolutions with EnCodec's padding rule, the residual block and the LSTM block.

Padding (`pad_for_conv1d`): a convolution with effective kernel k and stride s pads k - s samples in total (all
on the left when causal, split right-heavy otherwise) plus the extra right padding that makes the last frame
complete; reflect padding of a signal shorter than the pad first zero-extends it on the right. Transposed
convolutions trim k - s samples (right share ceil((k - s) * trim_right_ratio) when causal, else half).
Weights are folded from weight norm at load time (see `model.fold_weight_norm`), so the layers are plain.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def _pad1d(x: torch.Tensor, left: int, right: int, mode: str) -> torch.Tensor:
    if mode != "reflect":
        return F.pad(x, (left, right), mode=mode)
    length, biggest = x.shape[-1], max(left, right)
    extra = biggest - length + 1 if length <= biggest else 0
    if extra:
        x = F.pad(x, (0, extra))
    padded = F.pad(x, (left, right), mode="reflect")
    return padded[..., : padded.shape[-1] - extra] if extra else padded


class SConv1d(nn.Module):
    """Conv1d with EnCodec's padding, optional time GroupNorm (one group) after it; `bias=False` for Mimi's
    downsample conv."""

    def __init__(self, cin: int, cout: int, kernel: int, *, stride: int = 1, dilation: int = 1, causal: bool,
                 pad_mode: str, group_norm: bool = False, bias: bool = True):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, stride, dilation=dilation, bias=bias)
        self.norm = nn.GroupNorm(1, cout) if group_norm else None
        self.causal, self.pad_mode = causal, pad_mode
        self.effective_kernel = (kernel - 1) * dilation + 1
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.effective_kernel, self.stride
        total = k - s
        length = x.shape[-1]
        frames = math.ceil((length - k + total) / s + 1) - 1
        extra = frames * s + k - total - length
        if self.causal:
            x = _pad1d(x, total, extra, self.pad_mode)
        else:
            right = total // 2
            x = _pad1d(x, total - right, right + extra, self.pad_mode)
        x = self.conv(x)
        return self.norm(x) if self.norm is not None else x


class SConvTranspose1d(nn.Module):
    """ConvTranspose1d with EnCodec's trimming; `groups` / `bias=False` for Mimi's upsample conv."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, *, causal: bool, trim_right_ratio: float,
                 group_norm: bool = False, groups: int = 1, bias: bool = True):
        super().__init__()
        self.conv = nn.ConvTranspose1d(cin, cout, kernel, stride, groups=groups, bias=bias)
        self.norm = nn.GroupNorm(1, cout) if group_norm else None
        self.causal, self.trim_right_ratio = causal, trim_right_ratio

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.conv.kernel_size[0] - self.conv.stride[0]
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        right = math.ceil(total * self.trim_right_ratio) if self.causal else total // 2
        return x[..., total - right: x.shape[-1] - right]


def elu(channels: int) -> nn.Module:
    """EnCodec's activation (alpha 1); `channels` is unused (activations with per-channel weights need it)."""
    del channels
    return nn.ELU()


class ResidualBlock(nn.Module):
    """act, conv (kernel k, dilation d) to dim // compress, act, 1x1 conv back; plus a 1x1 (or identity) shortcut.
    `activation(channels)` makes each activation (ELU for EnCodec; SpeechTokenizer may use Snake)."""

    def __init__(self, dim: int, kernel: int, dilation: int, compress: int, conv_shortcut: bool, *,
                 activation: Callable[[int], nn.Module] = elu, **conv):
        super().__init__()
        hidden = dim // compress
        self.block = nn.ModuleList([activation(dim), SConv1d(dim, hidden, kernel, dilation=dilation, **conv),
                                    activation(hidden), SConv1d(hidden, dim, 1, **conv)])
        self.shortcut = SConv1d(dim, dim, 1, **conv) if conv_shortcut else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for layer in self.block:
            h = layer(h)
        return self.shortcut(x) + h


class LSTMBlock(nn.Module):
    """A stacked LSTM over time with a residual connection, on (B, C, T). Bidirectional (SpeechTokenizer's
    encoder) doubles the channels: the skip adds the input to both directions' halves."""

    def __init__(self, dim: int, layers: int, bidirectional: bool = False):
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, layers, bidirectional=bidirectional)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = x.permute(2, 0, 1)
        skip = seq.repeat(1, 1, 2) if self.lstm.bidirectional else seq
        return (self.lstm(seq)[0] + skip).permute(1, 2, 0)
