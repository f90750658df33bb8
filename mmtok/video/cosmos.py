"""NVIDIA Cosmos discrete video tokenizers (Cosmos-Tokenizer DV4x8x8 / DV8x8x8 / DV8x16x16): causal, factorized
3D network with FSQ codes (B, t, h, w); read from the released `encoder.jit` / `decoder.jit` as weights.

The network is Cosmos' `EncoderFactorized` / `DecoderFactorized`:
- causal 3D convolutions: the first frame is replicated in front (kernel_t - 1 + 1 - stride_t times), spatial
  zero padding; space-time factorized as a (1, 3, 3) conv followed by a (3, 1, 1) conv in every ResNet block;
- GroupNorm with one group applied frame by frame; spatial attention per frame followed by causal temporal
  attention per position (a lower-triangular mask);
- hybrid down / up sampling: a strided conv plus average pooling (down) or nearest repetition plus a conv
  (up), spatial and temporal separately, each level's flags from the compression factors;
- a 3D Haar wavelet patcher (the first frame repeated p - 1 times in front, log2 p rounds of an 8-band
  transform divided by 2 sqrt 2) or a plain space-time rearrangement, and its inverse, which drops those frames.
A clip of 1 + k * f_t frames gives 1 + k latent frames (the first frame alone: causal).

What the TorchScript traces do not store, the compression factors, comes from the folder name
(`Cosmos-Tokenizer-DV{t}x{s}x{s}`) or the `spatial_compression=` / `temporal_compression=` options;
`legacy_mode=` selects Cosmos' older decoder upsampling schedule (False in every release).
"""
from __future__ import annotations

import math
import pathlib
import re
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..image.cosmos import ENCODER_FILE, CosmosReleaseTokenizer, read_release
from ..quantize import FSQ
from ..tokenizer.protocol import CodeSpec

FORMAT = "mmtok.video.cosmos"
HAAR = 1 / math.sqrt(2)
_NAME = re.compile(r"DV(\d+)x(\d+)x(\d+)", re.IGNORECASE)


# --------------------------------------------------------------------------------------------------- layers

class CausalConv3d(nn.Module):
    """Conv3d after replicating the first frame `time_pad` times in front and zero-padding space."""

    def __init__(self, cin: int, cout: int, kernel=3, *, stride: int = 1, time_stride: int = 1, padding: int = 1):
        super().__init__()
        kernel = (kernel,) * 3 if isinstance(kernel, int) else tuple(kernel)
        self.time_pad = (kernel[0] - 1) + (1 - time_stride)
        self.padding = padding
        self.conv3d = nn.Conv3d(cin, cout, kernel, stride=(time_stride, stride, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.time_pad > 0:
            x = torch.cat([x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1), x], dim=2)
        if self.padding:
            p = self.padding
            x = F.pad(x, (p, p, p, p, 0, 0))
        return self.conv3d(x)


def _factorized(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(CausalConv3d(cin, cout, (1, 3, 3), padding=1), CausalConv3d(cout, cout, (3, 1, 1), padding=0))


class FrameNorm(nn.Module):
    """GroupNorm(1 group) of every frame on its own (Cosmos' CausalNormalize with num_groups=1)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(1, channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        return self.norm(frames).reshape(b, t, c, h, w).transpose(1, 2)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = FrameNorm(cin), _factorized(cin, cout)
        self.norm2, self.conv2 = FrameNorm(cout), _factorized(cout, cout)
        self.nin_shortcut = CausalConv3d(cin, cout, 1, padding=0) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (self.nin_shortcut(x) if self.nin_shortcut is not None else x)


class _QKV(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.norm = FrameNorm(channels)
        self.q, self.k, self.v = (CausalConv3d(channels, channels, 1, padding=0) for _ in range(3))
        self.proj_out = CausalConv3d(channels, channels, 1, padding=0)


class SpatialAttention(_QKV):
    """Attention over the positions of each frame."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        b, c, t, hh, ww = x.shape
        q, k, v = (m(h).transpose(1, 2).reshape(b * t, c, hh * ww) for m in (self.q, self.k, self.v))
        weights = torch.softmax(torch.bmm(q.transpose(1, 2), k) * (int(c) ** -0.5), dim=2)
        out = torch.bmm(v, weights.transpose(1, 2)).reshape(b, t, c, hh, ww).transpose(1, 2)
        return x + self.proj_out(out)


class TemporalAttention(_QKV):
    """Causal attention over the frames of each position."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        b, c, t, hh, ww = x.shape
        q, k, v = (m(h).permute(0, 3, 4, 2, 1).reshape(b * hh * ww, t, c) for m in (self.q, self.k, self.v))
        scores = torch.bmm(q, k.transpose(1, 2)) * (int(c) ** -0.5)
        scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
        out = torch.bmm(torch.softmax(scores, dim=2), v)
        out = out.reshape(b, hh, ww, t, c).permute(0, 4, 3, 1, 2)
        return x + self.proj_out(out)


def _attention(channels: int) -> nn.Sequential:
    return nn.Sequential(SpatialAttention(channels), TemporalAttention(channels))


class HybridDownsample(nn.Module):
    def __init__(self, channels: int, spatial: bool, temporal: bool):
        super().__init__()
        self.conv1 = CausalConv3d(channels, channels, (1, 3, 3), stride=2, padding=0)
        self.conv2 = CausalConv3d(channels, channels, (3, 1, 1), time_stride=2, padding=0)
        self.conv3 = CausalConv3d(channels, channels, 1, padding=0)
        self.spatial, self.temporal = spatial, temporal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.spatial or self.temporal):
            return x
        if self.spatial:
            x = F.pad(x, (0, 1, 0, 1, 0, 0))
            x = self.conv1(x) + F.avg_pool3d(x, (1, 2, 2), (1, 2, 2))
        if self.temporal:
            x = torch.cat([x[:, :, :1], x], dim=2)
            x = self.conv2(x) + F.avg_pool3d(x, (2, 1, 1), (2, 1, 1))
        return self.conv3(x)


class HybridUpsample(nn.Module):
    def __init__(self, channels: int, spatial: bool, temporal: bool):
        super().__init__()
        self.conv1 = CausalConv3d(channels, channels, (3, 1, 1), padding=0)
        self.conv2 = CausalConv3d(channels, channels, (1, 3, 3), padding=1)
        self.conv3 = CausalConv3d(channels, channels, 1, padding=0)
        self.spatial, self.temporal = spatial, temporal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.spatial or self.temporal):
            return x
        if self.temporal:
            if x.shape[2] > 1:
                x = x.repeat_interleave(2, dim=2)[:, :, 1:]
            x = self.conv1(x) + x
        if self.spatial:
            x = x.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)
            x = self.conv2(x) + x
        return self.conv3(x)


# ------------------------------------------------------------------------------------------------ patching

def _filters(method: str, g: int, like: torch.Tensor):
    value = HAAR if method == "haar" else 1.0
    low = torch.tensor([value, value], dtype=like.dtype, device=like.device).reshape(1, 1, 2).repeat(g, 1, 1)
    high = torch.tensor([value, -value], dtype=like.dtype, device=like.device).reshape(1, 1, 2).repeat(g, 1, 1)
    return low, high


def _axis(f: torch.Tensor, axis: int) -> torch.Tensor:
    """A (g, 1, 2) filter as a Conv3d kernel along axis 0 (t), 1 (h) or 2 (w)."""
    shape = [f.shape[0], 1, 1, 1, 1]
    shape[2 + axis] = 2
    return f.reshape(shape)


def _dwt3(x: torch.Tensor) -> torch.Tensor:
    g = x.shape[1]
    low, high = _filters("haar", g, x)
    x = F.pad(x, (0, 1, 0, 1, 0, 1), mode="reflect")
    bands = [x]
    for axis, stride in ((0, (2, 1, 1)), (1, (1, 2, 1)), (2, (1, 1, 2))):
        bands = [F.conv3d(b, _axis(f, axis), groups=g, stride=stride) for b in bands for f in (low, high)]
    return torch.cat(bands, dim=1) / (2 * math.sqrt(2.0))


def _idwt3(x: torch.Tensor) -> torch.Tensor:
    g = x.shape[1] // 8
    low, high = _filters("haar", g, x)
    bands = list(torch.chunk(x, 8, dim=1))
    for axis, stride in ((2, (1, 1, 2)), (1, (1, 2, 1)), (0, (2, 1, 1))):
        bands = [F.conv_transpose3d(bands[i], _axis(low, axis), groups=g, stride=stride)
                 + F.conv_transpose3d(bands[i + 1], _axis(high, axis), groups=g, stride=stride)
                 for i in range(0, len(bands), 2)]
    return bands[0] * (2 * math.sqrt(2.0))


def patch3d(x: torch.Tensor, size: int, method: str) -> torch.Tensor:
    x = torch.cat([x[:, :, :1].repeat_interleave(size, dim=2), x[:, :, 1:]], dim=2)
    if method == "rearrange":
        b, c, t, h, w = x.shape
        x = x.reshape(b, c, t // size, size, h // size, size, w // size, size)
        return x.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, c * size ** 3, t // size, h // size, w // size)
    for _ in range(int(math.log2(size))):
        x = _dwt3(x)
    return x


def unpatch3d(x: torch.Tensor, size: int, method: str) -> torch.Tensor:
    if method == "rearrange":
        b, cp, t, h, w = x.shape
        c = cp // size ** 3
        x = x.reshape(b, c, size, size, size, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
        x = x.reshape(b, c, t * size, h * size, w * size)
    else:
        for _ in range(int(math.log2(size))):
            x = _idwt3(x)
    return x[:, :, size - 1:]


# ------------------------------------------------------------------------------------------------ network

class Level(nn.Module):
    def __init__(self, cin: int, cout: int, blocks: int, attention: bool):
        super().__init__()
        self.block = nn.ModuleList(ResBlock(cin if i == 0 else cout, cout) for i in range(blocks))
        self.attn = nn.ModuleList(_attention(cout) for _ in range(blocks)) if attention else nn.ModuleList()

    def run(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        return h


class MidBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block_1, self.attn_1, self.block_2 = ResBlock(channels, channels), _attention(channels), ResBlock(channels, channels)

    def forward(self, h):
        return self.block_2(self.attn_1(self.block_1(h)))


class CosmosVideoEncoder(nn.Module):
    def __init__(self, s: dict):
        super().__init__()
        ch, mult, levels = s["channels"], s["channels_mult"], len(s["channels_mult"])
        self.patch_size, self.patch_method = s["patch_size"], s["patch_method"]
        spatial_downs = int(math.log2(s["spatial_compression"])) - int(math.log2(s["patch_size"]))
        temporal_downs = int(math.log2(s["temporal_compression"])) - int(math.log2(s["patch_size"]))
        self.conv_in = _factorized(3 * s["patch_size"] ** 3, ch)
        widths = [ch] + [ch * m for m in mult]
        self.down = nn.ModuleList()
        for i in range(levels):
            level = Level(widths[i], widths[i + 1], s["num_res_blocks"], i in s["attn_levels"])
            if i != levels - 1:
                level.downsample = HybridDownsample(widths[i + 1], i < spatial_downs, i < temporal_downs)
            self.down.append(level)
        self.mid = MidBlock(widths[-1])
        self.norm_out = FrameNorm(widths[-1])
        self.conv_out = _factorized(widths[-1], s["z_channels"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(patch3d(x, self.patch_size, self.patch_method))
        for level in self.down:
            h = level.run(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class CosmosVideoDecoder(nn.Module):
    def __init__(self, s: dict):
        super().__init__()
        ch, mult, levels = s["channels"], s["channels_mult"], len(s["channels_mult"])
        self.patch_size, self.patch_method = s["patch_size"], s["patch_method"]
        spatial_ups = int(math.log2(s["spatial_compression"])) - int(math.log2(s["patch_size"]))
        temporal_ups = int(math.log2(s["temporal_compression"])) - int(math.log2(s["patch_size"]))
        block_in = ch * mult[-1]
        self.conv_in = _factorized(s["z_channels"], block_in)
        self.mid = MidBlock(block_in)
        up: list = [None] * levels
        for i in reversed(range(levels)):
            level = Level(block_in, ch * mult[i], s["num_res_blocks"] + 1, i in s["attn_levels"])
            block_in = ch * mult[i]
            if i != 0:
                rev = levels - i - 1
                temporal = rev < temporal_ups if s.get("legacy_mode") else 0 < rev < temporal_ups + 1
                spatial = temporal or (rev < spatial_ups and spatial_ups > temporal_ups)
                level.upsample = HybridUpsample(block_in, spatial, temporal)
            up[i] = level
        self.up = nn.ModuleList(up)
        self.norm_out = FrameNorm(block_in)
        self.conv_out = _factorized(block_in, 3 * s["patch_size"] ** 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for i in reversed(range(len(self.up))):
            h = self.up[i].run(h)
            if i != 0:
                h = self.up[i].upsample(h)
        return unpatch3d(self.conv_out(F.silu(self.norm_out(h))), self.patch_size, self.patch_method)


class CosmosDV(nn.Module):
    def __init__(self, s: dict):
        super().__init__()
        self.encoder = CosmosVideoEncoder(s)
        self.quant_conv = CausalConv3d(s["z_channels"], len(s["levels"]), 1, padding=0)
        self.quantizer = FSQ(list(s["levels"]), formula="cosmos", channel_dim=1)
        self.post_quant_conv = CausalConv3d(len(s["levels"]), s["z_channels"], 1, padding=0)
        self.decoder = CosmosVideoDecoder(s)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> codes (B, t, h, w)."""
        return self.quantizer.lookup(self.quant_conv(self.encoder(video)).float())

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(self.quantizer.decode(codes)))


# -------------------------------------------------------------------------------------------- loading

def settings_from_tensors(enc: Mapping[str, torch.Tensor], origin: str, *, spatial_compression: int | None,
                          temporal_compression: int | None, legacy_mode: bool = False) -> dict:
    conv_in = enc.get("encoder.conv_in.0.conv3d.weight")
    if conv_in is None or conv_in.dim() != 5:
        raise ValueError(f"{origin}: no encoder.conv_in.0.conv3d.weight (not a Cosmos factorized video encoder)")
    p3, rem = divmod(int(conv_in.shape[1]), 3)
    p = round(p3 ** (1 / 3))
    if rem or p ** 3 != p3 or p & (p - 1):
        raise ValueError(f"{origin}: conv_in takes {conv_in.shape[1]} channels, not 3 p^3 for a power-of-two p")
    if "quantizer._levels" not in enc:
        raise ValueError(f"{origin}: no quantizer._levels (a continuous CV tokenizer has no codes)")
    if spatial_compression is None or temporal_compression is None:
        raise ValueError(f"{origin}: pass spatial_compression= and temporal_compression= (the traces do not store "
                         f"them; a folder named like Cosmos-Tokenizer-DV8x16x16 gives them)")
    channels = int(conv_in.shape[0])
    levels = sorted({int(m.group(1)) for k in enc for m in [re.match(r"encoder\.down\.(\d+)\.", k)] if m})
    mult = [int(enc[f"encoder.down.{i}.block.0.conv1.0.conv3d.weight"].shape[0]) // channels for i in levels]
    blocks = len({m.group(1) for k in enc for m in [re.match(r"encoder\.down\.0\.block\.(\d+)\.", k)] if m})
    attn = [i for i in levels if f"encoder.down.{i}.attn.0.0.q.conv3d.weight" in enc]
    wavelet = enc.get("encoder.patcher3d.wavelets")
    method = "haar" if wavelet is None or abs(float(wavelet[0]) - HAAR) < 1e-6 else "rearrange"
    for name, value in (("spatial_compression", spatial_compression), ("temporal_compression", temporal_compression)):
        if not isinstance(value, int) or value < p or value & (value - 1):
            raise ValueError(f"{origin}: {name}={value!r} must be a power of two >= the patch size {p}")
    return {"patch_size": p, "patch_method": method, "channels": channels, "channels_mult": mult,
            "num_res_blocks": blocks, "attn_levels": attn, "z_channels": int(enc["encoder.conv_out.1.conv3d.weight"].shape[0]),
            "levels": [int(v) for v in enc["quantizer._levels"].tolist()], "spatial_compression": spatial_compression,
            "temporal_compression": temporal_compression, "legacy_mode": bool(legacy_mode)}


class CosmosVideoTokenizer(CosmosReleaseTokenizer):
    """Cosmos DV: `encode(video (B, T, 3, H, W)) -> (B, t, h, w)`, `decode(codes) -> (B, T, 3, H, W)`."""

    FORMAT = FORMAT
    MODEL = CosmosDV

    @property
    def code_spec(self) -> CodeSpec:
        s = self._settings
        return CodeSpec("video", ("t", "h", "w"), (math.prod(s["levels"]),),
                        (s["temporal_compression"], s["spatial_compression"], s["spatial_compression"]),
                        image_size=s.get("image_size", 512), decodable=self.has_decoder,
                        extra={"levels": list(s["levels"]), "causal_first_frame": True})

    @classmethod
    def from_jit(cls, directory, *, spatial_compression: int | None = None, temporal_compression: int | None = None,
                 legacy_mode: bool = False, device=None, dtype=None) -> "CosmosVideoTokenizer":
        directory, enc, dec = read_release(directory)
        named = _NAME.search(directory.resolve().name)
        if named and spatial_compression is None:
            spatial_compression = int(named.group(2))
        if named and temporal_compression is None:
            temporal_compression = int(named.group(1))
        settings = settings_from_tensors(enc, str(directory / ENCODER_FILE), spatial_compression=spatial_compression,
                                         temporal_compression=temporal_compression, legacy_mode=legacy_mode)
        del dtype
        return cls.from_release(directory, enc, dec, settings, device=device)

    def _video(self, video) -> torch.Tensor:
        if not isinstance(video, torch.Tensor) or video.dim() != 5 or video.shape[2] != 3 or not video.is_floating_point():
            raise ValueError("video must be a float (B, T, 3, H, W) tensor in [-1, 1]")
        s, ft = self._settings["spatial_compression"], self._settings["temporal_compression"]
        if (video.shape[1] - 1) % ft or video.shape[3] % s or video.shape[4] % s:
            raise ValueError(f"video of {video.shape[1]} frames of {tuple(video.shape[3:])}: Cosmos needs 1 + k * {ft} "
                             f"frames (the first frame is encoded alone) and sides that are multiples of {s}")
        return video.to(self.device, torch.float32).transpose(1, 2)

    @torch.inference_mode()
    def encode(self, video) -> torch.Tensor:
        """video (B, T, 3, H, W) in [-1, 1], T = 1 + k * f_t -> codes (B, 1 + k, H / f, W / f)."""
        return self.model.encode(self._video(video))

    @torch.inference_mode()
    def decode(self, codes, *, clamp: bool = True) -> torch.Tensor:
        out = self.model.decode(self.checked_codes(codes)).transpose(1, 2)
        return out.clamp_(-1.0, 1.0) if clamp else out


def is_cosmos_video(path: pathlib.Path) -> bool:
    """A Cosmos release folder whose encoder is a 3D (video) network (read from the archive's file list)."""
    import zipfile

    try:
        with zipfile.ZipFile(path / ENCODER_FILE) as archive:
            return any("/layers3d" in n for n in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def load_cosmos_video(path, *, device=None, dtype=None, **options) -> CosmosVideoTokenizer:
    return CosmosVideoTokenizer.from_jit(path, device=device, dtype=dtype, **options)
