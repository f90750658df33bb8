"""Band-limited sample-rate conversion to the tokenizers' 16 kHz, one-shot and chunked.

Both go through libsoxr (the `soxr` package): a real anti-aliased resampler, so 44.1/48 kHz
material loses nothing below 8 kHz and gains no aliases. The chunked form is for streaming
hours of audio without holding them in memory.
"""
from __future__ import annotations

import numpy as np
import soxr
import torch

QUALITY = "HQ"  # soxr high quality: ~-130 dB stop band, passband flat to ~0.96 of Nyquist


def _check_rate(rate, name: str) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not np.isfinite(rate) or rate <= 0:
        raise ValueError(f"{name} must be a positive number of samples per second, got {rate!r}")
    return float(rate)


def resample(waveform: torch.Tensor, orig_rate: float, target_rate: float) -> torch.Tensor:
    """Resample a float32 (samples,) or (channels, samples) tensor from orig_rate to target_rate."""
    orig = _check_rate(orig_rate, "sample_rate")
    target = _check_rate(target_rate, "target_rate")
    if orig == target:
        return waveform
    array = waveform.detach().to(torch.float32).cpu().numpy()
    if array.ndim == 1:
        out = soxr.resample(array, orig, target, quality=QUALITY)
    else:  # soxr wants (frames, channels)
        out = soxr.resample(np.ascontiguousarray(array.T), orig, target, quality=QUALITY).T
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))


class StreamingResampler:
    """Chunk-by-chunk mono resampling whose concatenated output equals `resample` of the whole clip.

    Call `process(chunk)` for each chunk and `process(empty, last=True)` (or `flush()`) at the end.
    """

    def __init__(self, orig_rate: float, target_rate: float):
        self.orig_rate = _check_rate(orig_rate, "sample_rate")
        self.target_rate = _check_rate(target_rate, "target_rate")
        self._passthrough = self.orig_rate == self.target_rate
        self._stream = None if self._passthrough else soxr.ResampleStream(
            self.orig_rate, self.target_rate, 1, dtype="float32", quality=QUALITY)

    def process(self, chunk: torch.Tensor, last: bool = False) -> torch.Tensor:
        chunk = chunk.detach().to(torch.float32).cpu().reshape(-1)
        if self._passthrough:
            return chunk
        out = self._stream.resample_chunk(np.ascontiguousarray(chunk.numpy()), last=last)
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))

    def flush(self) -> torch.Tensor:
        return self.process(torch.zeros(0), last=True)
