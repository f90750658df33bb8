"""Segments with known codes -> one flat id sequence.

Layout (names are special tokens, `res` the resolution tokens, `eor` present when the vocabulary uses it):
    <bos> text... <image_begin> <res h> <res w> (codes[r] <eor>)*h <image_end>
        with several image codebooks (factorised sub-tokens, codes (K, h, w)) each position of a row is its K
        sub-tokens in codebook order, each from its codebook's range;
        with image_scales (VAR, codes (L,)): <image_begin> <res h> <res w> tokens... <image_end>, the scales'
        token maps concatenated coarse to fine (each row-major, no <eor>), h x w the finest scale
    <audio_begin> interleaved codes <audio_end>      (BEST-RQ; codec audio uses <audio_codec_begin/end>)
    <video_begin> (<frame> "12.500" <image_begin> ... <image_end>)* [audio block] <video_end> <eos>
A frame's timestamp is text (seconds, millisecond precision) between <frame> and its image.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from .interleave import interleave
from .segments import TIMESTAMP_DECIMALS, Audio, AudioCodec, Frame, Image, Text, Video
from .vocabulary import Vocabulary


def format_timestamp(seconds: float) -> str:
    return f"{float(seconds):.{TIMESTAMP_DECIMALS}f}"


def encode_image(vocab: Vocabulary, codes: torch.Tensor) -> np.ndarray:
    if vocab.image_scales is not None:
        return _encode_scales(vocab, codes)
    ranges = vocab.codebooks("image")
    grid = np.asarray(codes.cpu(), dtype=np.int64)
    k = len(ranges)
    if k > 1 or grid.ndim != 2:
        if grid.ndim != 3 or grid.shape[0] != k:
            raise ValueError(f"image codes must be ({k}, h, w) for this vocabulary's {k} image codebooks, got shape"
                             f" {tuple(grid.shape)}" if k > 1 else
                             f"image codes must be an (h, w) grid for this vocabulary, got shape {tuple(grid.shape)}")
        grid = np.moveaxis(grid, 0, -1)  # (h, w, K): each position's sub-tokens together, in codebook order
    else:
        grid = grid[..., None]
    h, w = grid.shape[:2]
    if h == 0 or w == 0:
        raise ValueError(f"image grid {h}x{w} is empty")
    sizes = np.array([r.size for r in ranges], dtype=np.int64)
    bad = (grid < 0) | (grid >= sizes)
    if bad.any():
        r, c, j = np.argwhere(bad)[0]
        where = f" codebook {j}," if k > 1 else ""
        raise ValueError(f"image code {grid[r, c, j]} at{where} row {r}, column {c} is outside [0, {sizes[j]})")
    body = (grid + np.array([r.offset for r in ranges], dtype=np.int64)).reshape(h, w * k)
    if vocab.end_of_row:
        body = np.concatenate([body, np.full((h, 1), vocab.special("end_of_row"))], axis=1)
    head = [vocab.special("image_begin"), vocab.resolution_token(h), vocab.resolution_token(w)]
    return np.concatenate([head, body.reshape(-1), [vocab.special("image_end")]]).astype(np.int64)


def _encode_scales(vocab: Vocabulary, codes: torch.Tensor) -> np.ndarray:
    (image_range,) = vocab.codebooks("image")
    tokens = np.asarray(codes.cpu(), dtype=np.int64)
    if tokens.ndim != 1 or tokens.shape[0] != vocab.image_tokens:
        raise ValueError(f"image codes must be ({vocab.image_tokens},): the vocabulary's {len(vocab.image_scales)}"
                         f" scales {[list(s) for s in vocab.image_scales]}, got shape {tuple(tokens.shape)}")
    bad = np.flatnonzero((tokens < 0) | (tokens >= image_range.size))
    if bad.size:
        raise ValueError(f"image code {tokens[bad[0]]} at token {bad[0]} is outside [0, {image_range.size})")
    h, w = vocab.image_scales[-1]
    head = [vocab.special("image_begin"), vocab.resolution_token(h), vocab.resolution_token(w)]
    return np.concatenate([head, tokens + image_range.offset, [vocab.special("image_end")]]).astype(np.int64)


def encode_audio(vocab: Vocabulary, codes: torch.Tensor, modality: str) -> np.ndarray:
    offsets = vocab.offsets(modality)
    sizes = np.array([r.size for r in vocab.codebooks(modality)], dtype=np.int64)
    body = interleave(codes, offsets, sizes)
    return np.concatenate([[vocab.special(f"{modality}_begin")], body,
                           [vocab.special(f"{modality}_end")]]).astype(np.int64)


def encode_segment(vocab: Vocabulary, segment) -> np.ndarray:
    if isinstance(segment, str):
        segment = Text(segment)
    if isinstance(segment, Text):
        return np.asarray(vocab.text.encode(segment.text), dtype=np.int64)
    if isinstance(segment, Frame):
        if segment.timestamp is None:
            stamp = np.zeros(0, dtype=np.int64)
        else:
            stamp = np.asarray(vocab.text.encode(format_timestamp(segment.timestamp)), dtype=np.int64)
        return np.concatenate([[vocab.special("frame")], stamp, _image(vocab, segment)]).astype(np.int64)
    if isinstance(segment, Image):
        return _image(vocab, segment)
    if isinstance(segment, (Audio, AudioCodec)):
        if segment.codes is None:
            raise ValueError(f"{type(segment).__name__} segment has no codes (tokenize its waveform first)")
        return encode_audio(vocab, segment.codes, "audio" if isinstance(segment, Audio) else "audio_codec")
    if isinstance(segment, Video):
        parts = [[vocab.special("video_begin")]]
        for frame in segment.frames:
            if not isinstance(frame, Frame):
                raise ValueError(f"Video.frames must hold Frame segments, got {type(frame).__name__}")
            parts.append(encode_segment(vocab, frame))
        if segment.audio is not None:
            parts.append(encode_segment(vocab, segment.audio))
        parts.append([vocab.special("video_end")])
        return np.concatenate(parts).astype(np.int64)
    raise ValueError(f"cannot encode segment of type {type(segment).__name__}")


def _image(vocab: Vocabulary, segment: Image) -> np.ndarray:
    if segment.codes is None:
        raise ValueError("Image segment has no codes (tokenize its source first)")
    return encode_image(vocab, segment.codes)


def encode_segments(vocab: Vocabulary, segments: Iterable, *, add_bos: bool = True, add_eos: bool = True) -> np.ndarray:
    parts = [[vocab.special("bos")]] if add_bos else []
    parts += [encode_segment(vocab, s) for s in segments]
    if add_eos:
        parts.append([vocab.special("eos")])
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
