"""A video's audio track as 16 kHz mono chunks (PyAV decode + resample), tokenized chunk by chunk.

Chunks keep memory bounded for long videos; their length is a whole number of token hops for both the
BEST-RQ tokenizer (640 samples) and the codec (320 samples) at the default 30 s.
"""
from __future__ import annotations

from typing import Iterator

import av
import numpy as np
import torch

from .reader import _open


def iter_audio_chunks(path, *, sample_rate: int = 16000, chunk_seconds: float = 30.0) -> Iterator[torch.Tensor]:
    """Yield float32 mono chunks of chunk_seconds at sample_rate; the last one holds the rest (up to one
    second longer than chunk_seconds, never a sliver)."""
    chunk = int(round(chunk_seconds * sample_rate))
    tail = sample_rate
    if chunk <= 0:
        raise ValueError(f"chunk_seconds must be positive, got {chunk_seconds}")
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


def tokenize_audio_track(path, tokenizer, *, chunk_seconds: float = 30.0) -> torch.Tensor:
    """The whole track's codes (num_codebooks, T), concatenated over chunks. `tokenizer` is an
    AudioTokenizer or AudioCodec (anything with encode(waveform, sample_rate) -> (K, T) and sample_rate)."""
    rate = int(getattr(tokenizer, "sample_rate", 16000))
    parts = []
    with torch.inference_mode():
        for chunk in iter_audio_chunks(path, sample_rate=rate, chunk_seconds=chunk_seconds):
            parts.append(tokenizer.encode(chunk, rate).to(torch.int64).cpu())
    if not parts:
        raise ValueError(f"{path}: the audio track is empty")
    return torch.cat(parts, dim=1)
