"""Streaming Mimi: audio pushed piece by piece (down to one 80 ms frame at a time) gives the one-pass codes, and
codes pushed frame by frame give the one-pass waveform, with state carried between pieces.

Every causal convolution keeps the inputs its next outputs still need (its left padding at the start: zeros, or the
first value for the replicate-padded downsample conv) and emits only outputs whose inputs have all arrived; at
`flush` it adds the right padding a one-pass call would have added for the total length it has seen (EnCodec's
rule, zeros or the last value), so any length and any piece sizes give the one-pass result. Transposed convs
overlap-add their tails into the next piece (bias added once, when a sample is final). The transformers carry
their last `sliding_window - 1` keys / values and the position (`transformer.TransformerState`). Every sample is
computed once; memory is flat in the length. Non-causal configs (their convs look ahead) are refused, as are
causal convs with reflect / circular padding.

With the released model's pieces of 1920 samples (a multiple of the frame), each push returns one code frame and
each pushed code frame returns 1920 samples: no lookahead, as Mimi was built for.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..encodec.layers import ResidualBlock, SConv1d, SConvTranspose1d
from .transformer import Transformer, TransformerState


class _ConvState:
    __slots__ = ("buffer", "seen", "dropped", "tail")

    def __init__(self):
        self.buffer = None  # pending inputs (conv) / overlap tail (transposed conv)
        self.seen = 0
        self.dropped = 0
        self.tail = None


def _conv(layer: SConv1d, x: torch.Tensor, st: _ConvState, final: bool) -> torch.Tensor:
    conv = layer.conv
    k, s = layer.effective_kernel, layer.stride
    if st.buffer is None:
        if x.shape[-1] == 0:
            return x.new_zeros(x.shape[0], conv.out_channels, 0)
        left = k - s
        if layer.pad_mode == "replicate":
            st.buffer = x[..., :1].expand(-1, -1, left)
        else:
            st.buffer = x.new_zeros(x.shape[0], x.shape[1], left)
    st.seen += x.shape[-1]
    buf = torch.cat([st.buffer, x], dim=-1)
    if final:
        extra = math.ceil(st.seen / s) * s - st.seen
        if extra:
            pad = buf[..., -1:].expand(-1, -1, extra) if layer.pad_mode == "replicate" else \
                buf.new_zeros(buf.shape[0], buf.shape[1], extra)
            buf = torch.cat([buf, pad], dim=-1)
    n = (buf.shape[-1] - k) // s + 1 if buf.shape[-1] >= k else 0
    st.buffer = buf[..., n * s:]
    if n == 0:
        return x.new_zeros(x.shape[0], conv.out_channels, 0)
    return F.conv1d(buf[..., : (n - 1) * s + k], conv.weight, conv.bias, s, 0, conv.dilation, conv.groups)


def _conv_transpose(layer: SConvTranspose1d, x: torch.Tensor, st: _ConvState, final: bool) -> torch.Tensor:
    conv = layer.conv
    k, s = conv.kernel_size[0], conv.stride[0]
    total = k - s
    right = math.ceil(total * layer.trim_right_ratio)
    left = total - right
    pieces = []
    if x.shape[-1]:
        y = F.conv_transpose1d(x, conv.weight, None, s, groups=conv.groups)
        if st.tail is not None:
            y = torch.cat([y[..., :total] + st.tail, y[..., total:]], dim=-1)
        pieces.append(y[..., : x.shape[-1] * s])
        st.tail = y[..., x.shape[-1] * s:]
    if final and st.tail is not None:
        pieces.append(st.tail[..., : total - right])
        st.tail = None
    if not pieces:
        return x.new_zeros(x.shape[0], conv.out_channels, 0)
    out = torch.cat(pieces, dim=-1)
    if st.dropped < left:
        cut = min(left - st.dropped, out.shape[-1])
        out, st.dropped = out[..., cut:], st.dropped + cut
    return out + conv.bias[:, None] if conv.bias is not None else out


class _Walker:
    """Runs a module stack (SEANet layers, residual blocks, transformers) on pieces, one state per module."""

    def __init__(self):
        self.states: dict[int, object] = {}

    def _state(self, module, factory):
        key = id(module)
        if key not in self.states:
            self.states[key] = factory()
        return self.states[key]

    def run(self, module: nn.Module, x: torch.Tensor, final: bool) -> torch.Tensor:
        if isinstance(module, SConv1d):
            if module.norm is not None:
                raise ValueError("streaming needs convs without time GroupNorm")
            return _conv(module, x, self._state(module, _ConvState), final)
        if isinstance(module, SConvTranspose1d):
            return _conv_transpose(module, x, self._state(module, _ConvState), final)
        if isinstance(module, ResidualBlock):
            h = x
            for layer in module.block:
                h = self.run(layer, h, final)
            skip = self.run(module.shortcut, x, final) if isinstance(module.shortcut, SConv1d) else x
            return skip + h
        if isinstance(module, Transformer):
            if x.shape[-1] == 0:
                return x
            state = self._state(module, TransformerState)
            return module(x.transpose(1, 2), state).transpose(1, 2)
        if isinstance(module, nn.ModuleList):
            for layer in module:
                x = self.run(layer, x, final)
            return x
        return module(x)  # pointwise (ELU)


def check_streamable(settings: dict) -> None:
    if not settings["use_causal_conv"]:
        raise ValueError("streaming needs a causal Mimi (use_causal_conv true); this config's convs look ahead")
    if settings["pad_mode"] not in ("constant", "replicate"):
        raise ValueError(f"streaming needs constant or replicate padding, this config has {settings['pad_mode']!r}")


class EncodeStream:
    """`push(audio (B, channels, n))` -> the code frames (B, levels, m) completed so far; `flush()` -> the rest.
    The concatenation of every result equals `encode_batch` of the whole audio."""

    def __init__(self, codec, num_quantizers: int | None = None):
        check_streamable(codec._settings)
        self.codec, self.levels = codec, codec._levels(num_quantizers)
        self._walker = _Walker()
        self._batch = None
        self._done = False

    @torch.no_grad()
    def push(self, audio: torch.Tensor, *, final: bool = False) -> torch.Tensor:
        if self._done:
            raise ValueError("this stream was flushed; start a new one")
        codec = self.codec
        audio = torch.as_tensor(audio)
        if audio.dim() != 3 or audio.shape[1] != codec.channels or audio.dtype.is_complex or \
                not audio.dtype.is_floating_point:
            raise ValueError(f"audio must be float (B, {codec.channels}, samples), got {tuple(audio.shape)} "
                             f"{audio.dtype}")
        if self._batch is not None and audio.shape[0] != self._batch:
            raise ValueError(f"audio: batch of {audio.shape[0]}, the stream started with {self._batch}")
        self._batch = audio.shape[0]
        x = audio.to(codec.device, torch.float32)
        w = self._walker
        x = w.run(codec.encoder.layers, x, final)
        x = w.run(codec.encoder_transformer, x, final)
        x = w.run(codec.downsample, x, final)
        self._done = final
        if x.shape[-1] == 0:
            return torch.zeros(x.shape[0], self.levels, 0, dtype=torch.int64, device=codec.device)
        return codec.quantizer.encode(x, self.levels)

    def flush(self) -> torch.Tensor:
        return self.push(torch.zeros(self._batch or 1, self.codec.channels, 0), final=True)


class DecodeStream:
    """`push(codes (B, K, m))` -> the samples completed so far (B, channels, ...); `flush()` -> the rest. The
    concatenation equals `decode_batch` of all the codes."""

    def __init__(self, codec):
        check_streamable(codec._settings)
        self.codec = codec
        self._walker = _Walker()
        self._levels = None
        self._batch = None
        self._done = False

    @torch.no_grad()
    def push(self, codes, *, final: bool = False) -> torch.Tensor:
        if self._done:
            raise ValueError("this stream was flushed; start a new one")
        codec, w = self.codec, self._walker
        codes = torch.as_tensor(codes)
        if codes.dim() == 3 and codes.shape[-1] == 0:
            x = torch.zeros(self._batch or codes.shape[0], codec._settings["hidden_size"], 0, device=codec.device)
        else:
            codes = codec.check_codes(codes)
            if self._batch is not None and codes.shape[0] != self._batch:
                raise ValueError(f"codes: batch of {codes.shape[0]}, the stream started with {self._batch}")
            if self._levels is not None and codes.shape[1] != self._levels:
                raise ValueError(f"codes: {codes.shape[1]} levels, the stream started with {self._levels}")
            self._levels, self._batch = codes.shape[1], codes.shape[0]
            x = codec.quantizer.decode(codes)
        x = w.run(codec.upsample, x, final)
        x = w.run(codec.decoder_transformer, x, final)
        x = w.run(codec.decoder.layers, x, final)
        self._done = final
        return x

    def flush(self) -> torch.Tensor:
        return self.push(torch.zeros(self._batch or 1, self._levels or 1, 0, dtype=torch.int64), final=True)
