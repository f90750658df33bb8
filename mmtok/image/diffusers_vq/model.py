"""The diffusers `VQModel` network with diffusers' module names, so its state dict loads one to one.

Structure (diffusers 0.42 `Encoder` / `Decoder` of `autoencoders/vae.py` and the blocks they build): conv_in,
down blocks (ResNet blocks, attention after each where the block type says so, a zero-padded stride-2
downsampler except at the last level), a mid block (ResNet, optional attention, ResNet), GroupNorm, swish,
conv_out; `quant_conv`, the codebook, `post_quant_conv`; the decoder mirrors it with one more ResNet block per
level and nearest-2x upsampling, and with norm_type "spatial" (MoVQ) every decoder norm is a `SpatialNorm`
conditioned on the codebook rows. Numerically the same formulas; computed the mmtok way (`mmtok.image.layers`):
channels-last, accurate channels-last GroupNorm, in-place activations at inference, fused q/k/v attention, the
sub-pixel upsampling conv, the bf16 encoder policy, and SpatialNorm's 1x1 convolutions of the codebook rows
run once at latent resolution and broadcast (nearest upsampling commutes with a 1x1 conv) instead of on the
upsampled rows at every resolution. The lookup is `mmtok.nearest_code` (L2, fp32), no distance matrix.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...ops import nearest_code
from ..layers import Downsample, GroupNorm, Upsample, lowp_conv, lowp_for, norm_swish, runs_in_lowp
from .config import SPATIAL_NORM_GROUPS, DiffusersVQConfig

EPS = 1e-6


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


class SpatialNorm(nn.Module):
    """GroupNorm(32 groups) of f, scaled and shifted per pixel by 1x1 convs of the codebook rows zq, which
    are nearest-upsampled to f's size: norm(f) * conv_y(up(zq)) + conv_b(up(zq)). Here conv_y(zq), conv_b(zq)
    are computed at zq's size and broadcast over each sxs block, which is the same numbers when f's size is a
    power-of-two multiple of zq's (always so in the decoder; otherwise it interpolates as upstream)."""

    def __init__(self, channels: int, zq_channels: int):
        super().__init__()
        self.norm_layer = GroupNorm(SPATIAL_NORM_GROUPS, channels, eps=EPS, affine=True)
        self.conv_y = nn.Conv2d(zq_channels, channels, 1)
        self.conv_b = nn.Conv2d(zq_channels, channels, 1)

    def forward(self, f: torch.Tensor, zq: torch.Tensor) -> torch.Tensor:
        n = self.norm_layer(f)
        y, b = self.conv_y(zq), self.conv_b(zq)
        (height, width), (h, w) = n.shape[-2:], zq.shape[-2:]
        if height % h or width % w or not (_is_power_of_two(height // h) and _is_power_of_two(width // w)):
            y, b = F.interpolate(y, size=(height, width), mode="nearest"), F.interpolate(b, size=(height, width),
                                                                                        mode="nearest")
            return n * y + b
        batch, channels = n.shape[:2]
        blocks = n.view(batch, channels, h, height // h, w, width // w)
        y, b = y[:, :, :, None, :, None], b[:, :, :, None, :, None]
        if torch.is_grad_enabled() or n.dtype != torch.promote_types(n.dtype, y.dtype):
            return (blocks * y + b).view(n.shape)
        blocks.mul_(y).add_(b)  # the product rounded, then the sum: upstream's two steps, in n's own memory
        return n


def _norm_act(norm: nn.Module, x: torch.Tensor, zq: torch.Tensor | None, lowp: torch.dtype | None) -> torch.Tensor:
    """swish(norm(x)) for a GroupNorm, or swish(SpatialNorm(x, zq))."""
    if isinstance(norm, SpatialNorm):
        return F.silu(norm(x, zq), inplace=not torch.is_grad_enabled())
    return norm_swish(norm, x, lowp)


class ResnetBlock2D(nn.Module):
    """diffusers ResnetBlock2D (norm_type group) / ResnetBlockCondNorm2D (spatial), without a time embedding:
    norm1, swish, conv1, norm2, swish, conv2, plus the input (through a 1x1 conv_shortcut when widths change)."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, zq_channels: int | None = None):
        super().__init__()
        if zq_channels is None:
            self.norm1 = GroupNorm(groups, in_channels, eps=EPS, affine=True)
            self.norm2 = GroupNorm(groups, out_channels, eps=EPS, affine=True)
        else:
            self.norm1 = SpatialNorm(in_channels, zq_channels)
            self.norm2 = SpatialNorm(out_channels, zq_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, zq: torch.Tensor | None = None, lowp: torch.dtype | None = None):
        h = lowp_conv(self.conv1, _norm_act(self.norm1, x, zq, lowp_for(self.conv1, lowp)), lowp)
        h = lowp_conv(self.conv2, _norm_act(self.norm2, h, zq, lowp_for(self.conv2, lowp)), lowp)
        shortcut = x if self.conv_shortcut is None else lowp_conv(self.conv_shortcut, x, lowp)
        if torch.is_grad_enabled() or h.dtype != torch.promote_types(h.dtype, shortcut.dtype):
            return shortcut + h
        return h.add_(shortcut)


class Attention(nn.Module):
    """diffusers Attention as VQModel builds it: one head over all positions, GroupNorm (or SpatialNorm in a
    spatial decoder) first, Linear q/k/v/out with bias, residual. Run as one fused q/k/v matmul and
    `scaled_dot_product_attention` on the (B, HW, C) sequence."""

    def __init__(self, channels: int, groups: int, zq_channels: int | None = None):
        super().__init__()
        if zq_channels is None:
            self.group_norm = GroupNorm(groups, channels, eps=EPS, affine=True)
        else:
            self.spatial_norm = SpatialNorm(channels, zq_channels)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])

    def forward(self, x: torch.Tensor, zq: torch.Tensor | None = None, lowp: torch.dtype | None = None):
        b, c, height, width = x.shape
        h = self.spatial_norm(x, zq) if hasattr(self, "spatial_norm") else self.group_norm(x)
        h = h.flatten(2).transpose(1, 2)  # (B, HW, C)
        weight = torch.cat([self.to_q.weight, self.to_k.weight, self.to_v.weight])
        bias = torch.cat([self.to_q.bias, self.to_k.bias, self.to_v.bias])
        out_weight, out_bias = self.to_out[0].weight, self.to_out[0].bias
        low = runs_in_lowp(c, lowp)
        if low:
            h, weight, bias, out_weight = h.to(lowp), weight.to(lowp), bias.to(lowp), out_weight.to(lowp)
        q, k, v = F.linear(h, weight, bias).unsqueeze(1).chunk(3, dim=-1)
        out = F.scaled_dot_product_attention(q, k, v).squeeze(1)
        out = F.linear(out, out_weight).float().add_(out_bias) if low else F.linear(out, out_weight, out_bias)
        return x + out.transpose(1, 2).view(b, c, height, width)


class DownBlock(nn.Module):
    """DownEncoderBlock2D / AttnDownEncoderBlock2D: ResNet blocks (each followed by attention in the Attn type),
    then the stride-2 downsampler unless it is the last level."""

    def __init__(self, in_channels: int, out_channels: int, layers: int, groups: int, attention: bool,
                 downsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList(ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, groups)
                                     for i in range(layers))
        self.attentions = nn.ModuleList(Attention(out_channels, groups) for _ in range(layers)) if attention else None
        self.downsamplers = nn.ModuleList([Downsample(out_channels)]) if downsample else None

    def forward(self, h: torch.Tensor, lowp: torch.dtype | None = None) -> torch.Tensor:
        for i, resnet in enumerate(self.resnets):
            h = resnet(h, None, lowp)
            if self.attentions is not None:
                h = self.attentions[i](h, None, lowp)
        if self.downsamplers is not None:
            h = self.downsamplers[0](h, lowp)
        return h


class UpBlock(nn.Module):
    """UpDecoderBlock2D / AttnUpDecoderBlock2D: ResNet blocks (+ attention), then nearest-2x + conv unless last."""

    def __init__(self, in_channels: int, out_channels: int, layers: int, groups: int, attention: bool,
                 upsample: bool, zq_channels: int | None):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, groups, zq_channels)
            for i in range(layers))
        self.attentions = (nn.ModuleList(Attention(out_channels, groups, zq_channels) for _ in range(layers))
                           if attention else None)
        self.upsamplers = nn.ModuleList([Upsample(out_channels)]) if upsample else None

    def forward(self, h: torch.Tensor, zq: torch.Tensor | None) -> torch.Tensor:
        for i, resnet in enumerate(self.resnets):
            h = resnet(h, zq)
            if self.attentions is not None:
                h = self.attentions[i](h, zq)
        if self.upsamplers is not None:
            h = self.upsamplers[0](h)
        return h


class MidBlock(nn.Module):
    """UNetMidBlock2D with one layer: ResNet, attention (when mid_block_add_attention), ResNet."""

    def __init__(self, channels: int, groups: int, attention: bool, zq_channels: int | None = None):
        super().__init__()
        self.resnets = nn.ModuleList(ResnetBlock2D(channels, channels, groups, zq_channels) for _ in range(2))
        self.attentions = nn.ModuleList([Attention(channels, groups, zq_channels)]) if attention else None

    def forward(self, h: torch.Tensor, zq: torch.Tensor | None = None, lowp: torch.dtype | None = None):
        h = self.resnets[0](h, zq, lowp)
        if self.attentions is not None:
            h = self.attentions[0](h, zq, lowp)
        return self.resnets[1](h, zq, lowp)


class Encoder(nn.Module):
    """Image (B, in_channels, H, W) -> latent (B, latent_channels, H/f, W/f). `lowp` as in mmtok.image's
    Encoder: wide convolutions and attention matmuls in bf16/fp16, the trunk, norms and the tail in fp32."""

    def __init__(self, cfg: DiffusersVQConfig):
        super().__init__()
        widths, groups = cfg.block_out_channels, cfg.norm_num_groups
        self.conv_in = nn.Conv2d(cfg.in_channels, widths[0], 3, padding=1)
        blocks, previous = [], widths[0]
        for i, kind in enumerate(cfg.down_block_types):
            blocks.append(DownBlock(previous, widths[i], cfg.layers_per_block, groups,
                                    kind == "AttnDownEncoderBlock2D", downsample=i != len(widths) - 1))
            previous = widths[i]
        self.down_blocks = nn.ModuleList(blocks)
        self.mid_block = MidBlock(widths[-1], groups, cfg.mid_block_add_attention)
        self.conv_norm_out = GroupNorm(groups, widths[-1], eps=EPS, affine=True)
        self.conv_out = nn.Conv2d(widths[-1], cfg.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, lowp: torch.dtype | None = None) -> torch.Tensor:
        h = lowp_conv(self.conv_in, x, lowp)
        for block in self.down_blocks:
            h = block(h, lowp)
        h = self.mid_block(h, None, lowp)
        return self.conv_out(norm_swish(self.conv_norm_out, h))  # fp32: feeds the lookup


class Decoder(nn.Module):
    """Latent (B, latent_channels, h, w) [+ codebook rows zq for spatial norm] -> image (B, out_channels, H, W)."""

    def __init__(self, cfg: DiffusersVQConfig):
        super().__init__()
        widths, groups = list(reversed(cfg.block_out_channels)), cfg.norm_num_groups
        zq_channels = cfg.latent_channels if cfg.norm_type == "spatial" else None
        self.conv_in = nn.Conv2d(cfg.latent_channels, widths[0], 3, padding=1)
        self.mid_block = MidBlock(widths[0], groups, cfg.mid_block_add_attention, zq_channels)
        blocks, previous = [], widths[0]
        for i, kind in enumerate(cfg.up_block_types):
            blocks.append(UpBlock(previous, widths[i], cfg.layers_per_block + 1, groups,
                                  kind == "AttnUpDecoderBlock2D", i != len(widths) - 1, zq_channels))
            previous = widths[i]
        self.up_blocks = nn.ModuleList(blocks)
        self.conv_norm_out = (SpatialNorm(widths[-1], zq_channels) if zq_channels is not None
                              else GroupNorm(groups, widths[-1], eps=EPS, affine=True))
        self.conv_out = nn.Conv2d(widths[-1], cfg.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor, zq: torch.Tensor | None = None) -> torch.Tensor:
        h = self.mid_block(self.conv_in(z), zq)
        for block in self.up_blocks:
            h = block(h, zq)
        return self.conv_out(_norm_act(self.conv_norm_out, h, zq, None))


class Codebook(nn.Module):
    """The codebook (`quantize.embedding.weight`, K x D) and its L2 nearest-code lookup in fp32."""

    def __init__(self, num_codes: int, dim: int):
        super().__init__()
        self.embedding = nn.Embedding(num_codes, dim)

    def lookup(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) -> int64 (B, h, w): argmin_k |z - e_k|^2, ties to the lowest index."""
        rows = latents.float().permute(0, 2, 3, 1)  # a view for channels-last latents
        # detached: a plain tensor (not the Parameter) takes nearest_code's direct eager path, not the custom op
        return nearest_code(rows, self.embedding.weight.detach().float(), metric="l2")[0]

    def rows(self, indices: torch.Tensor) -> torch.Tensor:
        """int64 (B, h, w) -> codebook rows (B, D, h, w), channels-last memory."""
        return F.embedding(indices, self.embedding.weight).permute(0, 3, 1, 2)


class DiffusersVQModel(nn.Module):
    """encoder -> quant_conv -> nearest code -> codebook rows -> post_quant_conv -> decoder (+ rows for
    SpatialNorm), as separate steps with the names `mmtok.image.ImageTokenizer` drives."""

    def __init__(self, cfg: DiffusersVQConfig):
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.quant_conv = nn.Conv2d(cfg.latent_channels, cfg.code_dim, 1)
        self.quantize = Codebook(cfg.num_codes, cfg.code_dim)
        self.post_quant_conv = nn.Conv2d(cfg.code_dim, cfg.latent_channels, 1)
        self.decoder = Decoder(cfg)

    def encode_latents(self, images: torch.Tensor, lowp: torch.dtype | None = None) -> torch.Tensor:
        """(B, C, H, W) -> pre-quantisation latents (B, code_dim, h, w) (diffusers' `encode(x).latents`)."""
        return self.quant_conv(self.encoder(images, lowp))

    def latents_to_indices(self, latents: torch.Tensor) -> torch.Tensor:
        return self.quantize.lookup(latents)

    def indices_to_latents(self, indices: torch.Tensor) -> torch.Tensor:
        return self.quantize.rows(indices)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Codebook-space latents (B, code_dim, h, w) -> images, not quantized first (diffusers'
        `decode(latents, force_not_quantize=True)` of a lookup_from_codebook=False model)."""
        zq = latents if self.config.norm_type == "spatial" else None
        return self.decoder(self.post_quant_conv(latents), zq)
