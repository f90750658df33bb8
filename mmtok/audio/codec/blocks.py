"""DAC's encoder and decoder: residual units with dilations 1/3/9, one strided block per rate.

Module names and indices follow DAC's module tree (`encoder.block.N`, `decoder.model.N`, `.block.N`) so that
`state_dict()` keys equal the keys of DAC's weight files. All convolutions keep the sequence length except the
strided ones; nothing here knows about chunking (see `chunking.py`).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .layers import Snake1d, WNConv1d, WNConvTranspose1d, _inference_mode_for

DILATIONS = (1, 3, 9)


class ResidualUnit(nn.Module):
    """x + conv1x1(snake(conv7_dilated(snake(x)))): a length-preserving residual unit."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        padding = (7 - 1) * dilation // 2
        self.block = nn.Sequential(
            Snake1d(channels),
            WNConv1d(channels, channels, 7, dilation=dilation, padding=padding),
            Snake1d(channels),
            WNConv1d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        trim = (x.shape[-1] - y.shape[-1]) // 2
        if trim > 0:
            x = x[..., trim:-trim]
        if _inference_mode_for(x, y):
            return y.add_(x)
        return x + y


class EncoderBlock(nn.Module):
    """Three residual units at dim // 2 channels, then a strided conv to dim channels (time / stride)."""

    def __init__(self, dim: int, stride: int):
        super().__init__()
        half = dim // 2
        self.block = nn.Sequential(
            *(ResidualUnit(half, d) for d in DILATIONS),
            Snake1d(half),
            WNConv1d(half, dim, 2 * stride, stride=stride, padding=math.ceil(stride / 2)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Encoder(nn.Module):
    """Waveform (B, 1, T) -> latent (B, latent_dim, T / prod(rates))."""

    def __init__(self, dim: int, rates: list[int], latent_dim: int):
        super().__init__()
        layers: list[nn.Module] = [WNConv1d(1, dim, 7, padding=3)]
        for stride in rates:
            dim *= 2
            layers.append(EncoderBlock(dim, stride))
        layers += [Snake1d(dim), WNConv1d(dim, latent_dim, 3, padding=1)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class DecoderBlock(nn.Module):
    """Snake, a transposed conv (time x stride, channels halved), three residual units."""

    def __init__(self, in_dim: int, out_dim: int, stride: int):
        super().__init__()
        self.block = nn.Sequential(
            Snake1d(in_dim),
            WNConvTranspose1d(in_dim, out_dim, 2 * stride, stride=stride, padding=math.ceil(stride / 2)),
            *(ResidualUnit(out_dim, d) for d in DILATIONS),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Decoder(nn.Module):
    """Latent (B, latent_dim, F) -> waveform (B, 1, ~F * prod(rates)) in [-1, 1] (tanh)."""

    def __init__(self, latent_dim: int, dim: int, rates: list[int], out_channels: int = 1):
        super().__init__()
        layers: list[nn.Module] = [WNConv1d(latent_dim, dim, 7, padding=3)]
        for i, stride in enumerate(rates):
            layers.append(DecoderBlock(dim // 2 ** i, dim // 2 ** (i + 1), stride))
        last = dim // 2 ** len(rates)
        layers += [Snake1d(last), WNConv1d(last, out_channels, 7, padding=3), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
