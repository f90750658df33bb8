"""VAR's VQVAE (`vae_ch160v4096z32.pth`): a taming-style encoder / decoder around the multi-scale quantizer.

VAR publishes its tokenizer as a bare state dict: no config. Everything but the scale list and Φ's ratio is
read from the tensor shapes (channels, levels, res blocks, attention levels, codebook, Φ sharing, quant-conv
kernel); `scales` (VAR's `patch_nums`, default the released 10) and `phi_ratio` (0.5) are options.

The network is mmtok's VQ-GAN `Encoder` / `Decoder` (VAR's are the latent-diffusion f16 ones: attention at the
lowest level and in the middle, a fused qkv 1x1 conv that the loader splits into q, k, v) with VAR's 3x3
quant / post-quant convolutions, and `MultiScaleResidualVQ` in between. Codes are (B, L), L = sum of h_k * w_k
(680 at 256 px), coarse to fine; decode clamps to [-1, 1] as VAR's `idxBl_to_img` does.
"""
from __future__ import annotations

import os
import re
from typing import Mapping, Sequence

import torch
from torch import nn

from ..quantize import MultiScaleResidualVQ
from ..quantize.multiscale import VAR_SCALES
from ..tokenizer.folder import read_folder, save_folder
from ..tokenizer.protocol import CodeSpec
from ..tokenizer.weights import load_exactly, read_state_dict
from .autoencoder import Decoder, Encoder
from .config import VQGANConfig
from .preprocess import image_batch

FORMAT = "mmtok.image.var"
_IGNORED = ("quantize.ema_vocab_hit_SV",)
_QKV = re.compile(r"^(.*\.attn(?:_1|\.\d+))\.qkv\.(weight|bias)$")


class VARVQVAE(nn.Module):
    """encoder -> quant_conv (k x k) -> multi-scale quantizer -> post_quant_conv -> decoder."""

    def __init__(self, cfg: VQGANConfig, scales, *, phi_ratio: float, phi_count: int, metric: str,
                 quant_conv_kernel: int = 3):
        super().__init__()
        self.config = cfg
        pad = quant_conv_kernel // 2
        self.encoder = Encoder(cfg)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, quant_conv_kernel, padding=pad)
        self.quantize = MultiScaleResidualVQ(cfg.num_codes, cfg.z_channels, scales, phi_ratio=phi_ratio,
                                             phi_count=phi_count, metric=metric)
        self.post_quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, quant_conv_kernel, padding=pad)
        self.decoder = Decoder(cfg)

    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(images))

    def decode_latents(self, f_hat: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(f_hat))


def _count(state: Mapping, pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in state for m in [regex.match(k)] if m})


def var_settings(state: Mapping[str, torch.Tensor], origin: str) -> dict:
    """The architecture of a VAR VQVAE state dict, read from its shapes (ValueError naming `origin`)."""
    try:
        ch = int(state["encoder.conv_in.weight"].shape[0])
        z_channels = int(state["encoder.conv_out.weight"].shape[0])
        num_codes, dim = (int(s) for s in state["quantize.embedding.weight"].shape)
        kernel = int(state["quant_conv.weight"].shape[-1])
    except KeyError as exc:
        raise ValueError(f"{origin}: not a VAR VQVAE state dict (missing {exc.args[0]})") from None
    levels = _count(state, r"^encoder\.down\.(\d+)\.")
    blocks = _count(state, r"^encoder\.down\.0\.block\.(\d+)\.")
    if levels < 1 or blocks < 1 or dim != z_channels:
        raise ValueError(f"{origin}: not a VAR VQVAE state dict ({levels} encoder levels, {blocks} res blocks, "
                         f"codebook dim {dim} vs z_channels {z_channels})")
    mult = [int(state[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) // ch for i in range(levels)]
    attn = [i for i in range(levels) if f"encoder.down.{i}.attn.0.qkv.weight" in state]
    shared = "quantize.quant_resi.qresi.weight" in state
    partial = _count(state, r"^quantize\.quant_resi\.qresi_ls\.(\d+)\.")
    separate = _count(state, r"^quantize\.quant_resi\.(\d+)\.")
    phi_count = 1 if shared else partial if partial else 0 if separate else None
    return {"ch": ch, "z_channels": z_channels, "num_codes": num_codes, "ch_mult": mult, "num_res_blocks": blocks,
            "attn_levels": attn, "quant_conv_kernel": kernel, "phi_count": phi_count, "separate_phis": separate}


def var_to_ours(state: Mapping[str, torch.Tensor], phi_count: int) -> dict[str, torch.Tensor]:
    """VAR key names -> ours: qkv split into q / k / v, embedding -> codebook, Φ convs renamed."""
    out = {}
    for key, value in state.items():
        if key in _IGNORED:
            continue
        m = _QKV.match(key)
        if m:
            for name, part in zip("qkv", value.chunk(3, dim=0)):
                out[f"{m.group(1)}.{name}.{m.group(2)}"] = part
            continue
        if key == "quantize.embedding.weight":
            out["quantize.codebook"] = value
            continue
        phi = re.match(r"^quantize\.quant_resi\.(?:qresi_ls\.(\d+)|qresi|(\d+))\.(weight|bias)$", key)
        if phi:
            index = phi.group(1) or phi.group(2) or "0"
            out[f"quantize.phis.{index}.conv.{phi.group(3)}"] = value
            continue
        out[key] = value
    return out


class VARTokenizer:
    """VAR's image tokenizer: `encode(images) -> (B, L)` multi-scale codes, `decode(codes) -> (B, 3, H, W)`."""

    def __init__(self, model: VARVQVAE, settings: dict, *, device=None):
        self.model = model.eval().requires_grad_(False)
        self._settings = dict(settings)
        if device is not None:
            self.model.to(torch.device(device))

    # ---------------------------------------------------------------------------------------- protocol
    @property
    def config(self) -> dict:
        return dict(self._settings)

    @property
    def device(self) -> torch.device:
        return self.model.quant_conv.weight.device

    @property
    def scales(self) -> tuple[tuple[int, int], ...]:
        return self.model.quantize.sizes

    @property
    def downsample_factor(self) -> int:
        return self.model.config.downsample_factor

    @property
    def image_size(self) -> int:
        return self.scales[-1][0] * self.downsample_factor

    @property
    def code_spec(self) -> CodeSpec:
        f = self.downsample_factor
        return CodeSpec("image", ("token",), (self.model.config.num_codes,), (f, f), image_size=self.image_size,
                        extra={"scales": [list(s) for s in self.scales], "order": "coarse-to-fine"})

    def to(self, device) -> "VARTokenizer":
        self.model.to(torch.device(device))
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    # ----------------------------------------------------------------------------------------- loading
    @classmethod
    def _build(cls, settings: dict) -> VARVQVAE:
        cfg = VQGANConfig(num_codes=settings["num_codes"], code_dim=settings["z_channels"],
                          z_channels=settings["z_channels"], ch=settings["ch"], ch_mult=settings["ch_mult"],
                          num_res_blocks=settings["num_res_blocks"], attn_levels=settings["attn_levels"],
                          image_size=settings["scales"][-1][0] * 2 ** (len(settings["ch_mult"]) - 1), source="var")
        return VARVQVAE(cfg, [tuple(s) for s in settings["scales"]], phi_ratio=settings["phi_ratio"],
                        phi_count=settings["phi_count"], metric=settings["metric"],
                        quant_conv_kernel=settings["quant_conv_kernel"])

    @classmethod
    def from_var_checkpoint(cls, path, *, scales: Sequence = VAR_SCALES, phi_ratio: float = 0.5,
                            metric: str = "l2", device=None, dtype=None) -> "VARTokenizer":
        """VAR's `.pth` state dict. `scales` = VAR's patch_nums; metric "cosine" for a `using_znorm` model."""
        origin = os.fspath(path)
        state = read_state_dict(path)
        shapes = var_settings(state, origin)
        phi_count = shapes.pop("phi_count")
        separate = shapes.pop("separate_phis")
        sizes = [[s, s] if isinstance(s, int) else list(s) for s in scales]
        if phi_count is None and abs(phi_ratio) > 1e-6:
            raise ValueError(f"{origin}: no Φ (quant_resi) weights, but phi_ratio={phi_ratio}; pass phi_ratio=0")
        if phi_count == 0 and separate != len(sizes):
            raise ValueError(f"{origin}: {separate} per-scale Φ convolutions but {len(sizes)} scales were given")
        settings = {**shapes, "scales": sizes, "phi_ratio": float(phi_ratio), "phi_count": phi_count or 0,
                    "metric": metric}
        model = cls._build(settings)
        load_exactly(model, var_to_ours(state, settings["phi_count"]), origin)
        del dtype  # fp32 only for now (the lookup is fp32 in any case)
        return cls(model, settings, device=device)

    def save_pretrained(self, directory):
        return save_folder(directory, FORMAT, self.config, self.state_dict())

    @classmethod
    def from_pretrained(cls, directory, *, device=None, dtype=None) -> "VARTokenizer":
        saved = read_folder(directory, expected_format=FORMAT)
        model = cls._build(saved.config)
        load_exactly(model, saved.tensors, str(saved.weights_path))
        return cls(model, saved.config, device=device)

    # --------------------------------------------------------------------------------------- inference
    def _images(self, images, size, mode) -> torch.Tensor:
        x = image_batch(images, factor=self.downsample_factor, size=size or self.image_size, mode=mode)
        expected = tuple(s * self.downsample_factor for s in self.scales[-1])
        if tuple(x.shape[2:]) != expected:
            raise ValueError(f"images are {tuple(x.shape[2:])}, this tokenizer's last scale {self.scales[-1]} needs "
                             f"{expected} (pass scales= ending at H/{self.downsample_factor} x W/{self.downsample_factor})")
        return x.to(self.device, torch.float32)

    @torch.inference_mode()
    def encode(self, images, *, size: int | None = None, mode: str = "center_crop") -> torch.Tensor:
        """images ((B, 3, H, W) in [-1, 1], or PIL images / paths) -> codes (B, L), coarse to fine."""
        return self.model.quantize.lookup(self.model.encode_latents(self._images(images, size, mode)))

    @torch.inference_mode()
    def decode(self, codes, *, clamp: bool = True) -> torch.Tensor:
        """codes (B, L) -> images (B, 3, H, W) in [-1, 1] (VAR clamps; clamp=False gives the raw output)."""
        codes = self.code_spec.check_codes(codes, "codes").to(self.device)
        out = self.model.decode_latents(self.model.quantize.decode(codes))
        return out.clamp_(-1.0, 1.0) if clamp else out

    def split(self, codes: torch.Tensor) -> list[torch.Tensor]:
        """(B, L) codes -> the per-scale token maps [(B, h_k, w_k)], coarse to fine."""
        return self.model.quantize.split(codes)

    def __repr__(self) -> str:
        return (f"VARTokenizer(num_codes={self.model.config.num_codes}, scales={self.scales}, "
                f"f={self.downsample_factor}, device={self.device})")


def load_var(path, *, device=None, dtype=None, **options) -> VARTokenizer:
    """`mmtok.load` entry for the VAR layout."""
    return VARTokenizer.from_var_checkpoint(path, device=device, dtype=dtype, **options)
