"""Benchmark baseline: a plain-torch module tree in the style of DAC's own code (not mmtok's).

nn.Conv1d / nn.ConvTranspose1d under the legacy `torch.nn.utils.weight_norm` (the weight is recomputed on
every forward), an out-of-place Snake, one-shot encode/decode of the whole signal, and a residual VQ that
l2-normalises both sides and takes the argmin of a full `torch.cdist` distance matrix. Parameter names equal
DAC's, so the same random state_dict loads into this tree and into `mmtok.AudioCodec`.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn


def _wn(module: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nn.utils.weight_norm(module)


def wn_conv(*args, **kwargs) -> nn.Module:
    return _wn(nn.Conv1d(*args, **kwargs))


def wn_conv_t(*args, **kwargs) -> nn.Module:
    return _wn(nn.ConvTranspose1d(*args, **kwargs))


class Snake(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x):
        return x + (self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).pow(2)


class ResUnit(nn.Module):
    def __init__(self, dim: int, dilation: int):
        super().__init__()
        pad = 3 * dilation
        self.block = nn.Sequential(Snake(dim), wn_conv(dim, dim, 7, dilation=dilation, padding=pad), Snake(dim),
                                   wn_conv(dim, dim, 1))

    def forward(self, x):
        y = self.block(x)
        pad = (x.shape[-1] - y.shape[-1]) // 2
        if pad > 0:
            x = x[..., pad:-pad]
        return x + y


class EncBlock(nn.Module):
    def __init__(self, dim: int, stride: int):
        super().__init__()
        self.block = nn.Sequential(ResUnit(dim // 2, 1), ResUnit(dim // 2, 3), ResUnit(dim // 2, 9), Snake(dim // 2),
                                   wn_conv(dim // 2, dim, 2 * stride, stride=stride, padding=math.ceil(stride / 2)))

    def forward(self, x):
        return self.block(x)


class Enc(nn.Module):
    def __init__(self, dim: int, rates, latent: int):
        super().__init__()
        layers = [wn_conv(1, dim, 7, padding=3)]
        for s in rates:
            dim *= 2
            layers.append(EncBlock(dim, s))
        layers += [Snake(dim), wn_conv(dim, latent, 3, padding=1)]
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return self.block(x)


class DecBlock(nn.Module):
    def __init__(self, din: int, dout: int, stride: int):
        super().__init__()
        self.block = nn.Sequential(Snake(din), wn_conv_t(din, dout, 2 * stride, stride=stride,
                                                         padding=math.ceil(stride / 2)),
                                   ResUnit(dout, 1), ResUnit(dout, 3), ResUnit(dout, 9))

    def forward(self, x):
        return self.block(x)


class Dec(nn.Module):
    def __init__(self, latent: int, dim: int, rates):
        super().__init__()
        layers = [wn_conv(latent, dim, 7, padding=3)]
        for i, s in enumerate(rates):
            layers.append(DecBlock(dim // 2 ** i, dim // 2 ** (i + 1), s))
        last = dim // 2 ** len(rates)
        layers += [Snake(last), wn_conv(last, 1, 7, padding=3), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class VQ(nn.Module):
    def __init__(self, dim: int, size: int, cdim: int):
        super().__init__()
        self.in_proj = wn_conv(dim, cdim, 1)
        self.out_proj = wn_conv(cdim, dim, 1)
        self.codebook = nn.Embedding(size, cdim)

    def forward(self, z):
        z_e = self.in_proj(z)
        flat = F.normalize(z_e.transpose(1, 2).reshape(-1, z_e.shape[1]))
        dist = torch.cdist(flat, F.normalize(self.codebook.weight))
        indices = dist.argmin(1).view(z.shape[0], -1)
        z_q = self.codebook(indices).transpose(1, 2)
        return self.out_proj(z_q), indices


class RVQ(nn.Module):
    def __init__(self, dim: int, n: int, size: int, cdim: int):
        super().__init__()
        self.quantizers = nn.ModuleList(VQ(dim, size, cdim) for _ in range(n))

    def forward(self, z):
        z_q, residual, codes = 0, z, []
        for q in self.quantizers:
            part, idx = q(residual)
            z_q, residual = z_q + part, residual - part
            codes.append(idx)
        return z_q, torch.stack(codes, 1)

    def from_codes(self, codes):
        z_q = 0
        for i, q in enumerate(self.quantizers):
            z_q = z_q + q.out_proj(q.codebook(codes[:, i]).transpose(1, 2))
        return z_q


class DACStyleCodec(nn.Module):
    """encode: pad to the hop, encoder, RVQ -> codes (B, n, F); decode: from_codes, decoder (one shot)."""

    def __init__(self, encoder_dim=64, encoder_rates=(2, 4, 5, 8), latent_dim=None, decoder_dim=1536,
                 decoder_rates=(8, 5, 4, 2), n_codebooks=12, codebook_size=1024, codebook_dim=8, sample_rate=16000):
        super().__init__()
        latent_dim = latent_dim or encoder_dim * 2 ** len(encoder_rates)
        self.hop = math.prod(encoder_rates)
        self.encoder = Enc(encoder_dim, encoder_rates, latent_dim)
        self.quantizer = RVQ(latent_dim, n_codebooks, codebook_size, codebook_dim)
        self.decoder = Dec(latent_dim, decoder_dim, decoder_rates)

    def encode(self, audio):
        audio = F.pad(audio, (0, -audio.shape[-1] % self.hop))
        return self.quantizer(self.encoder(audio))[1]

    def decode(self, codes):
        return self.decoder(self.quantizer.from_codes(codes))
