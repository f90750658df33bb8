"""NVIDIA Cosmos discrete image tokenizers (Cosmos-Tokenizer DI8x8 / DI16x16): Haar wavelet patching, a taming-style
encoder / decoder, FSQ with Cosmos' formula; read from the released TorchScript files as weights.

A release folder holds `encoder.jit` and `decoder.jit` (TorchScript traces of `Sequential(encoder, quant_conv,
quantizer)` and `Sequential(inv_quant, post_quant_conv, decoder)`). mmtok reads their tensors without running
them (`mmtok.tokenizer.torchscript`) into its own network; everything is read from the tensors: the patch size
from `conv_in` (3 p² channels), the patch method from the stored wavelet (Haar [1/√2, 1/√2] or plain
rearrangement [1, 1]), channels, levels, res blocks and attention levels from the shapes and keys, the FSQ levels
from the quantizer's `_levels` buffer.

Network, as Cosmos' `layers2d` (the latent-diffusion VQ-GAN): the input is split into p x p wavelet sub-bands
(log2 p rounds of a one-level 2D Haar transform with reflect padding, each halved), encoded to a latent, 1x1
quant conv, FSQ (`mmtok.quantize.FSQ(formula="cosmos")`: truncated mixed-radix index), and back: FSQ values,
1x1 post-quant conv, decoder, inverse wavelet transform. Codes are (B, h, w) with h = H / spatial compression.

Cosmos runs its tokenizers in bf16 by default (`ImageTokenizer(dtype="bfloat16")`); the fixtures and the exactness
tests are fp32, where the upstream numerics are defined without bf16 rounding. Only the configurations whose
encoder downsamples at every level but the last are read (all released DI models are); the video tokenizers
(DV, causal 3D) and the continuous ones (CI, CV) are refused with a message.
"""
from __future__ import annotations

import math
import os
import pathlib
import re
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..quantize import FSQ
from ..tokenizer.folder import read_folder, save_folder
from ..tokenizer.protocol import CodeSpec
from ..tokenizer.torchscript import read_torchscript
from ..tokenizer.weights import load_exactly
from .autoencoder import Decoder, Encoder
from .config import VQGANConfig
from .preprocess import image_batch

FORMAT = "mmtok.image.cosmos"
ENCODER_FILE, DECODER_FILE = "encoder.jit", "decoder.jit"
HAAR = 1 / math.sqrt(2)
PATCH_METHODS = ("haar", "rearrange")


def _filters(method: str, channels: int, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(low, high) 1-D analysis filters, one group per channel, as Cosmos builds them from its wavelet."""
    value = HAAR if method == "haar" else 1.0
    low = torch.tensor([value, value], dtype=dtype, device=device)
    high = torch.tensor([value, -value], dtype=dtype, device=device)
    return low.reshape(1, 1, 2).repeat(channels, 1, 1), high.reshape(1, 1, 2).repeat(channels, 1, 1)


def _dwt(x: torch.Tensor, method: str) -> torch.Tensor:
    """One level: (B, C, H, W) -> (B, 4C, H/2, W/2) = [LL, LH, HL, HH], halved (Cosmos' rescale)."""
    g = x.shape[1]
    low, high = _filters(method, g, x.dtype, x.device)
    x = F.pad(x, (0, 1, 0, 1), mode="reflect")
    xl = F.conv2d(x, low.unsqueeze(2), groups=g, stride=(1, 2))
    xh = F.conv2d(x, high.unsqueeze(2), groups=g, stride=(1, 2))
    parts = [F.conv2d(part, f.unsqueeze(3), groups=g, stride=(2, 1)) for part in (xl, xh) for f in (low, high)]
    return torch.cat(parts, dim=1) / 2


def _idwt(x: torch.Tensor, method: str) -> torch.Tensor:
    """Inverse of `_dwt` (transposed convolutions, doubled)."""
    g = x.shape[1] // 4
    low, high = _filters(method, g, x.dtype, x.device)
    ll, lh, hl, hh = torch.chunk(x, 4, dim=1)
    yl = F.conv_transpose2d(ll, low.unsqueeze(3), groups=g, stride=(2, 1))
    yl = yl + F.conv_transpose2d(lh, high.unsqueeze(3), groups=g, stride=(2, 1))
    yh = F.conv_transpose2d(hl, low.unsqueeze(3), groups=g, stride=(2, 1))
    yh = yh + F.conv_transpose2d(hh, high.unsqueeze(3), groups=g, stride=(2, 1))
    y = F.conv_transpose2d(yl, low.unsqueeze(2), groups=g, stride=(1, 2))
    y = y + F.conv_transpose2d(yh, high.unsqueeze(2), groups=g, stride=(1, 2))
    return y * 2


def patch(x: torch.Tensor, size: int, method: str) -> torch.Tensor:
    """(B, C, H, W) -> (B, C p², H/p, W/p): log2(p) wavelet levels ("haar"), or a plain space-to-depth with
    channel order (c, p1, p2) ("rearrange")."""
    if method == "rearrange":
        b, c, h, w = x.shape
        return x.reshape(b, c, h // size, size, w // size, size).permute(0, 1, 3, 5, 2, 4).reshape(
            b, c * size * size, h // size, w // size)
    for _ in range(int(math.log2(size))):
        x = _dwt(x, method)
    return x


def unpatch(x: torch.Tensor, size: int, method: str) -> torch.Tensor:
    if method == "rearrange":
        b, cpp, h, w = x.shape
        c = cpp // (size * size)
        return x.reshape(b, c, size, size, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c, h * size, w * size)
    for _ in range(int(math.log2(size))):
        x = _idwt(x, method)
    return x


class CosmosDI(nn.Module):
    """patch -> encoder -> quant_conv -> FSQ ... FSQ values -> post_quant_conv -> decoder -> unpatch."""

    def __init__(self, s: dict):
        super().__init__()
        self.patch_size, self.patch_method = s["patch_size"], s["patch_method"]
        p2 = s["patch_size"] ** 2
        cfg = VQGANConfig(num_codes=math.prod(s["levels"]), code_dim=len(s["levels"]), z_channels=s["z_channels"],
                          ch=s["channels"], ch_mult=s["channels_mult"], num_res_blocks=s["num_res_blocks"],
                          attn_levels=s["attn_levels"], in_channels=3 * p2, out_channels=3 * p2, source="cosmos")
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.quant_conv = nn.Conv2d(s["z_channels"], len(s["levels"]), 1)
        self.quantizer = FSQ(list(s["levels"]), formula="cosmos", channel_dim=1)
        self.post_quant_conv = nn.Conv2d(len(s["levels"]), s["z_channels"], 1)
        self.decoder = Decoder(cfg)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        latents = self.quant_conv(self.encoder(patch(images, self.patch_size, self.patch_method)))
        return self.quantizer.lookup(latents.float())

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        values = self.quantizer.decode(codes)
        return unpatch(self.decoder(self.post_quant_conv(values)), self.patch_size, self.patch_method)


def _levels_of(tensors: Mapping, prefix: str, origin: str) -> list[int]:
    key = f"{prefix}_levels"
    if key not in tensors:
        raise ValueError(f"{origin}: no {key} (not a Cosmos discrete tokenizer; continuous CI / CV tokenizers "
                         f"have no codes)")
    return [int(v) for v in tensors[key].tolist()]


def settings_from_tensors(enc: Mapping[str, torch.Tensor], origin: str) -> dict:
    """The architecture of a Cosmos DI encoder trace, read from its tensors (ValueError naming `origin`)."""
    conv_in = enc.get("encoder.conv_in.weight")
    if conv_in is None:
        raise ValueError(f"{origin}: no encoder.conv_in.weight (not a Cosmos tokenizer encoder)")
    if conv_in.dim() != 4:
        raise ValueError(f"{origin}: a {conv_in.dim() - 2}-D encoder: Cosmos video tokenizers (DV / CV) are not "
                         f"supported yet, only the image ones (DI)")
    p2, rem = divmod(int(conv_in.shape[1]), 3)
    p = math.isqrt(p2)
    if rem or p * p != p2 or p & (p - 1):
        raise ValueError(f"{origin}: conv_in takes {conv_in.shape[1]} channels, not 3 p^2 for a power-of-two p")
    wavelet = enc.get("encoder.patcher.wavelets")
    method = "haar" if wavelet is None or abs(float(wavelet[0]) - HAAR) < 1e-6 else "rearrange"
    channels = int(conv_in.shape[0])
    levels = sorted({int(m.group(1)) for k in enc for m in [re.match(r"encoder\.down\.(\d+)\.", k)] if m})
    mult = [int(enc[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) // channels for i in levels]
    blocks = len({m.group(1) for k in enc for m in [re.match(r"encoder\.down\.0\.block\.(\d+)\.", k)] if m})
    downs = [i for i in levels if f"encoder.down.{i}.downsample.conv.weight" in enc]
    if downs != levels[:-1]:
        raise ValueError(f"{origin}: the encoder downsamples at levels {downs} of {levels}; mmtok reads Cosmos "
                         f"image tokenizers that downsample at every level but the last")
    attn = [i for i in levels if f"encoder.down.{i}.attn.0.q.weight" in enc]
    return {"patch_size": p, "patch_method": method, "channels": channels, "channels_mult": mult,
            "num_res_blocks": blocks, "attn_levels": attn, "z_channels": int(enc["encoder.conv_out.weight"].shape[0]),
            "levels": _levels_of(enc, "quantizer.", origin),
            "spatial_compression": p * 2 ** (len(levels) - 1)}


def read_release(directory) -> tuple[pathlib.Path, dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """(folder, encoder.jit tensors, decoder.jit tensors or None) of a Cosmos release folder, read as weights."""
    directory = pathlib.Path(os.fspath(directory))
    enc, _ = read_torchscript(directory / ENCODER_FILE)
    dec = read_torchscript(directory / DECODER_FILE)[0] if (directory / DECODER_FILE).is_file() else None
    return directory, enc, dec


class CosmosReleaseTokenizer:
    """What Cosmos' image (DI) and video (DV) tokenizers share: a network built from `settings`, loaded from a
    release folder (encoder.jit, and decoder.jit when decoding) or mmtok's own folder, and refusing to decode
    without a decoder. Subclasses set FORMAT and MODEL and define code_spec, encode, decode."""

    FORMAT = ""
    MODEL: type = nn.Module

    def __init__(self, model: nn.Module, settings: dict, *, has_decoder: bool = True, device=None):
        self.model = model.eval().requires_grad_(False)
        self._settings = dict(settings)
        self.has_decoder = has_decoder
        if device is not None:
            self.to(device)

    @property
    def config(self) -> dict:
        return dict(self._settings)

    @property
    def device(self) -> torch.device:
        return next(self.model.quant_conv.parameters()).device

    def to(self, device):
        self.model.to(torch.device(device))
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    @classmethod
    def from_release(cls, directory: pathlib.Path, enc: Mapping, dec: Mapping | None, settings: dict, *, device=None):
        """The tokenizer of `settings` with a release's tensors: the decoder's FSQ levels must be the encoder's;
        without decoder.jit the decoder keys stay unloaded and decoding is refused."""
        if dec is not None:
            dec_levels = _levels_of(dec, "inv_quant.quantizer.", str(directory / DECODER_FILE))
            if dec_levels != settings["levels"]:
                raise ValueError(f"{directory / DECODER_FILE}: FSQ levels {dec_levels} differ from the encoder's "
                                 f"{settings['levels']}")
        model = cls.MODEL(settings)
        skip = ("encoder.patcher", "decoder.unpatcher", "quantizer.", "inv_quant.")  # no weights: rebuilt from settings
        state = {k: v for part in (enc, dec or {}) for k, v in part.items() if not k.startswith(skip)}
        optional = [] if dec is not None else [k for k in model.state_dict()
                                               if k.startswith(("decoder.", "post_quant_conv."))]
        load_exactly(model, state, str(directory), optional=optional)
        return cls(model, settings, has_decoder=dec is not None, device=device)

    def save_pretrained(self, directory):
        return save_folder(directory, self.FORMAT, {**self.config, "has_decoder": self.has_decoder}, self.state_dict())

    @classmethod
    def from_pretrained(cls, directory, *, device=None, dtype=None):
        saved = read_folder(directory, expected_format=cls.FORMAT)
        settings = dict(saved.config)
        has_decoder = bool(settings.pop("has_decoder", True))
        model = cls.MODEL(settings)
        load_exactly(model, saved.tensors, str(saved.weights_path))
        return cls(model, settings, has_decoder=has_decoder, device=device)

    def checked_codes(self, codes) -> torch.Tensor:
        """codes for decode: refused without a decoder, checked against code_spec, on the device."""
        if not self.has_decoder:
            raise ValueError("this Cosmos tokenizer was loaded without decoder.jit: put it beside encoder.jit")
        return self.code_spec.check_codes(codes, "codes").to(self.device)


class CosmosImageTokenizer(CosmosReleaseTokenizer):
    """Cosmos DI: `encode(images) -> (B, h, w)`, `decode(codes) -> (B, 3, H, W)` in [-1, 1]."""

    FORMAT = FORMAT
    MODEL = CosmosDI

    @property
    def downsample_factor(self) -> int:
        return self._settings["spatial_compression"]

    @property
    def code_spec(self) -> CodeSpec:
        f = self.downsample_factor
        return CodeSpec("image", ("h", "w"), (math.prod(self._settings["levels"]),), (f, f),
                        image_size=self._settings.get("image_size", 512), decodable=self.has_decoder,
                        extra={"levels": list(self._settings["levels"])})

    @classmethod
    def from_jit(cls, directory, *, device=None, dtype=None) -> "CosmosImageTokenizer":
        """A Cosmos release folder: encoder.jit (+ decoder.jit for decoding)."""
        directory, enc, dec = read_release(directory)
        settings = settings_from_tensors(enc, str(directory / ENCODER_FILE))
        del dtype  # fp32 (see the module docstring)
        return cls.from_release(directory, enc, dec, settings, device=device)

    def _images(self, images, size, mode) -> torch.Tensor:
        return image_batch(images, factor=self.downsample_factor, size=size or self.code_spec.image_size,
                           mode=mode).to(self.device)

    @torch.inference_mode()
    def encode(self, images, *, size: int | None = None, mode: str = "center_crop") -> torch.Tensor:
        return self.model.encode(self._images(images, size, mode))

    @torch.inference_mode()
    def decode(self, codes, *, clamp: bool = True) -> torch.Tensor:
        out = self.model.decode(self.checked_codes(codes))
        return out.clamp_(-1.0, 1.0) if clamp else out

    def __repr__(self) -> str:
        s = self._settings
        return f"CosmosImageTokenizer(levels={s['levels']}, f={s['spatial_compression']}, patch={s['patch_size']})"


def is_cosmos_folder(path: pathlib.Path) -> bool:
    return path.is_dir() and (path / ENCODER_FILE).is_file()


def load_cosmos(path, *, device=None, dtype=None, **options) -> CosmosImageTokenizer:
    """`mmtok.load` entry for a Cosmos release folder (encoder.jit, decoder.jit)."""
    return CosmosImageTokenizer.from_jit(path, device=device, dtype=dtype, **options)
