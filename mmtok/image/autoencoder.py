"""The VQ-GAN: convolutional encoder, codebook quantizer and decoder, built from a `VQGANConfig`.

Module names follow the taming-transformers layout (`encoder.down.{level}.block.{i}`, `decoder.up.{level}...`,
with level 0 the full resolution in both), so a taming state dict maps onto it one to one and LlamaGen's
maps with a renaming (see `checkpoints.py`). The codebook lookup is `mmtok.VectorQuantizer`.
"""
from __future__ import annotations

import torch
from torch import nn

from ..quantize import VectorQuantizer
from .config import VQGANConfig
from .layers import AttnBlock, Downsample, ResnetBlock, Upsample, _norm_swish, group_norm, lowp_conv


class Stage(nn.Module):
    """One resolution level: ResNet blocks, each followed by attention where configured, then a resampler."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, attention: bool,
                 downsample: bool = False, upsample: bool = False):
        super().__init__()
        self.block = nn.ModuleList(
            ResnetBlock(in_channels if i == 0 else out_channels, out_channels) for i in range(num_blocks)
        )
        self.attn = nn.ModuleList(AttnBlock(out_channels) for _ in range(num_blocks)) if attention else nn.ModuleList()
        self.downsample = Downsample(out_channels) if downsample else None
        self.upsample = Upsample(out_channels) if upsample else None

    def forward(self, h: torch.Tensor, lowp: torch.dtype | None = None) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h, lowp)
            if len(self.attn):
                h = self.attn[i](h, lowp)
        if self.downsample is not None:
            h = self.downsample(h, lowp)
        if self.upsample is not None:
            h = self.upsample(h)
        return h


class MidBlock(nn.Module):
    """ResNet block, attention, ResNet block at the latent resolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, h: torch.Tensor, lowp: torch.dtype | None = None) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h, lowp), lowp), lowp)


class Encoder(nn.Module):
    """Image (B, in_channels, H, W) -> latent (B, z_channels, H/f, W/f).

    `lowp` (bf16/fp16) selects the mixed-precision policy of the fast encode path: the wide convolutions and
    attention matmuls multiply in `lowp`; conv_in, narrow layers, the residual trunk, every GroupNorm, swish and
    the latent-resolution tail (norm_out, conv_out, and quant_conv after it) stay fp32 (docs/image.md).
    """

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        last = cfg.num_levels - 1
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        stages, block_in = [], cfg.ch
        for level, mult in enumerate(cfg.ch_mult):
            block_out = cfg.ch * mult
            attention = level in cfg.attn_levels
            stages.append(Stage(block_in, block_out, cfg.num_res_blocks, attention, downsample=level != last))
            block_in = block_out
        self.down = nn.ModuleList(stages)
        self.mid = MidBlock(block_in)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, lowp: torch.dtype | None = None) -> torch.Tensor:
        h = lowp_conv(self.conv_in, x, lowp)
        for stage in self.down:
            h = stage(h, lowp)
        h = self.mid(h, lowp)
        return self.conv_out(_norm_swish(self.norm_out, h))  # fp32: feeds the lookup, cheap at latent size


class Decoder(nn.Module):
    """Latent (B, z_channels, h, w) -> image (B, out_channels, h*f, w*f); no clamp (as upstream)."""

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        mult = cfg.decoder_ch_mult
        block_in = cfg.ch * mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, 3, padding=1)
        self.mid = MidBlock(block_in)
        stages: list[Stage] = [None] * cfg.num_levels  # indexed by level, built from the latent upwards
        for level in reversed(range(cfg.num_levels)):
            block_out = cfg.ch * mult[level]
            attention = level in cfg.attn_levels
            stages[level] = Stage(block_in, block_out, cfg.num_res_blocks + 1, attention, upsample=level != 0)
            block_in = block_out
        self.up = nn.ModuleList(stages)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, cfg.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for stage in reversed(self.up):
            h = stage(h)
        return self.conv_out(_norm_swish(self.norm_out, h))


class VQAutoencoder(nn.Module):
    """encoder -> quant_conv -> nearest code -> codebook rows -> post_quant_conv -> decoder.

    The four steps are separate methods so the tokenizer can run the encoder with its mixed-precision policy
    and the decoder under autocast while the codebook lookup stays fp32, and so each step can be compiled alone.
    `decoder=False` builds the encoder side only (for published encoders without a decoder, e.g. transformers'
    ChameleonVQVAE): no decoder weights exist and `decode_latents` raises.
    """

    def __init__(self, cfg: VQGANConfig, *, decoder: bool = True):
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.code_dim, 1)
        self.quantize = VectorQuantizer(cfg.num_codes, cfg.code_dim, l2_normalize=cfg.l2_normalize, channel_dim=1)
        self.post_quant_conv = nn.Conv2d(cfg.code_dim, cfg.z_channels, 1)
        self.decoder = Decoder(cfg) if decoder else None

    def encode_latents(self, images: torch.Tensor, lowp: torch.dtype | None = None) -> torch.Tensor:
        """(B, 3, H, W) -> pre-quantisation latents z_e (B, code_dim, h, w) (before any l2 normalisation).

        lowp: bf16/fp16 for the mixed-precision encoder (see `Encoder`); run it outside autocast.
        """
        return self.quant_conv(self.encoder(images, lowp))

    def latents_to_indices(self, latents: torch.Tensor) -> torch.Tensor:
        """z_e (B, code_dim, h, w) -> code indices (B, h, w), looked up in fp32."""
        return self.quantize.lookup(latents.float(), channel_dim=1)

    def indices_to_latents(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices (B, h, w) -> codebook rows z_q (B, code_dim, h, w) (l2-normalised rows when configured)."""
        return self.quantize.decode(indices, channel_dim=1)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """z_q (B, code_dim, h, w) -> images (B, 3, h*f, w*f)."""
        if self.decoder is None:
            raise ValueError("this VQ autoencoder was built without a decoder (encoder and codebook only)")
        return self.decoder(self.post_quant_conv(latents))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Full reconstruction: (images (B, 3, H, W), indices (B, h, w))."""
        indices = self.latents_to_indices(self.encode_latents(images))
        return self.decode_latents(self.indices_to_latents(indices)), indices
