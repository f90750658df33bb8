"""The Emu3 VQ-VAE: a per-frame 2D encoder, a causal temporal stack, an L2 codebook and the mirror-image decoder.

Module names follow `transformers`' `Emu3VQVAE` state dict (`encoder.down_block.down.{level}.block.{i}`,
`encoder.time_conv.{i}.conv.conv`, `decoder.up_block.up.{level}...`, `quantize.embedding.weight`, ...), so a
downloaded checkpoint loads one to one. Level 0 is full resolution in both encoder and decoder.

The work is split so that the tokenizer can schedule it: the 2D parts (`encode_frames`, `decode_frames`) are
per frame and run in bounded frame batches, the temporal parts (`encode_temporal`, `decode_temporal`) run at
the latent resolution and carry a `TemporalState` across chunks, and the codebook lookup (`latents_to_codes`) is
`mmtok.nearest_code` in fp32.
"""
from __future__ import annotations

import torch
from torch import nn

from ...image.layers import Downsample, ResnetBlock, Upsample, _norm_swish, group_norm, lowp_conv
from ...ops import nearest_code
from .config import Emu3Config
from .layers import (Attention, CausalConv3d, SpatialNorm, SpatialResnetBlock, TemporalDownsample, TemporalResnetBlock,
                     TemporalState, TemporalUpsample, _swish_)


def _residual(h: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    return h + delta if torch.is_grad_enabled() else h.add_(delta)


class EncoderLevel(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, heads: int, attention: bool,
                 downsample: bool):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(in_channels if i == 0 else out_channels, out_channels)
                                   for i in range(num_blocks))
        count = num_blocks if attention else 0
        self.attn = nn.ModuleList(Attention(out_channels, heads) for _ in range(count))
        self.attn_norms = nn.ModuleList(group_norm(out_channels) for _ in range(count))
        self.downsample = Downsample(out_channels) if downsample else None

    def forward(self, h: torch.Tensor, lowp: torch.dtype | None = None) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h, lowp)
            if len(self.attn):
                h = _residual(h, self.attn[i](self.attn_norms[i](h), lowp))
        return self.downsample(h, lowp) if self.downsample is not None else h


class DownBlock(nn.Module):
    def __init__(self, cfg: Emu3Config):
        super().__init__()
        widths, last = cfg.widths, cfg.num_levels - 1
        self.down = nn.ModuleList(
            EncoderLevel(cfg.base_channels if level == 0 else widths[level - 1], widths[level], cfg.num_res_blocks,
                         cfg.num_attention_heads, level in cfg.attn_resolutions, level != last)
            for level in range(cfg.num_levels))

    def forward(self, h: torch.Tensor, lowp: torch.dtype | None = None) -> torch.Tensor:
        for level in self.down:
            h = level(h, lowp)
        return h


class EncoderMiddle(nn.Module):
    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = Attention(channels, heads)
        self.attn_norm = group_norm(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, h: torch.Tensor, lowp: torch.dtype | None = None) -> torch.Tensor:
        h = self.block_1(h, lowp)
        h = _residual(h, self.attn_1(self.attn_norm(h), lowp))
        return self.block_2(h, lowp)


class Encoder(nn.Module):
    """Frames (N, in_channels, H, W) -> per-frame latents (N, latent_channels, H/f, W/f) (`frames`); then
    (B, latent_channels, T, h, w) -> (B, latent_channels, T/ft, h, w) through the causal temporal stack (`temporal`)."""

    def __init__(self, cfg: Emu3Config):
        super().__init__()
        top = cfg.widths[-1]
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.base_channels, 3, padding=1)
        self.down_block = DownBlock(cfg)
        self.middle_block = EncoderMiddle(top, cfg.num_attention_heads)
        self.norm_out = group_norm(top)
        self.conv_out = nn.Conv2d(top, cfg.latent_channels, 3, padding=1)
        self.time_conv = nn.ModuleList(TemporalDownsample(cfg.latent_channels) for _ in range(cfg.temporal_blocks))
        self.time_res_stack = nn.ModuleList(TemporalResnetBlock(cfg.latent_channels, cfg.latent_channels)
                                            for _ in range(cfg.num_res_blocks))

    def frames(self, x: torch.Tensor, lowp: torch.dtype | None = None) -> torch.Tensor:
        h = lowp_conv(self.conv_in, x, lowp)
        h = self.middle_block(self.down_block(h, lowp), lowp)
        return self.conv_out(_norm_swish(self.norm_out, h))  # fp32: the tail feeds the lookup

    def temporal(self, z: torch.Tensor, state: TemporalState | None = None) -> torch.Tensor:
        for conv in self.time_conv:
            z = _swish_(conv(z, state))
        for block in self.time_res_stack:
            z = block(z, state)
        return z


class DecoderLevel(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, quant_channels: int, heads: int,
                 attention: bool, upsample: bool):
        super().__init__()
        self.block = nn.ModuleList(SpatialResnetBlock(in_channels if i == 0 else out_channels, out_channels,
                                                      quant_channels) for i in range(num_blocks))
        count = num_blocks if attention else 0
        self.attn = nn.ModuleList(Attention(out_channels, heads) for _ in range(count))
        self.attn_norms = nn.ModuleList(SpatialNorm(quant_channels, out_channels) for _ in range(count))
        self.upsample = Upsample(out_channels) if upsample else None

    def forward(self, h: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h, q)
            if len(self.attn):
                h = _residual(h, self.attn[i](self.attn_norms[i](h, q)))
        return self.upsample(h) if self.upsample is not None else h


class UpBlock(nn.Module):
    def __init__(self, cfg: Emu3Config):
        super().__init__()
        widths = cfg.widths
        levels: list[DecoderLevel] = [None] * cfg.num_levels  # indexed by level, built from the latent upwards
        block_in = widths[-1]
        for level in reversed(range(cfg.num_levels)):
            levels[level] = DecoderLevel(block_in, widths[level], cfg.num_res_blocks + 1, cfg.embed_dim,
                                         cfg.num_attention_heads, level in cfg.attn_resolutions, level != 0)
            block_in = widths[level]
        self.up = nn.ModuleList(levels)

    def forward(self, h: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        for level in reversed(self.up):
            h = level(h, q)
        return h


class DecoderMiddle(nn.Module):
    def __init__(self, channels: int, quant_channels: int, heads: int):
        super().__init__()
        self.block_1 = SpatialResnetBlock(channels, channels, quant_channels)
        self.attn_1 = Attention(channels, heads)
        self.attn_norm = SpatialNorm(quant_channels, channels)
        self.block_2 = SpatialResnetBlock(channels, channels, quant_channels)

    def forward(self, h: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        h = self.block_1(h, q)
        h = _residual(h, self.attn_1(self.attn_norm(h, q)))
        return self.block_2(h, q)


class Decoder(nn.Module):
    """(post-quant latents, quantised latents) (B, C, t, h, w) -> both at T = t*ft frames through the causal
    temporal stack (`temporal`); then per frame (N, C, h, w) x 2 -> (N, out_channels, h*f, w*f) (`frames`)."""

    def __init__(self, cfg: Emu3Config):
        super().__init__()
        self.time_res_stack = nn.ModuleList(TemporalResnetBlock(cfg.latent_channels, cfg.latent_channels)
                                            for _ in range(cfg.num_res_blocks))
        self.time_conv = nn.ModuleList(TemporalUpsample(cfg.latent_channels) for _ in range(cfg.temporal_blocks))
        top = cfg.widths[-1]
        self.conv_in = nn.Conv2d(cfg.latent_channels, top, 3, padding=1)
        self.middle_block = DecoderMiddle(top, cfg.embed_dim, cfg.num_attention_heads)
        self.up_block = UpBlock(cfg)
        self.norm_out = SpatialNorm(cfg.embed_dim, cfg.widths[0])
        self.conv_out = nn.Conv2d(cfg.widths[0], cfg.out_channels, 3, padding=1)

    def temporal(self, hidden: torch.Tensor, quant: torch.Tensor, state: TemporalState | None = None):
        both = torch.cat([hidden, quant], dim=0)  # one pass: the same temporal layers run on both
        for block in self.time_res_stack:
            both = block(both, state)
        for conv in self.time_conv:
            both = _swish_(conv(both, state))
        return both.chunk(2, dim=0)

    def frames(self, h: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        h = self.up_block(self.middle_block(self.conv_in(h), q), q)
        return self.conv_out(_swish_(self.norm_out(h, q)))


class Emu3Quantizer(nn.Module):
    """The codebook (`embedding.weight`, K x D): plain L2 nearest code, looked up in fp32."""

    def __init__(self, num_codes: int, dim: int):
        super().__init__()
        self.embedding = nn.Embedding(num_codes, dim)

    def lookup(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, D, ...) -> int64 codes (B, ...)."""
        rows = latents.float().movedim(1, -1)
        return nearest_code(rows, self.embedding.weight.float(), metric="l2")[0]

    def vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """int64 codes (B, ...) -> fp32 code vectors (B, D, ...)."""
        return nn.functional.embedding(codes, self.embedding.weight.float()).movedim(-1, 1)


class Emu3VQVAE(nn.Module):
    """encoder (frames, then temporal) -> quant_conv -> nearest code; codes -> post_quant_conv -> decoder."""

    def __init__(self, cfg: Emu3Config):
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantize = Emu3Quantizer(cfg.codebook_size, cfg.embed_dim)
        self.quant_conv = CausalConv3d(cfg.latent_channels, cfg.embed_dim, (3, 1, 1))
        self.post_quant_conv = CausalConv3d(cfg.embed_dim, cfg.latent_channels, (3, 1, 1))

    def encode_frames(self, frames: torch.Tensor, lowp: torch.dtype | None = None) -> torch.Tensor:
        """(N, 3, H, W) -> (N, latent_channels, h, w); lowp: bf16/fp16 mixed-precision encoder (no autocast)."""
        return self.encoder.frames(frames, lowp)

    def encode_temporal(self, z: torch.Tensor, state: TemporalState | None = None) -> torch.Tensor:
        """(B, latent_channels, T, h, w) fp32 -> pre-quantisation latents (B, embed_dim, T/ft, h, w)."""
        return self.quant_conv(self.encoder.temporal(z, state), state)

    def latents_to_codes(self, latents: torch.Tensor) -> torch.Tensor:
        return self.quantize.lookup(latents)

    def decode_temporal(self, codes: torch.Tensor, state: TemporalState | None = None):
        """codes (B, t, h, w) -> (hidden, quant), each (B, C, t*ft, h, w): the decoder's per-frame inputs."""
        quant = self.quantize.vectors(codes)
        return self.decoder.temporal(self.post_quant_conv(quant, state), quant, state)

    def decode_frames(self, hidden: torch.Tensor, quant: torch.Tensor) -> torch.Tensor:
        """(N, latent_channels, h, w), (N, embed_dim, h, w) -> frames (N, out_channels, h*f, w*f)."""
        return self.decoder.frames(hidden, quant)
