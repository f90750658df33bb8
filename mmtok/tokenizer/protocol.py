"""What a tokenizer is and does, in one protocol every layer above the tokenizer families relies on.

A tokenizer turns media into an integer tensor of codes and back. Everything a consumer needs to lay those codes
out as ids (how many codebooks, how many codes each, which axes the code tensor has) or to schedule work (the
downsampling factors or the audio rates) is in its `code_spec`; nothing is read by duck typing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

MODALITIES = ("image", "video", "audio")


@dataclass(frozen=True)
class CodeSpec:
    """The shape and ranges of a tokenizer's codes.

    Args:
        modality: "image", "video" or "audio".
        axes: the code tensor's axes after the batch axis, e.g. ("height", "width") for an image tokenizer,
            ("time", "height", "width") for a spatio-temporal video tokenizer, ("codebook", "time") for audio.
        codebook_sizes: the number of codes of each codebook, in codebook order (one entry for one codebook).
        downsample: input samples per code along the spatial / temporal axes: (f, f) for images, (ft, f, f)
            for video, (hop,) for audio; empty when it does not apply.
        sample_rate: the audio sample rate the tokenizer works at (Hz), None otherwise.
        frame_rate: code frames per second for audio (and latent frames per second where fixed), else None.
    """

    modality: str
    axes: tuple[str, ...]
    codebook_sizes: tuple[int, ...]
    downsample: tuple[int, ...] = ()
    sample_rate: int | None = None
    frame_rate: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if self.modality not in MODALITIES:
            raise ValueError(f"CodeSpec: modality must be one of {MODALITIES}, got {self.modality!r}")
        object.__setattr__(self, "axes", tuple(str(a) for a in self.axes))
        object.__setattr__(self, "codebook_sizes", tuple(int(k) for k in self.codebook_sizes))
        object.__setattr__(self, "downsample", tuple(int(f) for f in self.downsample))
        if not self.codebook_sizes or any(k < 1 for k in self.codebook_sizes):
            raise ValueError(f"CodeSpec: codebook_sizes must be positive, got {self.codebook_sizes}")
        if self.num_codebooks > 1 and "codebook" not in self.axes:
            raise ValueError(f"CodeSpec: {self.num_codebooks} codebooks need a 'codebook' axis, axes={self.axes}")
        if self.sample_rate is not None and not self.sample_rate > 0:
            raise ValueError(f"CodeSpec: sample_rate must be positive, got {self.sample_rate}")

    @property
    def num_codebooks(self) -> int:
        return len(self.codebook_sizes)

    @property
    def codebook_size(self) -> int:
        """The largest codebook (all of them for the common equal-size case)."""
        return max(self.codebook_sizes)

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
        if "codebook" in self.axes:
            axis = 1 + self.axes.index("codebook")
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
                else float(self.frame_rate)}


@runtime_checkable
class Tokenizer(Protocol):
    """Media <-> integer codes. Every family (image VQ-GANs, video tokenizers, BEST-RQ, audio codecs) has:

    - `code_spec`: a `CodeSpec`;
    - `config`: a JSON-serialisable dict it is rebuilt from (part of the fingerprint of a dataset run);
    - `encode(inputs, ...)`: media -> int64 codes of shape (batch, *code_spec.axes);
    - `decode(codes, ...)`: codes -> float media (images / frames in [-1, 1], audio waveforms);
    - `save_pretrained(directory)` and the class method `from_pretrained(directory, **options)`: mmtok's own
      folder (see `mmtok.tokenizer.folder`).
    """

    @property
    def code_spec(self) -> CodeSpec: ...

    @property
    def config(self) -> dict: ...

    def encode(self, inputs, *args, **kwargs) -> torch.Tensor: ...

    def decode(self, codes, *args, **kwargs) -> torch.Tensor: ...

    def save_pretrained(self, directory) -> Any: ...


def code_spec_of(tokenizer, name: str = "tokenizer") -> CodeSpec:
    """The `CodeSpec` of a tokenizer; TypeError naming `name` for an object that does not follow the protocol."""
    spec = getattr(tokenizer, "code_spec", None)
    if not isinstance(spec, CodeSpec):
        raise TypeError(f"{name}: {type(tokenizer).__name__} does not follow the mmtok Tokenizer protocol "
                        f"(no code_spec; see mmtok.tokenizer.Tokenizer)")
    return spec
