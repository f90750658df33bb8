"""`ImageTokenizer`: images in, (B, h, w) VQ-GAN codes out, codes back to pixels.

Loads taming-transformers / Chameleon and LlamaGen checkpoints as they are published, and our own
`config.json` + `model.safetensors`. Inference runs under `torch.inference_mode`, optionally in bf16/fp16: the
encoder with a mixed-precision policy (wide convolutions in bf16, trunk, norms, narrow layers and the layers
feeding the lookup in fp32), the decoder under autocast, the codebook lookup always in fp32; channels-last by
default, and each stage can be `torch.compile`d with `.compile()`.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import torch

from ..tokenizer.fields import build_checked
from ..tokenizer.folder import CONFIG_NAME, WEIGHTS_NAME, read_folder, save_folder
from ..tokenizer.protocol import IMAGE_AXES, CodeSpec
from . import checkpoints
from .autoencoder import VQAutoencoder
from .config import CONFIG_FORMAT, VQGANConfig
from .preprocess import preprocess, to_pil

# package data: config.json + model.safetensors of the default tokenizer
DEFAULT_MODEL_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets",
                                 "default_image_tokenizer")

FORMAT_VERSION = 1  # of the saved folder (mmtok.tokenizer.folder); folders without one are version 1
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def _resolve_dtype(dtype) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)} or a torch dtype, got {dtype!r}")
        return _DTYPES[dtype]
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16, got {dtype}")
    return dtype


class ImageTokenizer:
    """A VQ-GAN image tokenizer: `encode(images) -> LongTensor (B, h, w)`, `decode(codes) -> (B, 3, H, W)`.

    Args:
        config: the architecture (`VQGANConfig`).
        model: a `VQAutoencoder` holding the weights (randomly initialised when None).
        dtype: compute dtype: float32 (default), bfloat16 or float16. bf16/fp16 encode with the mixed-precision
            policy of `Encoder` (codes agree with fp32 except at near-ties) and decode under autocast.
        device: where to run (default: where `model` is, CPU for a new model).
        channels_last: keep activations channels-last (default; faster convolutions on CPU and GPU). On CPU
            GroupNorm then runs mmtok's own channels-last kernel (PyTorch's is inaccurate); False keeps NCHW.
    """

    def __init__(self, config: VQGANConfig, model: VQAutoencoder | None = None, *, dtype=None, device=None,
                 channels_last: bool = True):
        self._config = config
        self.model = (model if model is not None else VQAutoencoder(config)).eval()
        self.model.requires_grad_(False)
        self.dtype = _resolve_dtype(dtype)
        self._channels_last_option = bool(channels_last)
        self._compiled: dict[str, object] = {}
        self.to(device if device is not None else self.model.quant_conv.weight.device)

    # ------------------------------------------------------------------------------------ properties
    @property
    def code_spec(self) -> CodeSpec:
        """The Tokenizer protocol's description: (B, h, w) codes of one codebook, f x f pixels per code."""
        f = self._config.downsample_factor
        return CodeSpec("image", IMAGE_AXES, (self._config.num_codes,), (f, f), image_size=self._config.image_size)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The weights (what save_pretrained writes and a run's tokenizer hash covers)."""
        return self.model.state_dict()

    @property
    def num_codes(self) -> int:
        return self._config.num_codes

    @property
    def downsample_factor(self) -> int:
        return self._config.downsample_factor

    @property
    def image_size(self) -> int:
        return self._config.image_size

    @property
    def config(self) -> dict:
        """JSON-serialisable architecture + preprocessing (image_size) settings."""
        return self._config.to_dict()

    @property
    def device(self) -> torch.device:
        return self.model.quant_conv.weight.device

    @property
    def channels_last(self) -> bool:
        return self._channels_last_option

    def to(self, device=None, dtype=None) -> "ImageTokenizer":
        """Move the weights (always kept fp32) to `device`; `dtype` sets the compute dtype."""
        if device is not None:
            self.model.to(device=torch.device(device))
            memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
            self.model.to(memory_format=memory_format)
        if dtype is not None:
            self.dtype = _resolve_dtype(dtype)
        return self

    def compile(self, **kwargs) -> "ImageTokenizer":
        """torch.compile the encoder and decoder stages (kwargs go to torch.compile, e.g. mode=, backend=)."""
        self._compiled = {name: torch.compile(getattr(self.model, name), **kwargs)
                          for name in ("encode_latents", "decode_latents")}
        return self

    # -------------------------------------------------------------------------------------- loading
    @classmethod
    def from_taming(cls, ckpt_path, config_path, **kwargs) -> "ImageTokenizer":
        """A taming-transformers VQModel (also Chameleon's VQ-GAN): Lightning checkpoint + its yaml config."""
        config = checkpoints.taming_config(config_path)
        state = checkpoints.taming_state_dict(ckpt_path)
        return cls._with_weights(config, state, os.fspath(ckpt_path), **kwargs)

    @classmethod
    def from_llamagen(cls, ckpt_path, *, config_path=None, weights: str = "auto", dtype=None, device=None,
                      channels_last: bool = True, **model_args) -> "ImageTokenizer":
        """A LlamaGen VQModel checkpoint ({'model': ...} or {'ema': ...}).

        Sizes are read from the tensor shapes; `model_args` (LlamaGen's ModelArgs names, e.g.
        codebook_l2_norm=True, image_size=256) or a JSON `config_path` holding them fill in the rest.
        """
        args = checkpoints.llamagen_model_args(config_path) if config_path is not None else {}
        args.update(model_args)
        raw, _ = checkpoints.llamagen_state_dict(ckpt_path, weights)
        path = os.fspath(ckpt_path)
        config = checkpoints.llamagen_config(raw, path, args)
        state = checkpoints.llamagen_to_ours(raw, config.num_levels)
        return cls._with_weights(config, state, path, dtype=dtype, device=device, channels_last=channels_last)

    @classmethod
    def from_pretrained(cls, directory, **kwargs) -> "ImageTokenizer":
        """Our own folder (`config.json` + `model.safetensors`, see mmtok.tokenizer.folder), local only;
        kwargs (dtype, device, channels_last) as for the constructor."""
        directory = os.fspath(directory)
        if "://" in directory:
            raise ValueError(f"from_pretrained takes a local directory, got {directory!r} (nothing is downloaded)")
        saved = read_folder(directory, expected_format=CONFIG_FORMAT, max_version=FORMAT_VERSION)
        config = VQGANConfig.from_dict(saved.config, origin=str(saved.config_path))
        return cls._with_weights(config, saved.tensors, str(saved.weights_path), **kwargs)

    @classmethod
    def default(cls, **kwargs) -> "ImageTokenizer":
        """The small VQ-GAN shipped inside the package (trained by `mmtok train-vqgan` on photographs, see
        docs/training.md): works offline on a fresh install. kwargs as for from_pretrained."""
        if not os.path.isfile(os.path.join(DEFAULT_MODEL_DIR, WEIGHTS_NAME)):
            raise FileNotFoundError(f"the default image tokenizer is missing from this install ({DEFAULT_MODEL_DIR}); "
                                    "reinstall mmtok, or train one with `mmtok train-vqgan`")
        return cls.from_pretrained(DEFAULT_MODEL_DIR, **kwargs)

    @classmethod
    def _with_weights(cls, config: VQGANConfig, state, origin: str, **kwargs) -> "ImageTokenizer":
        model = build_checked(lambda: VQAutoencoder(config), checkpoints.field_checks(config, state), origin)
        checkpoints.load_weights(model, state, origin)
        return cls(config, model, **kwargs)

    def save_pretrained(self, directory):
        """Write `config.json` and `model.safetensors` (fp32) into `directory` through the shared save layer."""
        return save_folder(directory, CONFIG_FORMAT, self.config, self.state_dict(), version=FORMAT_VERSION)

    # ------------------------------------------------------------------------------------ inference
    def _lowp(self) -> torch.dtype | None:
        return None if self.dtype == torch.float32 else self.dtype

    def _autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _stage(self, name: str):
        return self._compiled.get(name) or getattr(self.model, name)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x.contiguous()

    def prepare_images(self, images, *, size: int | None = None, mode: str = "center_crop",
                       pad_value: float = -1.0) -> torch.Tensor:
        """images (tensor in [-1, 1], PIL images or paths) -> (B, 3, H, W) float32 on the tokenizer's device."""
        f = self.downsample_factor
        if isinstance(images, torch.Tensor):
            x = images.unsqueeze(0) if images.dim() == 3 else images
            if x.dim() != 4 or x.shape[1] != self._config.in_channels:
                raise ValueError(f"images tensor must be (B, {self._config.in_channels}, H, W), got {tuple(images.shape)}")
            if not x.is_floating_point():
                raise ValueError(f"images tensor must be float in [-1, 1], got {x.dtype} (convert: x / 127.5 - 1)")
            if x.shape[2] % f or x.shape[3] % f:
                raise ValueError(f"images of size {tuple(x.shape[2:])} are not multiples of the downsample factor {f}")
            if x.numel() and (not bool(torch.isfinite(x).all()) or float(x.abs().max()) > 4.0):
                raise ValueError("images tensor must be finite and scaled to [-1, 1] (found values beyond +-4)")
            return x.to(self.device, torch.float32)
        if isinstance(images, (str, os.PathLike)) or not isinstance(images, Sequence):
            images = [images]
        if mode != "native" and size is None:
            size = self.image_size
        return preprocess(images, size=size, mode=mode, factor=f, pad_value=pad_value).to(self.device)

    @torch.inference_mode()
    def encode_latents(self, images, **kwargs) -> torch.Tensor:
        """Pre-quantisation latents z_e (B, code_dim, h, w), fp32 (before any l2 normalisation)."""
        x = self._layout(self.prepare_images(images, **kwargs))
        return self._stage("encode_latents")(x, self._lowp()).float()  # mixed precision: no autocast here

    @torch.inference_mode()
    def encode(self, images, *, size: int | None = None, mode: str = "center_crop", pad_value: float = -1.0) -> torch.Tensor:
        """images -> codes, LongTensor (B, h, w).

        images: a float tensor (B, 3, H, W) in [-1, 1] (used as is; H, W multiples of downsample_factor),
        or a list of PIL images / paths, preprocessed by `mode` ("center_crop", "pad" or "native") at
        `size` (default: the model's image_size; for "native", the image's own size).
        """
        z = self.encode_latents(images, size=size, mode=mode, pad_value=pad_value)
        return self.model.latents_to_indices(z)  # fp32 lookup, outside autocast

    def check_codes(self, codes) -> torch.Tensor:
        """codes as an int64 (B, h, w) tensor on the device; ValueError naming the first bad value and position."""
        if not isinstance(codes, torch.Tensor):
            codes = torch.as_tensor(codes)
        if codes.dim() == 2:
            codes = codes.unsqueeze(0)
        if codes.dim() != 3:
            raise ValueError(f"codes must be a (B, h, w) integer tensor, got shape {tuple(codes.shape)}")
        if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
            raise ValueError(f"codes must be an integer tensor, got {codes.dtype}")
        bad = (codes < 0) | (codes >= self.num_codes)
        if bool(bad.any()):
            where = bad.nonzero()
            pos = tuple(int(i) for i in where[0])
            raise ValueError(
                f"code {int(codes[pos])} at position (b, i, j) = {pos} is out of range [0, {self.num_codes}) "
                f"({len(where)} bad code(s) in total)"
            )
        return codes.to(self.device, torch.int64)

    @torch.inference_mode()
    def lookup_latents(self, codes) -> torch.Tensor:
        """codes (B, h, w) -> codebook rows z_q (B, code_dim, h, w), fp32 (l2-normalised rows for LlamaGen)."""
        return self._layout(self.model.indices_to_latents(self.check_codes(codes)))

    @torch.inference_mode()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Quantised latents (B, code_dim, h, w) -> images (B, 3, h*f, w*f), fp32, not clamped."""
        with self._autocast():
            out = self._stage("decode_latents")(self._layout(latents.to(self.device, torch.float32)))
        return out.float()

    @torch.inference_mode()
    def decode(self, codes, *, clamp: bool = True) -> torch.Tensor:
        """codes LongTensor (B, h, w) -> images float32 (B, 3, h*f, w*f) in [-1, 1].

        clamp=False returns the decoder's raw output (upstream does not clamp; values may leave [-1, 1]).
        """
        out = self.decode_latents(self.lookup_latents(codes))
        return out.clamp_(-1.0, 1.0) if clamp else out

    @torch.inference_mode()
    def reconstruct(self, images, **kwargs) -> torch.Tensor:
        """encode then decode without clamping (upstream's model(x)[0]); images as for `encode`."""
        return self.decode_latents(self.lookup_latents(self.encode(images, **kwargs)))

    def decode_to_pil(self, codes) -> list:
        """codes (B, h, w) -> list of RGB PIL images."""
        return to_pil(self.decode(codes))

    def __repr__(self) -> str:
        c = self._config
        return (f"ImageTokenizer(source={c.source!r}, num_codes={c.num_codes}, code_dim={c.code_dim}, "
                f"f={c.downsample_factor}, image_size={c.image_size}, dtype={self.dtype}, device={self.device})")
