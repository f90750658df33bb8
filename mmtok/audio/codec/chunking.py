"""Encode and decode long audio piece by piece through the streaming runner (`streaming.py`).

Each piece is computed once: the convs carry their input tails from piece to piece instead of recomputing
overlapping margins, so the result is the one-shot result (codes identical, waveforms equal up to float
summation order, ~1e-7) with no seams and no overlap cost, and peak memory is set by the piece size, not by
the length of the audio.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .layers import WNConv1d, WNConvTranspose1d
from .streaming import stream


def output_length(module: nn.Module, length: int) -> int:
    """Length the conv stack produces from `length` input steps (PyTorch's conv length formulas)."""
    for conv in module.modules():
        if not isinstance(conv, (WNConv1d, WNConvTranspose1d)):
            continue
        k, s, d, p = conv.kernel_size, conv.stride, conv.dilation, conv.padding
        if isinstance(conv, WNConvTranspose1d):
            length = (length - 1) * s - 2 * p + d * (k - 1) + 1
        else:
            length = (length + 2 * p - d * (k - 1) - 1) // s + 1
    return max(length, 0)


def _check_chunk(chunk: int) -> None:
    if chunk < 1:
        raise ValueError(f"chunk size must be >= 1 frame, got {chunk}")


@torch.no_grad()
def encode_chunked(encoder: nn.Module, quantize: Callable[[torch.Tensor], torch.Tensor], audio: torch.Tensor,
                   hop: int, chunk_frames: int) -> torch.Tensor:
    """audio (1, 1, frames*hop) -> quantize(latent) (1, ..., frames), the encoder streamed in pieces."""
    _check_chunk(chunk_frames)
    runner, step, total = stream(encoder), chunk_frames * hop, audio.shape[-1]
    pieces = []
    for start in range(0, total, step):
        latent = runner.push(audio[..., start: start + step], last=start + step >= total)
        if latent is not None:
            pieces.append(quantize(latent))
    return torch.cat(pieces, dim=-1)


@torch.no_grad()
def decode_chunked(decoder: nn.Module, dequantize: Callable[[int, int], torch.Tensor], frames: int,
                   chunk_frames: int) -> torch.Tensor:
    """Latent frames -> waveform (1, C, samples), the decoder streamed in pieces.

    dequantize(lo, hi) returns the latent (1, D, hi - lo) of frames [lo, hi).
    """
    _check_chunk(chunk_frames)
    runner, total = stream(decoder), output_length(decoder, frames)
    out, filled = None, 0
    for lo in range(0, frames, chunk_frames):
        hi = min(frames, lo + chunk_frames)
        wave = runner.push(dequantize(lo, hi), last=hi == frames)
        if wave is None:
            continue
        if out is None:
            out = wave.new_empty(wave.shape[0], wave.shape[1], total)
        out[..., filled: filled + wave.shape[-1]] = wave
        filled += wave.shape[-1]
    if filled != total:
        raise RuntimeError(f"streamed decoder produced {filled} samples, expected {total}")
    return out
