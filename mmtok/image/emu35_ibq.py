"""Emu3.5's IBQ vision tokenizer as `transformers` ships it for Apertus 1.5 (`Apertus1p5VisionTokenizerModel`).

A Chameleon-style VQ-GAN encoder, a 1x1 `quant_conv`, and an index-backpropagation-quantization (IBQ) codebook
scored by inner product: the code is argmax_k <z, e_k> (131,072 codes of dim 256 at the released size), which is
`mmtok.nearest_code(metric="dot")` in fp32, without the (positions x 131,072) logits matrix upstream builds.

Layouts read (`mmtok.load`): the tokenizer's own folder (`config.json` with model_type
"apertus1p5_vision_tokenizer" + safetensors), or a whole Apertus 1.5 model folder (model_type "apertus1p5", the
tokenizer under `vision_config` and the `model.vision_tokenizer.` key prefix; only the shards holding those keys
are read). transformers ships the encoder only; Emu3.5's decoder is not in that layout, so `decode` refuses and
says so (`code_spec.decodable` is False).

Preprocessing follows `Apertus1p5ImageProcessor`: pixels / 127.5 - 1, both sides resized (bicubic) to multiples
of 16 within a pixel budget ("native" mode, `smart_size`); a float tensor in [-1, 1] is used as is.
"""
from __future__ import annotations

import math
import os
import pathlib
import re
from typing import Mapping

import torch
from torch import nn

from ..ops import nearest_code
from ..tokenizer.folder import read_config, read_folder, save_folder
from ..tokenizer.protocol import CodeSpec
from ..tokenizer.weights import find_weights, load_exactly, read_prefixed
from .autoencoder import Encoder
from .config import VQGANConfig
from .preprocess import as_items, image_batch, open_image, to_tensor

FORMAT = "mmtok.image.emu35_ibq"
MODEL_TYPE = "apertus1p5_vision_tokenizer"
FULL_MODEL_TYPE = "apertus1p5"
FULL_PREFIX = "model.vision_tokenizer."
# Apertus1p5VisionTokenizerConfig defaults (transformers 5.24), for configs that omit a field
DEFAULTS = {"codebook_size": 131072, "embed_dim": 256, "latent_channels": 256, "in_channels": 3,
            "base_channels": 256, "channel_multiplier": [1, 1, 2, 2, 4], "num_res_blocks": 4,
            "attn_resolutions": [16], "resolution": 256}
MIN_PIXELS, MAX_PIXELS = 128 * 128, 1400 * 1400  # Apertus1p5ImageProcessor's size budget


def settings_from_config(config: Mapping, origin: str) -> dict:
    """The architecture fields of an `Apertus1p5VisionTokenizerConfig` dict (defaults filled in, checked)."""
    fields = {k: config.get(k, v) for k, v in DEFAULTS.items()}
    for name in ("codebook_size", "embed_dim", "latent_channels", "in_channels", "base_channels", "num_res_blocks",
                 "resolution"):
        value = fields[name]
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 1 << 24:
            raise ValueError(f"{origin}: {name} must be a positive int, got {value!r}")
    mult = fields["channel_multiplier"]
    if not isinstance(mult, (list, tuple)) or not mult or not all(isinstance(m, int) and 0 < m <= 64 for m in mult):
        raise ValueError(f"{origin}: channel_multiplier must be a non-empty list of small positive ints, got {mult!r}")
    fields["channel_multiplier"] = list(mult)
    fields["attn_resolutions"] = [int(r) for r in (fields["attn_resolutions"] or [])]
    return fields


def encoder_config(s: dict) -> VQGANConfig:
    levels = len(s["channel_multiplier"])
    attn = [i for i in range(levels) if s["resolution"] // 2 ** i in s["attn_resolutions"]]
    return VQGANConfig(num_codes=s["codebook_size"], code_dim=s["embed_dim"], z_channels=s["latent_channels"],
                       ch=s["base_channels"], ch_mult=s["channel_multiplier"], num_res_blocks=s["num_res_blocks"],
                       attn_levels=attn, in_channels=s["in_channels"], source="emu35_ibq")


_STAGE = re.compile(r"^encoder\.stages\.(\d+)\.(?:layers\.(\d+)\.(resnet|attention)|(downsample))\.(.*)$")


def to_ours(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers key names -> mmtok's encoder (taming's): stages.i.layers.j.resnet -> down.i.block.j, ..."""
    out = {}
    for key, value in state.items():
        m = _STAGE.match(key)
        if m:
            level, block, kind, down, rest = m.groups()
            if down:
                key = f"encoder.down.{level}.downsample.{rest}"
            else:
                key = f"encoder.down.{level}.{'block' if kind == 'resnet' else 'attn'}.{block}.{rest}"
        elif key == "quantize.embedding.weight":
            key = "codebook"
        out[key] = value
    return out


class IBQEncoder(nn.Module):
    """encoder -> 1x1 quant_conv -> argmax inner product over the codebook."""

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.code_dim, 1)
        self.codebook = nn.Parameter(torch.zeros(cfg.num_codes, cfg.code_dim))

    def latents(self, images: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(images))

    def lookup(self, latents: torch.Tensor) -> torch.Tensor:
        rows = latents.float().permute(0, 2, 3, 1)
        return nearest_code(rows, self.codebook.float(), metric="dot")[0]


def smart_size(height: int, width: int, factor: int = 16, min_pixels: int = MIN_PIXELS,
               max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """Apertus1p5ImageProcessor's target size: sides rounded to multiples of `factor`, area within the budget."""
    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h, w = max(factor, math.floor(height / beta / factor) * factor), max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return max(h, factor), max(w, factor)


class Emu35IBQTokenizer:
    """Emu3.5 / Apertus 1.5 IBQ image tokenizer: `encode(images) -> (B, h, w)`; encode only (see module doc)."""

    def __init__(self, model: IBQEncoder, settings: dict, *, device=None):
        self.model = model.eval().requires_grad_(False)
        self._settings = dict(settings)
        if device is not None:
            self.to(device)

    @property
    def config(self) -> dict:
        return dict(self._settings)

    @property
    def device(self) -> torch.device:
        return self.model.quant_conv.weight.device

    def to(self, device) -> "Emu35IBQTokenizer":
        self.model.to(torch.device(device))
        return self

    @property
    def downsample_factor(self) -> int:
        return self.model.config.downsample_factor

    @property
    def code_spec(self) -> CodeSpec:
        f = self.downsample_factor
        return CodeSpec("image", ("h", "w"), (self.model.config.num_codes,), (f, f),
                        image_size=self._settings["resolution"], decodable=False)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    # ------------------------------------------------------------------------------------------- loading
    @classmethod
    def _build(cls, settings: dict, state: Mapping[str, torch.Tensor], origin: str, device) -> "Emu35IBQTokenizer":
        model = IBQEncoder(encoder_config(settings))
        load_exactly(model, state, origin)
        return cls(model, settings, device=device)

    @classmethod
    def from_transformers(cls, directory, *, device=None, dtype=None) -> "Emu35IBQTokenizer":
        """A tokenizer folder (model_type apertus1p5_vision_tokenizer) or a whole Apertus 1.5 model folder."""
        directory = pathlib.Path(os.fspath(directory))
        config_path = directory / "config.json"
        config = read_config(config_path)
        model_type = config.get("model_type")
        if model_type == MODEL_TYPE:
            vision, prefix = config, None
        elif model_type == FULL_MODEL_TYPE:
            vision, prefix = config.get("vision_config"), FULL_PREFIX
            if not isinstance(vision, dict):
                raise ValueError(f"{config_path}: an apertus1p5 config without a 'vision_config' object")
        else:
            raise ValueError(f"{config_path}: model_type {model_type!r} is not {MODEL_TYPE!r} or {FULL_MODEL_TYPE!r}")
        settings = settings_from_config(vision, str(config_path))
        weights = find_weights(directory)
        state = to_ours(read_prefixed(weights, prefix))
        del dtype  # the reference runs this tokenizer in fp32 ("for stable code assignment"); so do we
        return cls._build(settings, state, str(weights), device)

    def save_pretrained(self, directory):
        return save_folder(directory, FORMAT, self.config, self.state_dict())

    @classmethod
    def from_pretrained(cls, directory, *, device=None, dtype=None) -> "Emu35IBQTokenizer":
        saved = read_folder(directory, expected_format=FORMAT)
        settings = settings_from_config(saved.config, str(saved.config_path))
        return cls._build(settings, saved.tensors, str(saved.weights_path), device)

    # ----------------------------------------------------------------------------------------- inference
    def prepare_images(self, images, *, size: int | None = None, mode: str = "native") -> torch.Tensor:
        """Tensors as they are, PIL images / paths by `mode`: "native" is the processor's smart resize."""
        f = self.downsample_factor
        if isinstance(images, torch.Tensor) or mode != "native":
            size = size or self.code_spec.image_size
            return image_batch(images, factor=f, size=size, mode=mode,
                               channels=self.model.config.in_channels).to(self.device)
        from PIL import Image

        tensors = []
        for i, item in enumerate(as_items(images)):
            img = open_image(item, i)
            h, w = smart_size(img.height, img.width, f)
            tensors.append(to_tensor(img.resize((w, h), Image.BICUBIC)))
        if len({tuple(t.shape) for t in tensors}) > 1:
            raise ValueError("images of different sizes give grids of different sizes: encode them one at a time")
        return torch.stack(tensors).to(self.device)

    @torch.inference_mode()
    def encode(self, images, *, size: int | None = None, mode: str = "native") -> torch.Tensor:
        """images -> codes (B, h, w): the argmax-inner-product code of every latent position, in fp32."""
        return self.model.lookup(self.model.latents(self.prepare_images(images, size=size, mode=mode)))

    def decode(self, codes, *args, **kwargs) -> torch.Tensor:
        raise NotImplementedError("the Emu3.5 IBQ tokenizer in transformers' layout has no decoder (transformers "
                                  "ships the encoder only); decoding needs Emu3.5's original decoder weights")

    def __repr__(self) -> str:
        c = self.model.config
        return f"Emu35IBQTokenizer(num_codes={c.num_codes}, code_dim={c.code_dim}, f={c.downsample_factor})"


def is_emu35_config(config: dict | None) -> bool:
    return isinstance(config, dict) and config.get("model_type") in (MODEL_TYPE, FULL_MODEL_TYPE)


def load_emu35_ibq(path, *, device=None, dtype=None, **options) -> Emu35IBQTokenizer:
    """`mmtok.load` entry for the Apertus 1.5 / Emu3.5 IBQ layout."""
    return Emu35IBQTokenizer.from_transformers(path, device=device, dtype=dtype, **options)
