"""`DiffusersVQTokenizer`: a diffusers `VQModel` folder (aMUSEd, VQ-Diffusion, Kandinsky MoVQ) as an mmtok
image tokenizer with exactly the upstream codes and pixels.

It is an `mmtok.image.ImageTokenizer` (same preprocessing, encode / decode / reconstruct, bf16 encoder policy,
fp32 lookup, channels-last, `.compile()`) over the diffusers network. Upstream's options carry over:

- `lookup_from_codebook` only changes what diffusers' `decode(h, force_not_quantize=True)` expects (codes, as
  aMUSEd uses it, instead of continuous latents); here `decode(codes)` always takes codes and
  `decode_latents(latents)` always takes continuous codebook-space latents (Kandinsky's `movq.decode`).
- `force_upcast`: with dtype=float16 the model computes in float32 (what diffusers pipelines do for such a
  VAE: fp16 overflows); bfloat16 is unaffected.
- `scaling_factor`: `encode_latents(..., scaled=True)` returns latents * scaling_factor and
  `decode_latents(latents, scaled=True)` divides first (the diffusion-model latent scale).
"""
from __future__ import annotations

import contextlib
import os
import pathlib

import torch

from ...tokenizer.fields import build_checked, count, count_check, dim_check
from ...tokenizer.folder import CONFIG_NAME, read_config, read_folder, save_folder
from ...tokenizer.weights import find_weights, load_exactly, read_state_dict
from ..tokenizer import ImageTokenizer
from .config import CLASS_NAME, CONFIG_FORMAT, DiffusersVQConfig
from .model import DiffusersVQModel

FORMAT_VERSION = 1
# diffusers' weight file names, preferred first (find_weights also takes their sharded *.index.json)
DIFFUSERS_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


class DiffusersVQTokenizer(ImageTokenizer):
    """A diffusers VQModel: `encode(images) -> LongTensor (B, h, w)`, `decode(codes) -> (B, C, H, W)`.

    Build one with `from_diffusers(folder)` (the downloaded model folder, or its `vqvae` / `movq` subfolder),
    `from_pretrained(folder)` (mmtok's own saved folder) or `mmtok.load(folder)`. Args as `ImageTokenizer`.
    """

    def __init__(self, config: DiffusersVQConfig, model: DiffusersVQModel | None = None, *, dtype=None,
                 device=None, channels_last: bool = True):
        super().__init__(config, model if model is not None else DiffusersVQModel(config), dtype=dtype,
                         device=device, channels_last=channels_last)

    # ------------------------------------------------------------------------------------ properties
    @property
    def scaling_factor(self) -> float:
        return self._config.scaling_factor

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the network runs in: `dtype`, except float32 for float16 when the config forces upcasting."""
        if self.dtype == torch.float16 and self._config.force_upcast:
            return torch.float32
        return self.dtype

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under diffusers' key names (what save_pretrained writes)."""
        return self.model.state_dict()

    # -------------------------------------------------------------------------------------- loading
    @classmethod
    def from_diffusers(cls, path, *, image_size: int | None = None, **kwargs) -> "DiffusersVQTokenizer":
        """A diffusers VQModel folder: config.json with `_class_name` "VQModel" and
        diffusion_pytorch_model.safetensors or .bin (read weights-only), or a sharded index of either.
        A pipeline folder holding the model in a `vqvae` or `movq` subfolder is accepted too."""
        folder = diffusers_folder(path)
        config_path = folder / CONFIG_NAME
        data = read_config(config_path)
        if data.get("_class_name") != CLASS_NAME:
            raise ValueError(f"{config_path}: _class_name is {data.get('_class_name')!r}, expected {CLASS_NAME!r}")
        config = DiffusersVQConfig.from_dict(data, origin=str(config_path), image_size=image_size)
        weights = find_weights(folder, DIFFUSERS_WEIGHT_NAMES)
        return cls._loaded(config, read_state_dict(weights), str(weights), **kwargs)

    @classmethod
    def from_pretrained(cls, directory, **kwargs) -> "DiffusersVQTokenizer":
        """mmtok's own folder written by `save_pretrained` (format mmtok.image.diffusers_vq)."""
        saved = read_folder(directory, expected_format=CONFIG_FORMAT, max_version=FORMAT_VERSION)
        config = DiffusersVQConfig.from_dict(saved.config, origin=str(saved.config_path))
        return cls._loaded(config, saved.tensors, str(saved.weights_path), **kwargs)

    @classmethod
    def _loaded(cls, config: DiffusersVQConfig, state, origin: str, **kwargs) -> "DiffusersVQTokenizer":
        levels = len(config.block_out_channels)
        checks = [count_check("len(block_out_channels)", levels, state, "encoder.down_blocks"),
                  count_check("layers_per_block", config.layers_per_block, state, "encoder.down_blocks.0.resnets"),
                  dim_check("num_vq_embeddings", config.num_vq_embeddings, state, "quantize.embedding.weight", 0),
                  dim_check("vq_embed_dim", config.vq_embed_dim or config.latent_channels, state,
                            "quantize.embedding.weight", 1),
                  dim_check("in_channels", config.in_channels, state, "encoder.conv_in.weight", 1),
                  dim_check("latent_channels", config.latent_channels, state, "encoder.conv_out.weight", 0),
                  dim_check("out_channels", config.out_channels, state, "decoder.conv_out.weight", 0)]
        checks += [dim_check(f"block_out_channels[{i}]", width, state, f"encoder.down_blocks.{i}.resnets.0.conv1.weight",
                             0) for i, width in enumerate(config.block_out_channels[: count(state, "encoder.down_blocks")])]
        model = build_checked(lambda: DiffusersVQModel(config), checks, origin)  # sizes against the weights first
        load_exactly(model, state, origin)
        return cls(config, model, **kwargs)

    def save_pretrained(self, directory):
        """mmtok's folder: config.json (format marker + the diffusers config + image_size) and
        model.safetensors (fp32, diffusers key names), through the shared save layer."""
        return save_folder(directory, CONFIG_FORMAT, self.config, self.state_dict(), version=FORMAT_VERSION)

    def save_diffusers(self, directory) -> pathlib.Path:
        """The diffusers layout back (config.json + diffusion_pytorch_model.safetensors), loadable by
        `VQModel.from_pretrained`."""
        import json

        from safetensors.torch import save_file

        directory = pathlib.Path(os.fspath(directory))
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / DIFFUSERS_WEIGHT_NAMES[0]), metadata={"format": "pt"})
        (directory / CONFIG_NAME).write_text(json.dumps(self._config.diffusers_dict(), indent=2) + "\n",
                                             encoding="utf-8")
        return directory

    # ------------------------------------------------------------------------------------ inference
    def _lowp(self) -> torch.dtype | None:
        return None if self.compute_dtype == torch.float32 else self.compute_dtype

    def _autocast(self):
        if self.compute_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.compute_dtype)

    @torch.inference_mode()
    def encode_latents(self, images, *, scaled: bool = False, **kwargs) -> torch.Tensor:
        """Pre-quantisation latents (B, code_dim, h, w), fp32: diffusers' `encode(x).latents`
        (times scaling_factor when `scaled`)."""
        z = super().encode_latents(images, **kwargs)
        return z * self.scaling_factor if scaled else z

    @torch.inference_mode()
    def decode_latents(self, latents: torch.Tensor, *, scaled: bool = False) -> torch.Tensor:
        """Continuous codebook-space latents (B, code_dim, h, w) -> images, not quantized: diffusers'
        `decode(latents, force_not_quantize=True)` of a lookup_from_codebook=False model (Kandinsky's MoVQ
        decode); `scaled` latents are divided by scaling_factor first."""
        if not isinstance(latents, torch.Tensor) or latents.dim() != 4 or latents.shape[1] != self._config.code_dim:
            shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"latents must be a (B, {self._config.code_dim}, h, w) tensor, got {shape}")
        if scaled:
            latents = latents / self.scaling_factor
        return super().decode_latents(latents)

    def __repr__(self) -> str:
        c = self._config
        return (f"DiffusersVQTokenizer(norm_type={c.norm_type!r}, num_codes={c.num_codes}, code_dim={c.code_dim}, "
                f"f={c.downsample_factor}, dtype={self.dtype}, device={self.device})")


def diffusers_folder(path) -> pathlib.Path:
    """The folder holding the VQModel config: `path` itself, or its `vqvae` / `movq` subfolder (a pipeline)."""
    path = pathlib.Path(os.fspath(path))
    if not path.is_dir():
        raise FileNotFoundError(f"diffusers model folder not found: {path}")
    if (path / CONFIG_NAME).is_file():
        return path
    for sub in ("vqvae", "movq"):
        if (path / sub / CONFIG_NAME).is_file():
            return path / sub
    raise FileNotFoundError(f"{path}: no {CONFIG_NAME} (nor a vqvae/ or movq/ subfolder holding one)")


def is_diffusers_vq_folder(path) -> bool:
    """Whether `path` is a folder whose config (or vqvae/movq subfolder's) names diffusers' VQModel."""
    try:
        return read_config(diffusers_folder(path) / CONFIG_NAME).get("_class_name") == CLASS_NAME
    except (OSError, ValueError):
        return False


def load_diffusers_vq(path, *, device=None, dtype=None, **options) -> DiffusersVQTokenizer:
    """`mmtok.load`'s loader for the diffusers VQModel layout."""
    return DiffusersVQTokenizer.from_diffusers(path, device=device, dtype=dtype, **options)
