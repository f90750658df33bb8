"""What a tokenizer is and does: the one protocol every layer above the tokenizer families relies on.

A tokenizer turns media into an integer tensor of codes and back. Everything a consumer needs to lay those codes
out as ids (how many codebooks, how many codes each, which axes the code tensor has), to preprocess inputs or to
schedule work (downsampling factors, audio rates) is in its `code_spec`; `mmtok.stream`, `mmtok.video`,
`mmtok.data` and the CLI read nothing else (no `hasattr` duck typing, no per-class attribute names).

What a tokenizer IS (`Tokenizer.code_spec`, a `CodeSpec`)
    modality        "image", "video" (spatio-temporal) or "audio"
    axes            the code tensor's axes after the batch axis, one of
                      image  ("h", "w")                 (or ("codebook", "h", "w") for several codebooks)
                             ("token",)                 a flat sequence (multi-scale VAR codes, 1-D tokenizers);
                                                        `extra` says how it maps to positions (e.g. "scales")
                      video  ("t", "h", "w")            (or ("codebook", "t", "h", "w"))
                      audio  ("codebook", "t")          (always with the codebook axis, even for one)
    codebook_sizes  codes per codebook, in codebook order (codes of codebook k lie in 0..codebook_sizes[k]-1)
    downsample      input samples per code along each non-codebook axis: image (f_h, f_w); video (f_t, f_h, f_w)
                    (f_t input frames per latent frame); audio (hop,) samples per code frame; for ("token",)
                    codes the (f_h, f_w) of the finest grid
    sample_rate     audio: the rate (Hz) the tokenizer works at; None otherwise
    frame_rate      audio: code frames per second (sample_rate / hop); None otherwise
    image_size      image / video: the default preprocessing size (short side, square crop); None for audio
    decodable       False for tokenizers whose codes cannot be turned back into media (BEST-RQ)
  and `config`: a JSON-serialisable dict the tokenizer is rebuilt from (part of a dataset run's fingerprint,
  so it must not change for the same tokenizer between mmtok versions).

What a tokenizer DOES (the methods of `Tokenizer`)
    image   encode(images, *, size=None, mode="center_crop") -> int64 (B, h, w); images: a float tensor
            (B, C, H, W) in [-1, 1] (H, W multiples of downsample) or a list of PIL images / paths, preprocessed
            as `mmtok.image.preprocess` does. decode(codes (B, h, w)) -> float (B, 3, h*f_h, w*f_w) in [-1, 1].
    video   (spatio-temporal) encode(video) -> int64 (B, t, h, w); video: a float tensor (B, T, 3, H, W) in
            [-1, 1] with T a multiple of f_t (t = T / f_t; callers pad a short clip by repeating its last frame).
            decode(codes (B, t, h, w)) -> float (B, t*f_t, 3, h*f_h, w*f_w) in [-1, 1]. A video tokenizer whose
            encoder is causal may also offer `encode_stream` (`StreamingVideoEncoder`): chunks of frames in,
            codes of the latent frames they complete out, together equal to one `encode` pass with bounded
            memory; `mmtok.VideoTokenizer` uses it when present and otherwise encodes independent clips.
    audio   encode(waveform, sample_rate) -> int64 (K, T) for ONE clip (no batch axis; the waveform at any rate,
            resampled to `sample_rate`); decode(codes (K, T)) -> float waveform (samples,) when `decodable`.
    all     state_dict() -> {name: tensor}: every tensor that decides the output (what save_pretrained writes
            and what a run's tokenizer hash covers); to(device) -> self; device; save_pretrained(directory);
            the class method from_pretrained(directory, *, device=None, dtype=None, **options).

The saved layout (`mmtok.tokenizer.folder`), the same for every family
    `save_pretrained` writes through `folder.save_folder(directory, FORMAT, config, state_dict)`: `config.json`
    = {"format": "mmtok.<family>", "format_version": N, **config} and `model.safetensors` (tensors on CPU,
    contiguous, written byte-for-byte deterministically: sorted names, sorted metadata). `from_pretrained`
    reads it back with `folder.read_folder(directory, expected_format=FORMAT)` and loads the tensors with
    `weights.load_exactly` (every missing, unexpected or wrongly shaped key is an error listing them). A family
    registers its format in `loaders.FOLDER_CLASSES` so that `mmtok.load` finds it, and published layouts it
    reads in `registry.LAYOUTS`; `mmtok convert SRC OUT` is then `mmtok.load(SRC).save_pretrained(OUT)`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Protocol, runtime_checkable

import torch

MODALITIES = ("image", "video", "audio")
IMAGE_AXES = ("h", "w")
SEQUENCE_AXES = ("token",)
VIDEO_AXES = ("t", "h", "w")
AUDIO_AXES = ("codebook", "t")
CODEBOOK_AXIS = "codebook"
# the long axis names of the first protocol draft, accepted and normalised to the short ones
AXIS_ALIASES = {"height": "h", "width": "w", "time": "t", "frames": "t", "codebooks": CODEBOOK_AXIS}
# the axes each modality's code tensor may have (after the batch axis)
ALLOWED_AXES = {
    "image": (IMAGE_AXES, (CODEBOOK_AXIS, *IMAGE_AXES), SEQUENCE_AXES),
    "video": (VIDEO_AXES, (CODEBOOK_AXIS, *VIDEO_AXES)),
    "audio": (AUDIO_AXES,),
}


@dataclass(frozen=True)
class CodeSpec:
    """The shape, ranges and rates of a tokenizer's codes (see the module docstring for each field)."""

    modality: str
    axes: tuple[str, ...]
    codebook_sizes: tuple[int, ...]
    downsample: tuple[int, ...] = ()
    sample_rate: int | None = None
    frame_rate: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    image_size: int | None = None
    decodable: bool = True

    def __post_init__(self):
        if self.modality not in MODALITIES:
            raise ValueError(f"CodeSpec: modality must be one of {MODALITIES}, got {self.modality!r}")
        object.__setattr__(self, "axes", tuple(AXIS_ALIASES.get(str(a), str(a)) for a in self.axes))
        object.__setattr__(self, "codebook_sizes", tuple(int(k) for k in self.codebook_sizes))
        object.__setattr__(self, "downsample", tuple(int(f) for f in self.downsample))
        if self.axes not in ALLOWED_AXES[self.modality]:
            raise ValueError(f"CodeSpec: {self.modality} codes have axes "
                             f"{' or '.join(map(str, ALLOWED_AXES[self.modality]))}, got {self.axes}")
        if not self.codebook_sizes or any(k < 1 for k in self.codebook_sizes):
            raise ValueError(f"CodeSpec: codebook_sizes must be positive, got {self.codebook_sizes}")
        if self.num_codebooks > 1 and CODEBOOK_AXIS not in self.axes:
            raise ValueError(f"CodeSpec: {self.num_codebooks} codebooks need a 'codebook' axis, axes={self.axes}")
        grid = self._factor_axes
        if self.downsample and (len(self.downsample) != len(grid) or min(self.downsample) < 1):
            raise ValueError(f"CodeSpec: downsample needs one positive factor per axis {grid}, "
                             f"got {self.downsample}")
        if self.sample_rate is not None and not self.sample_rate > 0:
            raise ValueError(f"CodeSpec: sample_rate must be positive, got {self.sample_rate}")
        if self.image_size is not None:
            object.__setattr__(self, "image_size", int(self.image_size))

    @property
    def num_codebooks(self) -> int:
        return len(self.codebook_sizes)

    @property
    def codebook_size(self) -> int:
        """The largest codebook (all of them for the common equal-size case)."""
        return max(self.codebook_sizes)

    @property
    def grid_axes(self) -> tuple[str, ...]:
        """The axes other than the codebook axis (what `downsample` lists factors for)."""
        return tuple(a for a in self.axes if a != CODEBOOK_AXIS)

    @property
    def _factor_axes(self) -> tuple[str, ...]:
        """The axes `downsample` lists factors for: the grid axes, or (h, w) for a flat token sequence."""
        return IMAGE_AXES if self.axes == SEQUENCE_AXES else self.grid_axes

    def factor(self, axis: str) -> int:
        """Input samples per code along `axis` ("t", "h" or "w"); 1 when not given."""
        axes = self._factor_axes
        if axis not in axes:
            raise ValueError(f"CodeSpec: no axis {axis!r} in {self.axes}")
        return self.downsample[axes.index(axis)] if self.downsample else 1

    @property
    def spatial_downsample(self) -> int:
        """Pixels per code along height (image / video); image sizes must be multiples of it."""
        return self.factor("h")

    @property
    def temporal_downsample(self) -> int:
        """Input frames per latent frame (video); 1 for images."""
        return self.factor("t") if "t" in self.grid_axes and self.modality == "video" else 1

    def check_codes(self, codes, name: str = "codes") -> torch.Tensor:
        """`codes` as an int64 tensor with a batch axis and these axes; ValueError naming `name` when the rank,
        the dtype, the number of codebooks or any code's range is wrong."""
        codes = torch.as_tensor(codes)
        if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
            raise ValueError(f"{name}: expected integer codes, got dtype {codes.dtype}")
        if codes.dim() == len(self.axes):
            codes = codes.unsqueeze(0)
        if codes.dim() != len(self.axes) + 1:
            raise ValueError(f"{name}: expected shape (batch, {', '.join(self.axes)}), got {tuple(codes.shape)}")
        codes = codes.to(torch.int64)
        if CODEBOOK_AXIS in self.axes:
            axis = 1 + self.axes.index(CODEBOOK_AXIS)
            if codes.shape[axis] != self.num_codebooks:
                raise ValueError(f"{name}: {codes.shape[axis]} codebooks, this tokenizer has {self.num_codebooks}")
            limits = torch.tensor(self.codebook_sizes, device=codes.device).view(
                [-1 if i == axis else 1 for i in range(codes.dim())])
        else:
            limits = torch.tensor(self.codebook_size, device=codes.device)
        if codes.numel():
            bad = (codes < 0) | (codes >= limits)
            if bool(bad.any()):
                position = tuple(int(i) for i in bad.nonzero()[0])
                limit = int(limits.expand_as(codes)[position])
                raise ValueError(f"{name}: code {int(codes[position])} at {position} is outside 0..{limit - 1}")
        return codes

    def to_dict(self) -> dict:
        return {"modality": self.modality, "axes": list(self.axes), "codebook_sizes": list(self.codebook_sizes),
                "downsample": list(self.downsample), "sample_rate": self.sample_rate,
                "frame_rate": None if self.frame_rate is None or not math.isfinite(self.frame_rate)
                else float(self.frame_rate), "image_size": self.image_size, "decodable": self.decodable}


@runtime_checkable
class Tokenizer(Protocol):
    """Media <-> integer codes; see the module docstring for the per-modality call conventions."""

    @property
    def code_spec(self) -> CodeSpec: ...

    @property
    def config(self) -> dict: ...

    @property
    def device(self) -> torch.device: ...

    def encode(self, inputs, *args, **kwargs) -> torch.Tensor: ...

    def decode(self, codes, *args, **kwargs) -> torch.Tensor: ...

    def state_dict(self) -> dict: ...

    def save_pretrained(self, directory) -> Any: ...

    def to(self, *args, **kwargs) -> Any: ...


@runtime_checkable
class StreamingVideoEncoder(Protocol):
    """A spatio-temporal video tokenizer that encodes a long video chunk by chunk with bounded memory.

    `encode_stream(chunks)`: `chunks` yields float tensors (B, T_i, 3, H, W) in [-1, 1] (any T_i >= 1); yields
    int64 codes (B, t_i, h, w) of the latent frames completed so far; the concatenation over the stream equals
    `encode` of the whole video (whose length must be a multiple of f_t)."""

    def encode_stream(self, chunks: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]: ...


def code_spec_of(tokenizer, name: str = "tokenizer") -> CodeSpec:
    """The `CodeSpec` of a tokenizer; TypeError naming `name` for an object that does not follow the protocol."""
    spec = getattr(tokenizer, "code_spec", None)
    if not isinstance(spec, CodeSpec):
        raise TypeError(f"{name}: {type(tokenizer).__name__} does not follow the mmtok Tokenizer protocol "
                        f"(no code_spec; see mmtok.tokenizer.Tokenizer)")
    return spec


def expect_modality(tokenizer, modality: str, name: str = "tokenizer", *, decodable: bool | None = None) -> CodeSpec:
    """`code_spec_of(tokenizer)` checked to be of `modality` (and decodable when asked); ValueError naming `name`."""
    spec = code_spec_of(tokenizer, name)
    if spec.modality != modality:
        raise ValueError(f"{name}: expected a {modality} tokenizer, got a {spec.modality} one "
                         f"({type(tokenizer).__name__})")
    if decodable is not None and spec.decodable != decodable:
        raise ValueError(f"{name}: expected a tokenizer whose codes {'can' if decodable else 'cannot'} be decoded "
                         f"({type(tokenizer).__name__})")
    return spec
