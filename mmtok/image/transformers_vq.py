"""Hugging Face `transformers` VQ image tokenizers: `ChameleonVQVAE` (Chameleon, Anole, Lumina-mGPT) and
`JanusVQVAE` (Janus, Janus-Pro; the LlamaGen VQ-16 network), loaded from the folders users download.

Both are taming-style VQ-GANs, so they run on mmtok's `VQAutoencoder`; this module maps their configs and key names
and adds what differs from plain taming:

- Chameleon: transformers ships the encoder and the codebook only. Decoding needs the original Chameleon release's
  VQ-GAN (taming layout, `vqgan.ckpt`), passed as `decoder_checkpoint=`; without it `decode` says so. Its image
  processor rescales by 0.0078 (255 -> 0.989) where the original tokenizer maps `u8 / 255 * 2 - 1` (255 -> 1.0): both
  are offered (`preprocessing="original"`, the default, or `"transformers"`).
- Janus: upstream Janus / LlamaGen look codes up between l2-normalised latents and l2-normalised codes;
  `JanusVQVAE.encode` skips that normalisation (its `decode` does normalise) and so gives different codes.
  `lookup="upstream"` (default) follows Janus, `lookup="transformers"` reproduces transformers' encode.
  transformers' `decoder.up.N` runs from the lowest resolution, the opposite of taming's key order.

A folder is a transformers VQ folder (`config.json` `model_type` `chameleon_vqgan` / `janus_vqgan`) or a full
`chameleon` / `janus` model folder (the VQ under `vq_config` and the `model.vqmodel.` key prefix; only the shards
holding those keys are read).
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
from collections.abc import Mapping

import torch

from ..ops import nearest_code
from ..tokenizer.fields import build_checked
from ..tokenizer.folder import read_config, read_folder, save_folder
from ..tokenizer.protocol import CodeSpec  # noqa: F401  (the type of code_spec)
from ..tokenizer.weights import find_weights, read_prefixed, read_state_dict, strip_prefix
from . import checkpoints
from .autoencoder import VQAutoencoder
from .config import VQGANConfig
from .tokenizer import ImageTokenizer

FORMAT = "mmtok.image.transformers_vq"
FORMAT_VERSION = 1
FAMILIES = ("chameleon", "janus")
VQ_MODEL_TYPES = {"chameleon_vqgan": "chameleon", "janus_vqgan": "janus"}
FULL_MODEL_TYPES = {"chameleon": "chameleon", "janus": "janus"}
FULL_PREFIX = "model.vqmodel."
PREPROCESSINGS = ("original", "transformers")
LOOKUPS = ("upstream", "transformers")
CHAMELEON_RESCALE = 0.0078  # ChameleonImageProcessor.rescale_factor (mean = std = 1)

# transformers config defaults (ChameleonVQVAEConfig / JanusVQVAEConfig 5.x), for configs that omit a field
_CHAMELEON_DEFAULTS = {"embed_dim": 256, "num_embeddings": 8192, "double_latent": False, "latent_channels": 256,
                       "resolution": 512, "in_channels": 3, "base_channels": 128, "channel_multiplier": [1, 1, 2, 2, 4],
                       "num_res_blocks": 2, "attn_resolutions": None, "attn_type": "vanilla"}
_JANUS_DEFAULTS = {"embed_dim": 8, "num_embeddings": 16384, "double_latent": False, "latent_channels": 256,
                   "in_channels": 3, "base_channels": 128, "channel_multiplier": [1, 1, 2, 2, 4], "num_res_blocks": 2,
                   "num_patches": 32, "out_channels": 3}


# ------------------------------------------------------------------------------------------------ configs

def _vq_fields(config: dict, defaults: dict, origin: str) -> dict:
    fields = {k: config.get(k, v) for k, v in defaults.items()}
    if fields["double_latent"]:
        raise ValueError(f"{origin}: double_latent=True is not supported (quant_conv would not match conv_out)")
    return fields


def chameleon_config(config: dict, origin: str = "config") -> VQGANConfig:
    """VQGANConfig of a `ChameleonVQVAEConfig` dict. Attention sits at the encoder levels whose nominal resolution
    (config `resolution` halved per level) is in `attn_resolutions`, as transformers and taming place it."""
    c = _vq_fields(config, _CHAMELEON_DEFAULTS, origin)
    if c["attn_type"] != "vanilla":
        raise ValueError(f"{origin}: attn_type={c['attn_type']!r} (no attention) is not supported; only 'vanilla'")
    mult = list(c["channel_multiplier"])
    wanted, levels, res = set(c["attn_resolutions"] or []), [], int(c["resolution"])
    for level in range(len(mult)):
        if res in wanted:
            levels.append(level)
        res //= 2
    return VQGANConfig(num_codes=int(c["num_embeddings"]), code_dim=int(c["embed_dim"]),
                       z_channels=int(c["latent_channels"]), ch=int(c["base_channels"]), ch_mult=mult,
                       num_res_blocks=int(c["num_res_blocks"]), attn_levels=levels, in_channels=int(c["in_channels"]),
                       out_channels=3, l2_normalize=False, image_size=int(c["resolution"]), source="chameleon")


def janus_config(config: dict, origin: str = "config") -> VQGANConfig:
    """VQGANConfig of a `JanusVQVAEConfig` dict: attention in the lowest-resolution level (encoder and decoder),
    l2-normalised codebook, default image size num_patches * f."""
    c = _vq_fields(config, _JANUS_DEFAULTS, origin)
    mult = list(c["channel_multiplier"])
    factor = 2 ** (len(mult) - 1)
    return VQGANConfig(num_codes=int(c["num_embeddings"]), code_dim=int(c["embed_dim"]),
                       z_channels=int(c["latent_channels"]), ch=int(c["base_channels"]), ch_mult=mult,
                       num_res_blocks=int(c["num_res_blocks"]), attn_levels=[len(mult) - 1],
                       in_channels=int(c["in_channels"]), out_channels=int(c["out_channels"]), l2_normalize=True,
                       image_size=int(c["num_patches"]) * factor, source="janus")


_CONFIGS = {"chameleon": chameleon_config, "janus": janus_config}


# ------------------------------------------------------------------------------------------- key mapping

def janus_to_ours(state: Mapping[str, torch.Tensor], num_levels: int) -> dict[str, torch.Tensor]:
    """transformers JanusVQVAE keys -> ours: `decoder.up.N` (N-th applied, lowest resolution first) is our
    `decoder.up.{L-1-N}` (indexed by resolution level, as taming); the codebook is `quantize.codebook`."""
    out = {}
    for key, value in state.items():
        m = re.match(r"decoder\.up\.(\d+)\.(.*)$", key)
        if m:
            key = f"decoder.up.{num_levels - 1 - int(m.group(1))}.{m.group(2)}"
        out[checkpoints.CODEBOOK_KEY if key == "quantize.embedding.weight" else key] = value
    return out


def chameleon_to_ours(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers ChameleonVQVAE keys are taming's; only the codebook is renamed."""
    return {checkpoints.CODEBOOK_KEY if k == "quantize.embedding.weight" else k: v for k, v in state.items()}


# -------------------------------------------------------------------------------------------- reading

def _family_and_vq_config(directory: pathlib.Path) -> tuple[str, dict, str | None]:
    """(family, VQ config dict, key prefix or None) of a transformers folder; ValueError naming config.json."""
    path = directory / "config.json"
    config = read_config(path)
    model_type = config.get("model_type")
    if model_type in VQ_MODEL_TYPES:
        return VQ_MODEL_TYPES[model_type], config, None
    if model_type in FULL_MODEL_TYPES:
        vq = config.get("vq_config")
        if not isinstance(vq, dict):
            raise ValueError(f"{path}: a full {model_type!r} config without a 'vq_config' object")
        return FULL_MODEL_TYPES[model_type], vq, FULL_PREFIX
    known = sorted(VQ_MODEL_TYPES) + sorted(FULL_MODEL_TYPES)
    raise ValueError(f"{path}: model_type {model_type!r} is not a transformers VQ model mmtok reads (known: {known})")


def _decoder_state(path, book: torch.Tensor, post_quant: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`decoder.*` of an original Chameleon (taming-layout) VQ-GAN checkpoint; its codebook and post_quant_conv, when
    present, must equal the transformers ones (else the decoder belongs to another model)."""
    origin = os.fspath(path)
    ckpt = checkpoints.read_torch_checkpoint(origin)
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{origin}: not a taming-layout VQ-GAN checkpoint (expected a 'state_dict' of tensors)")
    decoder = {k: v for k, v in sd.items() if k.startswith("decoder.")}
    if not decoder:
        raise ValueError(f"{origin}: no decoder.* weights (the original Chameleon release's vqgan.ckpt has them)")
    theirs = sd.get("quantize.embedding.weight")
    if theirs is not None and (theirs.shape != book.shape or not torch.equal(theirs.float(), book.float())):
        raise ValueError(f"{origin}: its codebook {list(theirs.shape)} differs from the transformers model's "
                         f"{list(book.shape)}: this decoder belongs to another VQ-GAN")
    for key, value in post_quant.items():
        if key in sd and (sd[key].shape != value.shape or not torch.equal(sd[key].float(), value.float())):
            raise ValueError(f"{origin}: {key} differs from the transformers model's: this decoder belongs to another "
                             f"VQ-GAN")
    return decoder


# ------------------------------------------------------------------------------------------- tokenizer

class TransformersVQTokenizer(ImageTokenizer):
    """A transformers Chameleon / Janus VQ tokenizer: `encode(images) -> (B, h, w)`, `decode(codes) -> images`.

    Load with `mmtok.load(folder)` or `TransformersVQTokenizer.from_transformers(folder, ...)`. Everything of
    `ImageTokenizer` applies (bf16 mixed-precision encode with the lookup in fp32, channels-last, `.compile()`).

    Args (beyond ImageTokenizer's):
        family: "chameleon" or "janus".
        preprocessing: how uint8 pixels (uint8 tensors, PIL images, paths) become model input. "original" (default):
            `u8 / 255 * 2 - 1`, the original Chameleon / Janus tokenizers; "transformers" (Chameleon only):
            `u8 * 0.0078 - 1`, what `ChameleonImageProcessor` feeds the model. Float tensors are used as given.
        lookup: "upstream" (default; for Janus: l2-normalised latents and codes, as Janus / LlamaGen) or
            "transformers" (Janus only: transformers' `JanusVQVAE.encode`, plain L2 on the raw vectors).
    """

    def __init__(self, config: VQGANConfig, model: VQAutoencoder | None = None, *, family: str = "chameleon",
                 preprocessing: str = "original", lookup: str = "upstream", dtype=None, device=None,
                 channels_last: bool = True):
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
        if preprocessing not in PREPROCESSINGS:
            raise ValueError(f"preprocessing must be one of {PREPROCESSINGS}, got {preprocessing!r}")
        if preprocessing == "transformers" and family != "chameleon":
            raise ValueError("preprocessing='transformers' (the 0.0078 rescale) exists for Chameleon only")
        if lookup not in LOOKUPS:
            raise ValueError(f"lookup must be one of {LOOKUPS}, got {lookup!r}")
        if lookup == "transformers" and family != "janus":
            raise ValueError("lookup='transformers' (no l2-normalisation) exists for Janus only; Chameleon has one lookup")
        self.family, self.preprocessing, self.lookup = family, preprocessing, lookup
        super().__init__(config, model if model is not None else VQAutoencoder(config), dtype=dtype, device=device,
                         channels_last=channels_last)

    # ------------------------------------------------------------------------------------ protocol
    @property
    def has_decoder(self) -> bool:
        return self.model.decoder is not None

    @property
    def code_spec(self) -> CodeSpec:
        f = self.downsample_factor
        return CodeSpec("image", ("h", "w"), (self.num_codes,), (f, f), image_size=self.image_size)

    @property
    def config(self) -> dict:
        return {"family": self.family, "preprocessing": self.preprocessing, "lookup": self.lookup,
                "decoder": self.has_decoder, "vqgan": self._config.to_dict()}

    def save_pretrained(self, directory) -> pathlib.Path:
        """mmtok's own folder (config.json with format 'mmtok.image.transformers_vq' + model.safetensors)."""
        return save_folder(directory, FORMAT, self.config, self.state_dict(), version=FORMAT_VERSION)

    @classmethod
    def from_pretrained(cls, directory, *, dtype=None, device=None, channels_last: bool = True,
                        preprocessing: str | None = None, lookup: str | None = None) -> "TransformersVQTokenizer":
        """A folder written by `save_pretrained`; `preprocessing` / `lookup` override the saved choices."""
        saved = read_folder(directory, expected_format=FORMAT, max_version=FORMAT_VERSION)
        c = saved.config
        missing = sorted({"family", "preprocessing", "lookup", "decoder", "vqgan"} - set(c))
        if missing:
            raise ValueError(f"{saved.config_path}: missing keys {missing}")
        config = VQGANConfig.from_dict(c["vqgan"], origin=str(saved.config_path))
        model = _checked_model(config, bool(c["decoder"]), saved.tensors, str(saved.weights_path))
        checkpoints.load_weights(model, saved.tensors, str(saved.weights_path))
        return cls(config, model, family=c["family"], preprocessing=preprocessing or c["preprocessing"],
                   lookup=lookup or c["lookup"], dtype=dtype, device=device, channels_last=channels_last)

    @classmethod
    def from_transformers(cls, directory, *, decoder_checkpoint=None, preprocessing: str = "original",
                          lookup: str = "upstream", dtype=None, device=None,
                          channels_last: bool = True) -> "TransformersVQTokenizer":
        """A downloaded transformers folder (`config.json` + model.safetensors / pytorch_model.bin / sharded index).

        decoder_checkpoint: Chameleon only: the original release's taming-layout `vqgan.ckpt`, whose `decoder.*`
            weights make `decode` possible (its codebook, when present, must equal the transformers one).
        """
        directory = pathlib.Path(os.fspath(directory))
        if not directory.is_dir():
            raise FileNotFoundError(f"transformers model folder not found: {directory}")
        family, vq, prefix = _family_and_vq_config(directory)
        config = _CONFIGS[family](vq, origin=str(directory / "config.json"))
        weights = find_weights(directory)
        state = read_prefixed(weights, prefix)
        if family == "janus":
            if decoder_checkpoint is not None:
                raise ValueError("decoder_checkpoint is for Chameleon; a Janus folder holds its own decoder")
            state, with_decoder = janus_to_ours(state, config.num_levels), True
        else:
            state = chameleon_to_ours(state)
            with_decoder = decoder_checkpoint is not None
            if with_decoder:
                book = state.get(checkpoints.CODEBOOK_KEY)
                if book is None:
                    raise ValueError(f"{weights}: no quantize.embedding.weight")
                post = {k: v for k, v in state.items() if k.startswith("post_quant_conv.")}
                state.update(_decoder_state(decoder_checkpoint, book, post))
        origin = str(weights) + (f" + {os.fspath(decoder_checkpoint)}" if decoder_checkpoint is not None else "")
        model = _checked_model(config, with_decoder, state, origin)
        checkpoints.load_weights(model, state, origin)
        return cls(config, model, family=family, preprocessing=preprocessing, lookup=lookup, dtype=dtype,
                   device=device, channels_last=channels_last)

    # --------------------------------------------------------------------------------- preprocessing
    def pixels(self, u8: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> float32 model input with this tokenizer's `preprocessing`."""
        if self.preprocessing == "transformers":
            return u8.float().mul_(CHAMELEON_RESCALE).sub_(1.0)
        return u8.double().div_(255.0).mul_(2.0).sub_(1.0).float()

    def prepare_images(self, images, *, size: int | None = None, mode: str = "center_crop",
                       pad_value: float = -1.0) -> torch.Tensor:
        """Float tensors in [-1, 1] are used as given; uint8 tensors (B, 3, H, W) and PIL images / paths (resized
        by `mode` / `size` as ImageTokenizer does) are converted with `preprocessing`. Upstream Chameleon resizes
        with LANCZOS, mmtok with box halving + bicubic: for identical codes, pass images at the target size."""
        if isinstance(images, torch.Tensor) and images.dtype == torch.uint8:
            x = images.unsqueeze(0) if images.dim() == 3 else images
            if x.dim() != 4 or x.shape[1] != self._config.in_channels:
                raise ValueError(f"uint8 images must be (B, {self._config.in_channels}, H, W), got {tuple(images.shape)}")
            f = self.downsample_factor
            if x.shape[2] % f or x.shape[3] % f:
                raise ValueError(f"images of size {tuple(x.shape[2:])} are not multiples of the downsample factor {f}")
            return self.pixels(x).to(self.device)
        x = super().prepare_images(images, size=size, mode=mode, pad_value=pad_value)
        if isinstance(images, torch.Tensor):
            return x
        u8 = x.add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)  # exact: preprocess made u8 / 127.5 - 1
        return self.pixels(u8)

    # ------------------------------------------------------------------------------------ inference
    @torch.inference_mode()
    def encode(self, images, *, size: int | None = None, mode: str = "center_crop", pad_value: float = -1.0) -> torch.Tensor:
        """images -> codes (B, h, w) int64; see `prepare_images` for the accepted inputs."""
        z = self.encode_latents(images, size=size, mode=mode, pad_value=pad_value)
        if self.lookup == "transformers":  # raw latents vs raw codes, as JanusVQVAE.encode
            rows = z.float().permute(0, 2, 3, 1)
            return nearest_code(rows, self.model.quantize.codebook.float(), metric="l2")[0]
        return self.model.latents_to_indices(z)

    @torch.inference_mode()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        if not self.has_decoder:
            raise ValueError(
                "this Chameleon tokenizer has no decoder: transformers' ChameleonVQVAE ships the encoder and codebook "
                "only. Load it with decoder_checkpoint=<the original Chameleon release's vqgan.ckpt> (taming layout), "
                "e.g. mmtok.load(folder, decoder_checkpoint='tokenizer/vqgan.ckpt'), to decode")
        return super().decode_latents(latents)

    def __repr__(self) -> str:
        c = self._config
        return (f"TransformersVQTokenizer(family={self.family!r}, num_codes={c.num_codes}, code_dim={c.code_dim}, "
                f"f={c.downsample_factor}, image_size={c.image_size}, preprocessing={self.preprocessing!r}, "
                f"lookup={self.lookup!r}, decoder={self.has_decoder}, dtype={self.dtype}, device={self.device})")


# ------------------------------------------------------------------------------------- mmtok.load entry points

def _load_family(family: str, path, *, device=None, dtype=None, **options) -> TransformersVQTokenizer:
    path = pathlib.Path(os.fspath(path))
    found = is_transformers_vq_config(read_config(path / "config.json")) if path.is_dir() else None
    if found != family:
        raise ValueError(f"{path}: not a transformers {family} folder (config.json model_type gives {found!r})")
    return TransformersVQTokenizer.from_transformers(path, device=device, dtype=dtype, **options)


def load_chameleon(path, *, device=None, dtype=None, **options) -> TransformersVQTokenizer:
    """`mmtok.load` loader of the 'chameleon' layout (options as `from_transformers`, e.g. decoder_checkpoint=)."""
    return _load_family("chameleon", path, device=device, dtype=dtype, **options)


def load_janus(path, *, device=None, dtype=None, **options) -> TransformersVQTokenizer:
    """`mmtok.load` loader of the 'janus' layout (options as `from_transformers`, e.g. lookup='transformers')."""
    return _load_family("janus", path, device=device, dtype=dtype, **options)


def is_transformers_vq_config(config: dict | None) -> str | None:
    """The family of a transformers config dict, or None."""
    if not isinstance(config, dict):
        return None
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        return None
    return VQ_MODEL_TYPES.get(model_type) or FULL_MODEL_TYPES.get(model_type)


__all__ = ["TransformersVQTokenizer", "chameleon_config", "janus_config", "janus_to_ours", "chameleon_to_ours",
           "load_chameleon", "load_janus", "FORMAT"]


def _checked_model(config: VQGANConfig, decoder: bool, state, origin: str) -> VQAutoencoder:
    """The autoencoder of `config`, built once its sizes are known to fit the weights (tokenizer.fields)."""
    return build_checked(lambda: VQAutoencoder(config, decoder=decoder), checkpoints.field_checks(config, state),
                         origin)
