"""A video's audio track as 16 kHz mono chunks (PyAV decode + resample), tokenized chunk by chunk.

Chunks keep memory bounded for long videos; their length is a whole number of token hops, and both
tokenizers get exactly the tokens a one-shot pass over the whole track would give.
"""
from __future__ import annotations

import math
from typing import Iterator

import av
import numpy as np
import torch

from .reader import _open


def iter_audio_chunks(path, *, sample_rate: int = 16000, chunk_seconds: float = 30.0, multiple: int = 640
                      ) -> Iterator[torch.Tensor]:
    """Yield float32 mono chunks of about chunk_seconds (a multiple of `multiple` samples) at sample_rate; the
    last one holds the rest (up to one second longer, never a sliver)."""
    if not chunk_seconds > 0:
        raise ValueError(f"chunk_seconds must be positive, got {chunk_seconds}")
    chunk = multiple * max(1, round(chunk_seconds * sample_rate / multiple))  # whole token hops
    tail = sample_rate
    with _open(path) as container:
        if not container.streams.audio:
            raise ValueError(f"{path}: has no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        pending: list[np.ndarray] = []
        held = 0

        def take(frames):
            nonlocal held
            for out in frames:
                samples = out.to_ndarray().reshape(-1)
                pending.append(samples)
                held += samples.size

        for frame in container.decode(stream):
            take(resampler.resample(frame))
            # keep at least `tail` samples back so the last chunk is never a sliver too short to tokenize
            while held >= chunk + tail:
                yield _split(pending, chunk)
                held -= chunk
        take(resampler.resample(None))
        if held:
            yield torch.from_numpy(np.concatenate(pending).astype(np.float32))


def _split(pending: list[np.ndarray], size: int) -> torch.Tensor:
    """Pop the first `size` samples off the pending buffers (in place)."""
    joined = np.concatenate(pending)
    pending.clear()
    if joined.size > size:
        pending.append(joined[size:])
    return torch.from_numpy(joined[:size].astype(np.float32))


def tokenize_audio_track(path, tokenizer, *, chunk_seconds: float = 30.0, margin_seconds: float = 1.0) -> torch.Tensor:
    """The whole track's codes (num_codebooks, T) with memory bounded by the chunk size.

    `tokenizer` is any audio tokenizer of the protocol (its code_spec gives the rate and the hop). BEST-RQ
    (not decodable; its `stream` API: a statistics pass, then a token pass) gives exactly the one-shot tokens;
    a codec (decodable) gets chunks with `margin_seconds` of real context on each side, which covers the
    codec's receptive field, so the codes equal one-shot codes.
    """
    from ..audio.tokenizer import AudioTokenizer
    from ..tokenizer.protocol import expect_modality

    spec = expect_modality(tokenizer, "audio", "audio tokenizer")
    rate, hop = int(spec.sample_rate), spec.factor("t")

    def chunks():
        return iter_audio_chunks(path, sample_rate=rate, chunk_seconds=chunk_seconds, multiple=hop)

    with torch.no_grad():
        if isinstance(tokenizer, AudioTokenizer):
            parts = list(tokenizer.stream(chunks, rate))
        else:
            margin = hop * math.ceil(margin_seconds * rate / hop)
            parts = list(_encode_with_context(chunks(), lambda x: tokenizer.encode(x, rate), hop, margin))
    parts = [p.to(torch.int64).cpu() for p in parts if p.numel()]
    if not parts:
        raise ValueError(f"{path}: the audio track is empty")
    return torch.cat(parts, dim=1)


def _encode_with_context(chunks: Iterator[torch.Tensor], encode, hop: int, margin: int) -> Iterator[torch.Tensor]:
    """Encode each chunk with `margin` samples of its neighbours on both sides and keep only its own frames
    (chunks are whole multiples of `hop` except the last)."""
    left = torch.zeros(0)
    pending = None
    for following in chunks:
        if pending is not None:
            yield _own_frames(encode, left, pending, following[:margin], hop)
            left = pending[-margin:]
        pending = following
    if pending is not None:
        yield _own_frames(encode, left, pending, torch.zeros(0), hop)


def _own_frames(encode, left: torch.Tensor, middle: torch.Tensor, right: torch.Tensor, hop: int) -> torch.Tensor:
    codes = encode(torch.cat([left, middle, right]))
    start = left.numel() // hop
    stop = start + middle.numel() // hop if right.numel() else codes.shape[1]
    return codes[:, start:stop]
