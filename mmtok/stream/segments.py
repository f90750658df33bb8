"""The pieces of an interleaved sequence: text, images, audio (BEST-RQ or codec) and video.

A segment holds codes (what the token stream carries) and, optionally, a source to tokenize when the
codes are not known yet (an image path / PIL image / tensor, a waveform) or the decoded result (pixels,
a waveform). Equality compares only what the ids carry: kind, codes, text and timestamps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

TIMESTAMP_DECIMALS = 3  # frame timestamps travel as text with millisecond precision


def _as_codes(codes: Any, ndim: int | tuple[int, ...], name: str) -> torch.Tensor | None:
    if codes is None:
        return None
    codes = torch.as_tensor(codes)
    if codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise ValueError(f"{name} codes must be integers, got {codes.dtype}")
    codes = codes.to(torch.int64)
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if codes.ndim not in allowed:
        want = " or ".join(map(str, allowed))
        raise ValueError(f"{name} codes must have {want} dims, got shape {tuple(codes.shape)}")
    return codes


def _same_codes(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(torch.equal(a.cpu(), b.cpu()))


@dataclass(eq=False)
class Text:
    text: str

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Text) and other.text == self.text


@dataclass(eq=False)
class Image:
    """An image as a (h, w) code grid, a (codebooks, h, w) grid of factorised sub-tokens, or a flat (L,)
    multi-scale token sequence (VAR, coarse to fine), as the vocabulary's image layout says. Give `source` (path, PIL image or (3,H,W) tensor in [-1,1])
    instead of codes to have TokenStream tokenize it; `size`/`mode` go to ImageTokenizer.encode."""

    codes: Any = None
    source: Any = None
    size: int | None = None
    mode: str = "center_crop"
    pixels: torch.Tensor | None = None  # filled by decode(decode_images=True): (3, H, W) in [-1, 1]

    def __post_init__(self):
        self.codes = _as_codes(self.codes, (2, 3, 1), "Image")
        if self.codes is None and self.source is None:
            raise ValueError("Image needs codes or a source to tokenize")

    @property
    def grid(self) -> tuple[int, ...]:
        """The code tensor's shape: (h, w), (codebooks, h, w) or (L,)."""
        return tuple(self.codes.shape)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and _same_codes(self.codes, other.codes)


@dataclass(eq=False)
class Frame(Image):
    """One sampled video frame: an image grid with its presentation time in seconds."""

    timestamp: float | None = None

    def __eq__(self, other: object) -> bool:
        if not (isinstance(other, Frame) and _same_codes(self.codes, other.codes)):
            return False
        if self.timestamp is None or other.timestamp is None:
            return self.timestamp is None and other.timestamp is None
        return math.isclose(self.timestamp, other.timestamp, abs_tol=0.5 * 10 ** -TIMESTAMP_DECIMALS + 1e-9)


@dataclass(eq=False)
class _AudioBase:
    codes: Any = None                    # (num_codebooks, T)
    waveform: torch.Tensor | None = None  # a source to tokenize, or the decoded waveform
    sample_rate: int | None = None

    def __post_init__(self):
        self.codes = _as_codes(self.codes, 2, type(self).__name__)
        if self.codes is None and self.waveform is None:
            raise ValueError(f"{type(self).__name__} needs codes or a waveform (with sample_rate) to tokenize")
        if self.codes is not None and (self.codes < 0).any():
            raise ValueError(f"{type(self).__name__} codes contain negative (padding) values; trim them first")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and _same_codes(self.codes, other.codes)


@dataclass(eq=False)
class Audio(_AudioBase):
    """BEST-RQ audio tokens (AudioTokenizer): codes (num_codebooks, T) at 25 tokens/s."""


@dataclass(eq=False)
class AudioCodec(_AudioBase):
    """Neural-codec audio tokens (mmtok.audio.codec.AudioCodec): codes (n_codebooks, F) at 50 frames/s;
    decode(decode_audio=True) fills `waveform` through the codec."""


@dataclass(eq=False)
class Video:
    """Sampled frames (each with its timestamp) and the optional audio track. With a spatio-temporal video
    tokenizer the frames are its latent frames (timestamp: the first input frame each covers), and decoding
    fills `pixels` (T, 3, H, W) for the whole clip instead of each frame's."""

    frames: list = field(default_factory=list)
    audio: Audio | AudioCodec | None = None
    pixels: torch.Tensor | None = None

    @classmethod
    def from_tokens(cls, tokens) -> "Video":
        """From mmtok.video's VideoTokens: frame codes (N, h, w), timestamps (N,), audio codes."""
        frames = [Frame(codes=c, timestamp=float(t)) for c, t in zip(tokens.frame_codes, tokens.timestamps)]
        audio = None
        if tokens.audio_codes is not None:
            kind = AudioCodec if tokens.audio_kind == "audio_codec" else Audio
            audio = kind(codes=tokens.audio_codes)
        return cls(frames=frames, audio=audio)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Video) and len(self.frames) == len(other.frames)
                and all(a == b for a, b in zip(self.frames, other.frames)) and self.audio == other.audio)


Segment = Text | Image | Audio | AudioCodec | Video
