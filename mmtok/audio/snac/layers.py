"""SNAC's network: DAC-style residual units with optional depthwise convs, local windowed attention with rotary
positions, decoder noise blocks, and the multi-rate residual VQ.

Module names and indices follow the `snac` package's module tree (`encoder.block.N`, `decoder.model.N`,
`.block.N`, `quantizer.quantizers.N`), so the folded weights load key for key. Convolutions are plain torch convs
holding the weight norm folded at load time (`mmtok.audio.encodec.model.fold_weight_norm`); Snake is DAC's
(`mmtok.audio.codec.layers.Snake1d`, the same formula) and each VQ level is DAC's `CodebookStage` (factorised
codes: in-projection to the code dim, the codebook row of highest cosine similarity, i.e. the nearest
l2-normalised row, through `mmtok.nearest_code`, out-projection of the raw row).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..codec.layers import Snake1d
from ..codec.quantizer import CodebookStage
from .config import HEAD_DIM

DILATIONS = (1, 3, 9)
ROPE_BASE = 10000.0


class Pointwise(nn.Conv1d):
    """A 1x1 Conv1d that runs as one matrix product per item at inference (BLAS is about 2x faster than oneDNN's
    1x1 conv on CPU; the same products and sums); `plus=` adds a tensor to the result in the same pass."""

    def __init__(self, in_channels: int, out_channels: int, *, bias: bool = True):
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor, plus: torch.Tensor | None = None) -> torch.Tensor:
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            y = super().forward(x)
            return y if plus is None else y + plus
        weight = self.weight[:, :, 0]
        if plus is not None:
            y = torch.baddbmm(plus, weight.expand(x.shape[0], -1, -1), x)
        else:
            y = torch.matmul(weight, x)
        return y if self.bias is None else y.add_(self.bias[:, None])


class ResidualUnit(nn.Module):
    """x + conv1x1(snake(conv7_dilated(snake(x)))), the dilated conv grouped (depthwise when groups = dim)."""

    def __init__(self, dim: int, dilation: int, groups: int = 1):
        super().__init__()
        self.block = nn.Sequential(
            Snake1d(dim), nn.Conv1d(dim, dim, 7, dilation=dilation, padding=3 * dilation, groups=groups),
            Snake1d(dim), Pointwise(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for layer in self.block[:-1]:
            y = layer(y)
        trim = (x.shape[-1] - y.shape[-1]) // 2
        return self.block[-1](y, plus=x[..., trim:-trim] if trim > 0 else x)  # the skip summed in the product


class EncoderBlock(nn.Module):
    """Three residual units at dim // 2 channels (grouped as `groups`), Snake, a strided conv to dim channels."""

    def __init__(self, dim: int, stride: int, groups: int = 1):
        super().__init__()
        half = dim // 2
        self.block = nn.Sequential(
            *(ResidualUnit(half, d, groups) for d in DILATIONS), Snake1d(half),
            nn.Conv1d(half, dim, 2 * stride, stride=stride, padding=math.ceil(stride / 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Rotary(nn.Module):
    """The rotary frequencies of one 64-channel head (`inv_freq`, stored in SNAC's weights)."""

    def __init__(self, dim: int = HEAD_DIM):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (ROPE_BASE ** (torch.arange(0, dim, 2).float() / dim)))

    def cos_sin(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, dim) cos and sin of positions 0..n-1, the frequencies repeated for the two halves."""
        t = torch.arange(n, device=self.inv_freq.device, dtype=self.inv_freq.dtype)
        freqs = torch.outer(t, self.inv_freq)
        freqs = torch.cat((freqs, freqs), dim=-1)
        return freqs.cos(), freqs.sin()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class LocalAttention(nn.Module):
    """Pre-norm self-attention inside non-overlapping windows of `window` steps, 64-channel heads with rotary
    positions counted from each window's start, plus the input (SNAC's LocalMHA). The length must be a multiple
    of the window (SNAC's padding makes it one on encode)."""

    def __init__(self, dim: int, window: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.heads, self.window = dim // HEAD_DIM, window
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.rel_pos = Rotary(HEAD_DIM)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, steps = x.shape
        if steps % self.window:
            raise ValueError(f"SNAC's local attention needs a multiple of its window ({self.window} steps), "
                             f"got {steps}")
        windows, n = steps // self.window, self.window
        h = self.norm(x.transpose(1, 2))

        def heads(t):  # (B, T, H * d) -> (B, H, windows, n, d)
            return t.reshape(batch, windows, n, self.heads, HEAD_DIM).permute(0, 3, 1, 2, 4)

        q, k, v = (heads(t) for t in self.to_qkv(h).chunk(3, dim=-1))
        cos, sin = self.rel_pos.cos_sin(n)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.permute(0, 2, 3, 1, 4).reshape(batch, steps, channels)
        return self.to_out(out).transpose(1, 2) + x


class Encoder(nn.Module):
    """Waveform (B, 1, N) -> latent (B, encoder_dim * 2 ** len(rates), N / prod(rates))."""

    def __init__(self, dim: int, rates: list[int], *, depthwise: bool, window: int | None):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv1d(1, dim, 7, padding=3)]
        for stride in rates:
            dim *= 2
            layers.append(EncoderBlock(dim, stride, dim // 2 if depthwise else 1))
        if window is not None:
            layers.append(LocalAttention(dim, window))
        layers.append(nn.Conv1d(dim, dim, 7, padding=3, groups=dim if depthwise else 1))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class NoiseBlock(nn.Module):
    """x + n * conv1x1(x), n ~ N(0, 1) of shape (B, 1, T) drawn from `generator`; the identity without one
    (upstream draws from torch's global RNG on every decode, even in eval mode)."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = Pointwise(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if generator is None:
            return x
        noise = torch.randn((x.shape[0], 1, x.shape[-1]), generator=generator, device=x.device, dtype=x.dtype)
        return x + noise * self.linear(x)


class DecoderBlock(nn.Module):
    """Snake, a transposed conv (time x stride, exact: output_padding = stride % 2), the optional noise block,
    three residual units (grouped as `groups`)."""

    def __init__(self, in_dim: int, out_dim: int, stride: int, *, noise: bool, groups: int = 1):
        super().__init__()
        layers: list[nn.Module] = [
            Snake1d(in_dim),
            nn.ConvTranspose1d(in_dim, out_dim, 2 * stride, stride=stride, padding=math.ceil(stride / 2),
                               output_padding=stride % 2)]
        if noise:
            layers.append(NoiseBlock(out_dim))
        layers += [ResidualUnit(out_dim, d, groups) for d in DILATIONS]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for layer in self.block:
            x = layer(x, generator) if isinstance(layer, NoiseBlock) else layer(x)
        return x


class Decoder(nn.Module):
    """Latent (B, latent_dim, T) -> waveform (B, 1, T * prod(rates)) in [-1, 1] (tanh)."""

    def __init__(self, latent_dim: int, dim: int, rates: list[int], *, noise: bool, depthwise: bool,
                 window: int | None):
        super().__init__()
        if depthwise:
            layers: list[nn.Module] = [nn.Conv1d(latent_dim, latent_dim, 7, padding=3, groups=latent_dim),
                                       Pointwise(latent_dim, dim)]
        else:
            layers = [nn.Conv1d(latent_dim, dim, 7, padding=3)]
        if window is not None:
            layers.append(LocalAttention(dim, window))
        for i, stride in enumerate(rates):
            out = dim // 2 ** (i + 1)
            layers.append(DecoderBlock(dim // 2 ** i, out, stride, noise=noise, groups=out if depthwise else 1))
        last = dim // 2 ** len(rates)
        layers += [Snake1d(last), nn.Conv1d(last, 1, 7, padding=3), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for layer in self.model:
            x = layer(x, generator) if isinstance(layer, DecoderBlock) else layer(x)
        return x


class MultiRateQuantizer(nn.Module):
    """SNAC's residual VQ: level k sees the residual average-pooled by vq_strides[k] (a coarser time grid), and
    its quantised vectors, repeated stride times, are subtracted from the residual before the next level."""

    def __init__(self, dim: int, codebook_size: int, codebook_dim: int, strides: list[int]):
        super().__init__()
        self.dim, self.strides = dim, list(strides)
        self.quantizers = nn.ModuleList(CodebookStage(dim, codebook_size, codebook_dim) for _ in strides)

    @torch.no_grad()
    def encode(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Latent (B, dim, T) (T a multiple of every stride) -> codes per level, int64 (B, T / stride)."""
        batch = z.shape[0]
        residual, codes = z, []
        for stage, stride in zip(self.quantizers, self.strides):
            pooled = F.avg_pool1d(residual, stride, stride) if stride > 1 else residual
            steps = pooled.shape[-1]
            idx = stage.lookup(stage.project_in(pooled.transpose(1, 2).reshape(-1, self.dim)))
            part = stage.table().index_select(0, idx).view(batch, steps, self.dim).transpose(1, 2)
            residual = residual - (part.repeat_interleave(stride, dim=-1) if stride > 1 else part)
            codes.append(idx.view(batch, steps))
        return codes

    @torch.no_grad()
    def decode(self, codes: list[torch.Tensor]) -> torch.Tensor:
        """Codes per level (B, T / stride) -> latent (B, dim, T): the levels' vectors summed, in level order."""
        z = None
        for stage, stride, level in zip(self.quantizers, self.strides, codes):
            batch, steps = level.shape
            part = stage.table().index_select(0, level.reshape(-1)).view(batch, steps, self.dim).transpose(1, 2)
            part = part.repeat_interleave(stride, dim=-1) if stride > 1 else part
            z = part if z is None else z + part
        return z
