"""`Emu3Tokenizer`: video (B, T, 3, H, W) <-> codes (B, T/ft, H/f, W/f), and images through the same model.

The Emu3 VQ-VAE (`transformers`' `Emu3VQVAE`) encodes every frame with a 2D encoder, then compresses time ft-fold
(4 in the released model) with causal 3D convolutions at the latent resolution. Everything upstream computes is
reproduced (codes equal, pixels within 1e-4 in fp32), and scheduled differently for speed and memory:

- the 2D encoder and decoder run per frame in batches of `frame_batch` frames, so peak memory does not grow with
  the number of frames (upstream runs every frame of the batch at once);
- an image is, as upstream defines it, the video of ft copies of the frame; the copies are identical, so the 2D
  encoder runs once per image and its latent is repeated, and decoding runs the temporal stack on the one latent
  frame and the 2D decoder only on the first output frame (the one upstream returns), since the stack is causal;
- `encode_stream` / `decode_stream` process a long video chunk by chunk, carrying the causal context of every
  temporal convolution (`TemporalState`): the result equals one pass, memory is one chunk's;
- channels-last activations, fused GroupNorm / SpatialNorm, sub-pixel upsampling, fused attention
  (`mmtok.image.layers`, `.layers`), the nearest-code lookup through `mmtok.nearest_code` in fp32 always;
- bf16 / fp16: the encoder with the mixed-precision policy of `mmtok.image` (wide convs in bf16; trunk, norms,
  the latent tail, the temporal stack and the lookup in fp32), the 2D decoder under autocast.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence

import torch

from ...tokenizer.folder import read_folder, save_folder
from ...tokenizer.protocol import IMAGE_AXES, VIDEO_AXES, CodeSpec
from ...tokenizer.weights import load_exactly
from .config import CONFIG_FORMAT, Emu3Config
from .layers import TemporalState
from .model import Emu3VQVAE

FORMAT_VERSION = 1
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}
# training-only entries of a transformers Emu3VQVAE state dict (BatchNorm step counters): dropped on load
IGNORED_KEYS = ("num_batches_tracked",)


def resolve_dtype(dtype) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)} or a torch dtype, got {dtype!r}")
        return _DTYPES[dtype]
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16, got {dtype}")
    return dtype


def _code_spec(modality: str, axes, sizes, downsample, image_size: int | None) -> CodeSpec:
    return CodeSpec(modality, axes, sizes, downsample, image_size=image_size)


def ignored_keys(state) -> list[str]:
    return [k for k in state if k.rsplit(".", 1)[-1] in IGNORED_KEYS]


class Emu3Tokenizer:
    """The Emu3 VQ-VAE as an mmtok video tokenizer (see the module docstring).

    Args:
        config: the architecture (`Emu3Config`).
        model: an `Emu3VQVAE` holding the weights (randomly initialised when None).
        dtype: compute dtype, float32 (default), bfloat16 or float16.
        device: where to run (default: where `model` is).
        channels_last: channels-last activations in the 2D parts (default; faster on CPU and GPU).
        frame_batch: frames per batch of the 2D encoder / decoder (bounds peak memory; default 4).
    """

    def __init__(self, config: Emu3Config, model: Emu3VQVAE | None = None, *, dtype=None, device=None,
                 channels_last: bool = True, frame_batch: int = 4):
        if not isinstance(frame_batch, int) or isinstance(frame_batch, bool) or frame_batch < 1:
            raise ValueError(f"frame_batch must be a positive int, got {frame_batch!r}")
        self._config = config
        self.model = (model if model is not None else Emu3VQVAE(config)).eval()
        self.model.requires_grad_(False)
        self.dtype = resolve_dtype(dtype)
        self.channels_last = bool(channels_last)
        self.frame_batch = frame_batch
        self._compiled: dict[str, object] = {}
        self.to(device if device is not None else self.device)

    # ------------------------------------------------------------------------------------- protocol
    @property
    def code_spec(self) -> CodeSpec:
        c = self._config
        f = c.spatial_factor
        return _code_spec("video", VIDEO_AXES, (c.codebook_size,), (c.temporal_downsample_factor, f, f), c.image_size)

    @property
    def config(self) -> dict:
        return self._config.to_dict()

    @property
    def emu3_config(self) -> Emu3Config:
        return self._config

    @property
    def device(self) -> torch.device:
        return self.model.quantize.embedding.weight.device

    @property
    def temporal_factor(self) -> int:
        return self._config.temporal_downsample_factor

    @property
    def spatial_factor(self) -> int:
        return self._config.spatial_factor

    @property
    def codebook_size(self) -> int:
        return self._config.codebook_size

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def to(self, device=None, dtype=None) -> "Emu3Tokenizer":
        """Move the weights (kept fp32) to `device`; `dtype` sets the compute dtype."""
        if device is not None:
            self.model.to(device=torch.device(device))
            memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
            for module in self.model.modules():  # the 2D convolutions' weights in the activations' layout
                if isinstance(module, torch.nn.Conv2d):
                    module.weight.data = module.weight.data.contiguous(memory_format=memory_format)
        if dtype is not None:
            self.dtype = resolve_dtype(dtype)
        return self

    def compile(self, **kwargs) -> "Emu3Tokenizer":
        """torch.compile the per-frame encoder and decoder (kwargs go to torch.compile)."""
        self._compiled = {name: torch.compile(getattr(self.model, name), **kwargs)
                          for name in ("encode_frames", "decode_frames")}
        return self

    def as_image_tokenizer(self) -> "Emu3ImageTokenizer":
        """The same model as an image tokenizer (codes (B, h, w)), for consumers that take image tokenizers."""
        return Emu3ImageTokenizer(self)

    # -------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, directory, *, modality: str | None = None, **kwargs):
        """mmtok's own folder (config.json with format "mmtok.video.emu3" + model.safetensors).
        modality="image" returns `as_image_tokenizer()`; kwargs as for the constructor."""
        saved = read_folder(directory, expected_format=CONFIG_FORMAT, max_version=FORMAT_VERSION)
        config = Emu3Config.from_dict(saved.config, origin=str(saved.config_path))
        return cls.with_weights(config, saved.tensors, str(saved.weights_path), modality=modality, **kwargs)

    @classmethod
    def from_transformers(cls, path, **kwargs):
        """A `transformers` Emu3VQVAE folder (config.json model_type "emu3_vqgan" + its weights), or a full
        Emu3 checkpoint folder (model_type "emu3": its vq_config and the `model.vqmodel.` weights)."""
        from .loader import read_transformers

        config, state, origin = read_transformers(path)
        return cls.with_weights(config, state, origin, **kwargs)

    @classmethod
    def with_weights(cls, config: Emu3Config, state, origin: str, *, modality: str | None = None, **kwargs):
        model = Emu3VQVAE(config)
        load_exactly(model, state, origin, ignored=ignored_keys(state),
                     optional=[k for k in model.state_dict() if k.endswith(IGNORED_KEYS)])
        tokenizer = cls(config, model, **kwargs)
        if modality in (None, "video"):
            return tokenizer
        if modality == "image":
            return tokenizer.as_image_tokenizer()
        raise ValueError(f"modality must be None, 'video' or 'image', got {modality!r}")

    def save_pretrained(self, directory):
        """Write config.json + model.safetensors (fp32) through the shared save layer."""
        state = {k: v for k, v in self.state_dict().items() if not k.endswith(IGNORED_KEYS)}
        return save_folder(directory, CONFIG_FORMAT, self.config, state, version=FORMAT_VERSION)

    # ---------------------------------------------------------------------------------- input checks
    def _check_pixels(self, x, name: str, dims: int, layout: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name}: expected a float tensor {layout} in [-1, 1], got {type(x).__name__}")
        if x.dim() != dims or x.shape[-3] != self._config.in_channels:
            raise ValueError(f"{name}: expected shape {layout} with C = {self._config.in_channels}, "
                             f"got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{name}: expected float values in [-1, 1], got {x.dtype} (convert: x / 127.5 - 1)")
        f = self.spatial_factor
        if x.shape[-2] % f or x.shape[-1] % f:
            raise ValueError(f"{name}: size {tuple(x.shape[-2:])} is not a multiple of the spatial factor {f}")
        if x.numel() and (not bool(torch.isfinite(x).all()) or float(x.abs().max()) > 4.0):
            raise ValueError(f"{name}: values must be finite and scaled to [-1, 1] (found values beyond +-4)")
        return x.to(self.device, torch.float32)

    def _check_video(self, video, name: str = "video", whole: bool = True) -> torch.Tensor:
        x = self._check_pixels(video, name, 5, "(B, T, C, H, W)")
        ft = self.temporal_factor
        if whole and (x.shape[1] == 0 or x.shape[1] % ft):
            raise ValueError(f"{name}: {x.shape[1]} frames; a video must have a positive multiple of "
                             f"{ft} frames (pad a short clip by repeating its last frame)")
        return x

    def _check_codes(self, codes, axes, name: str = "codes") -> torch.Tensor:
        spec = _code_spec("video" if len(axes) == 3 else "image", axes, (self.codebook_size,), (), None)
        return spec.check_codes(codes, name).to(self.device)

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

    def _frame_latents(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> per-frame latents (N, latent_channels, h, w) fp32, `frame_batch` frames at a time."""
        encode = self._stage("encode_frames")
        parts = [encode(self._layout(frames[i:i + self.frame_batch]), self._lowp()).float()
                 for i in range(0, frames.shape[0], self.frame_batch)]
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def _video_latents(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) -> (B, latent_channels, T, h, w) fp32."""
        b, t = video.shape[:2]
        z = self._frame_latents(video.reshape(b * t, *video.shape[2:]))
        return z.reshape(b, t, *z.shape[1:]).permute(0, 2, 1, 3, 4).contiguous()

    def _decode_frames(self, hidden: torch.Tensor, quant: torch.Tensor) -> torch.Tensor:
        """(B, C, T, h, w) x 2 -> frames (B, T, out_channels, H, W) fp32, `frame_batch` frames at a time."""
        b, _, t, h, w = hidden.shape
        f = self.spatial_factor
        out = torch.empty(b, t, self._config.out_channels, h * f, w * f, device=hidden.device)
        decode = self._stage("decode_frames")
        hidden, quant = hidden.transpose(1, 2).flatten(0, 1), quant.transpose(1, 2).flatten(0, 1)
        flat = out.view(b * t, *out.shape[2:])
        with self._autocast():
            for i in range(0, b * t, self.frame_batch):
                part = slice(i, i + self.frame_batch)
                flat[part] = decode(self._layout(hidden[part]), self._layout(quant[part])).float()
        return out

    @torch.inference_mode()
    def encode_latents(self, video) -> torch.Tensor:
        """video (B, T, 3, H, W) in [-1, 1] -> pre-quantisation latents (B, embed_dim, T/ft, h, w), fp32."""
        return self.model.encode_temporal(self._video_latents(self._check_video(video)))

    @torch.inference_mode()
    def encode(self, video) -> torch.Tensor:
        """video (B, T, 3, H, W) float in [-1, 1], T a multiple of ft -> int64 codes (B, T/ft, H/f, W/f)."""
        return self.model.latents_to_codes(self.encode_latents(video))

    @torch.inference_mode()
    def encode_stream(self, chunks: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Encode a long video chunk by chunk: `chunks` yields (B, T_i, 3, H, W) (any T_i >= 1); yields the codes
        (B, t_i, h, w) of the latent frames each chunk completes. Together they equal `encode` of the whole
        video; memory is one chunk's. ValueError if the stream ends inside a group of ft frames."""
        state, pending, shape, ft = TemporalState(), None, None, self.temporal_factor
        for index, chunk in enumerate(chunks):
            x = self._check_video(chunk, f"chunk {index}", whole=False)
            if shape is None:
                shape = (x.shape[0], *x.shape[2:])
            elif (x.shape[0], *x.shape[2:]) != shape:
                raise ValueError(f"chunk {index}: shape {tuple(x.shape)} does not continue the stream's "
                                 f"(B, T, C, H, W) = ({shape[0]}, T, {', '.join(map(str, shape[1:]))})")
            z = self._video_latents(x)
            pending = z if pending is None else torch.cat([pending, z], dim=2)
            usable = pending.shape[2] - pending.shape[2] % ft
            if usable:
                latents = self.model.encode_temporal(pending[:, :, :usable], state)
                pending = pending[:, :, usable:].clone()  # the few frames of the next group only
                yield self.model.latents_to_codes(latents)
        if pending is not None and pending.shape[2]:
            raise ValueError(f"encode_stream: the stream ended with {pending.shape[2]} frame(s) after the last full "
                             f"group of {ft}; a video must have a multiple of {ft} frames")

    @torch.inference_mode()
    def decode(self, codes, *, clamp: bool = True) -> torch.Tensor:
        """codes (B, t, h, w) -> frames (B, t*ft, 3, h*f, w*f) fp32, clamped to [-1, 1] unless clamp=False
        (upstream returns the raw decoder output)."""
        hidden, quant = self.model.decode_temporal(self._check_codes(codes, VIDEO_AXES))
        out = self._decode_frames(hidden, quant)
        return out.clamp_(-1.0, 1.0) if clamp else out

    @torch.inference_mode()
    def decode_stream(self, code_chunks: Iterable[torch.Tensor], *, clamp: bool = True) -> Iterator[torch.Tensor]:
        """Decode a long code sequence chunk by chunk: `code_chunks` yields (B, t_i, h, w); yields the frames
        (B, t_i*ft, 3, H, W) of each. Together they equal `decode` of the whole sequence."""
        state = TemporalState()
        for index, codes in enumerate(code_chunks):
            hidden, quant = self.model.decode_temporal(self._check_codes(codes, VIDEO_AXES, f"codes chunk {index}"),
                                                       state)
            out = self._decode_frames(hidden, quant)
            yield out.clamp_(-1.0, 1.0) if clamp else out

    def prepare_images(self, images, *, size: int | None = None, mode: str = "center_crop",
                       pad_value: float = -1.0) -> torch.Tensor:
        """A float tensor (B, 3, H, W) in the model's input space (checked, used as is) or PIL images / paths,
        preprocessed as `mmtok.image.preprocess` does ("center_crop" / "pad" at `size`, default image_size; or
        "native") to [-1, 1], then normalised with the config's image_mean / image_std when set (read from a
        downloaded folder's preprocessor_config.json: transformers' Emu3ImageProcessor defaults to CLIP's)."""
        if isinstance(images, torch.Tensor):
            x = images.unsqueeze(0) if images.dim() == 3 else images
            return self._check_pixels(x, "images", 4, "(B, C, H, W)")
        from ...image.preprocess import preprocess

        if isinstance(images, (str, os.PathLike)) or not isinstance(images, Sequence):
            images = [images]
        if mode != "native" and size is None:
            size = self._config.image_size
        x = preprocess(images, size=size, mode=mode, factor=self.spatial_factor, pad_value=pad_value).to(self.device)
        c = self._config
        if c.image_mean is None:
            return x
        mean = torch.tensor(c.image_mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(c.image_std, device=x.device).view(1, -1, 1, 1)
        return ((x + 1) / 2 - mean) / std  # the checkpoint's processor normalisation of [0, 1] pixels

    @torch.inference_mode()
    def encode_images(self, images, **preprocessing) -> torch.Tensor:
        """images (B, 3, H, W) float in [-1, 1], or PIL images / paths (see `prepare_images`) -> int64 codes
        (B, H/f, W/f): upstream's image encode (the video of ft copies of the image), with the 2D encoder run
        once per image."""
        x = self.prepare_images(images, **preprocessing)
        z = self._frame_latents(x).unsqueeze(2).expand(-1, -1, self.temporal_factor, -1, -1)
        return self.model.latents_to_codes(self.model.encode_temporal(z))[:, 0]

    @torch.inference_mode()
    def decode_images(self, codes, *, clamp: bool = True) -> torch.Tensor:
        """codes (B, h, w) -> images (B, 3, h*f, w*f): upstream's image decode (the first frame of the decoded
        one-latent-frame video), with the 2D decoder run on that frame only (the temporal stack is causal)."""
        hidden, quant = self.model.decode_temporal(self._check_codes(codes, IMAGE_AXES).unsqueeze(1))
        out = self._decode_frames(hidden[:, :, :1], quant[:, :, :1])[:, 0]
        return out.clamp_(-1.0, 1.0) if clamp else out

    def latent_timestamps(self, frame_timestamps) -> torch.Tensor:
        """Input frame times (T,) (seconds) -> the time of each latent frame (T/ft,): the first frame of the ft
        frames it encodes (latent frame j covers frames j*ft .. j*ft+ft-1)."""
        times = torch.as_tensor(frame_timestamps, dtype=torch.float64)
        if times.dim() != 1 or times.numel() % self.temporal_factor:
            raise ValueError(f"frame_timestamps: expected (T,) with T a multiple of {self.temporal_factor}, "
                             f"got shape {tuple(times.shape)}")
        return times[:: self.temporal_factor].clone()

    def __repr__(self) -> str:
        c = self._config
        return (f"Emu3Tokenizer(codebook_size={c.codebook_size}, embed_dim={c.embed_dim}, "
                f"factors=(t {c.temporal_downsample_factor}, h/w {c.spatial_factor}), dtype={self.dtype}, "
                f"device={self.device})")


class Emu3ImageTokenizer:
    """An `Emu3Tokenizer` seen as an image tokenizer: encode(images (B, 3, H, W)) -> (B, h, w), decode back.
    Shares the model (and its device / dtype) with the video tokenizer it wraps; saves as that tokenizer."""

    def __init__(self, video: Emu3Tokenizer):
        self.video = video

    @property
    def code_spec(self) -> CodeSpec:
        c = self.video.emu3_config
        f = c.spatial_factor
        return _code_spec("image", IMAGE_AXES, (c.codebook_size,), (f, f), c.image_size)

    @property
    def config(self) -> dict:
        return self.video.config

    @property
    def device(self) -> torch.device:
        return self.video.device

    @property
    def image_size(self) -> int:
        return self.video.emu3_config.image_size

    @property
    def downsample_factor(self) -> int:
        return self.video.spatial_factor

    @property
    def num_codes(self) -> int:
        return self.video.codebook_size

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.video.state_dict()

    def to(self, device=None, dtype=None) -> "Emu3ImageTokenizer":
        self.video.to(device, dtype)
        return self

    def encode(self, images, **preprocessing) -> torch.Tensor:
        return self.video.encode_images(images, **preprocessing)

    def decode(self, codes, *, clamp: bool = True) -> torch.Tensor:
        return self.video.decode_images(codes, clamp=clamp)

    def save_pretrained(self, directory):
        return self.video.save_pretrained(directory)

    @classmethod
    def from_pretrained(cls, directory, **kwargs) -> "Emu3ImageTokenizer":
        return Emu3Tokenizer.from_pretrained(directory, modality="image", **kwargs)

    def __repr__(self) -> str:
        return f"Emu3ImageTokenizer({self.video!r})"
