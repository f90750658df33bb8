"""Chunked encode/decode for long audio with exact receptive-field bookkeeping.

Every conv in the codec is translation-equivariant on the hop grid, so a code frame (or an output sample)
depends only on a finite window of the input. Each chunk is computed with `margin` extra frames of real
context on both sides (clipped where the signal itself starts or ends, so the zero padding there is the same
as in a one-shot pass) and only the part whose whole receptive field lies inside the chunk is kept. The kept
parts are therefore the one-shot values: chunked codes equal one-shot codes and chunked waveforms equal
one-shot waveforms up to float summation order (~1e-7), with no seams. Peak memory is set by the chunk
size, not by the length of the audio.
"""
from __future__ import annotations

import math
from typing import Callable, Iterator

import torch
from torch import nn

from .layers import WNConv1d, WNConvTranspose1d


def _convs(module: nn.Module) -> list[nn.Module]:
    """The module's convolutions in forward order (the residual skips add no context)."""
    return [m for m in module.modules() if isinstance(m, (WNConv1d, WNConvTranspose1d))]


def receptive_context(module: nn.Module, step: float) -> tuple[float, float]:
    """(left, right) context of one output position, in units of the output grid of the whole stack.

    `step` is the size of one input step in those units (hop for the decoder, whose input is frames; for the
    encoder pass step=1 and read the result in samples).
    """
    left = right = 0.0
    for conv in _convs(module):
        k, s, d, p = conv.kernel_size, conv.stride, conv.dilation, conv.padding
        if isinstance(conv, WNConvTranspose1d):
            # output o reads inputs i with i*s in [o + p - (k-1), o + p]; o sits at o/s input steps
            left += (k - 1 - p) / s * step
            right += p / s * step
            step /= s
        else:
            # output j reads inputs [j*s - p, j*s - p + (k-1)*d]; j sits at j*s input steps
            left += p * step
            right += ((k - 1) * d - p) * step
            step *= s
    return left, right


def output_length(module: nn.Module, length: int) -> int:
    """Length the conv stack produces from `length` input steps (PyTorch's conv length formulas)."""
    for conv in _convs(module):
        k, s, d, p = conv.kernel_size, conv.stride, conv.dilation, conv.padding
        if isinstance(conv, WNConvTranspose1d):
            length = (length - 1) * s - 2 * p + d * (k - 1) + 1
        else:
            length = (length + 2 * p - d * (k - 1) - 1) // s + 1
    return max(length, 0)


def margin_frames(left: float, right: float, hop: int) -> tuple[int, int]:
    """Context in whole frames on each side (+1 frame for the rounding of strided layers)."""
    return math.ceil(left / hop) + 1, math.ceil(right / hop) + 1


def chunk_spans(frames: int, chunk: int, margins: tuple[int, int]) -> Iterator[tuple[int, int, int, int]]:
    """(keep_start, keep_end, context_start, context_end) frame spans covering [0, frames)."""
    if chunk < 1:
        raise ValueError(f"chunk size must be >= 1 frame, got {chunk}")
    for start in range(0, frames, chunk):
        end = min(frames, start + chunk)
        yield start, end, max(0, start - margins[0]), min(frames, end + margins[1])


def encode_chunked(encoder: nn.Module, quantize: Callable[[torch.Tensor], torch.Tensor], audio: torch.Tensor,
                   hop: int, chunk_frames: int) -> torch.Tensor:
    """audio (1, 1, frames*hop) -> codes (1, n, frames), the encoder run on overlapping chunks."""
    frames = audio.shape[-1] // hop
    margins = margin_frames(*receptive_context(encoder, 1.0), hop)
    pieces = []
    for start, end, lo, hi in chunk_spans(frames, chunk_frames, margins):
        latent = encoder(audio[..., lo * hop: hi * hop])
        pieces.append(quantize(latent[..., start - lo: end - lo]))
    return torch.cat(pieces, dim=-1)


def decode_chunked(decoder: nn.Module, dequantize: Callable[[int, int], torch.Tensor], frames: int, hop: int,
                   chunk_frames: int) -> torch.Tensor:
    """Latent frames -> waveform (1, C, samples), the decoder run on overlapping chunks.

    dequantize(lo, hi) returns the latent (1, D, hi - lo) of frames [lo, hi).
    """
    total = output_length(decoder, frames)
    margins = margin_frames(*receptive_context(decoder, float(hop)), hop)
    out = None
    for start, end, lo, hi in chunk_spans(frames, chunk_frames, margins):
        wave = decoder(dequantize(lo, hi))
        if out is None:
            out = wave.new_empty(wave.shape[0], wave.shape[1], total)
        first, last = start * hop, min(end * hop, total)
        out[..., first:last] = wave[..., first - lo * hop: last - lo * hop]
    return out
