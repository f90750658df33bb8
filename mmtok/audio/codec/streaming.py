"""Stateful streaming of the codec's conv stacks: long audio in pieces, every sample computed exactly once.

A conv over a stream only needs the last (kernel span - stride) input samples of the previous piece, so each
conv keeps that tail, prepends it to the next piece and emits the outputs whose inputs are all there (the
zero padding a one-shot pass adds at the very start and end is added at the first and last piece). Residual
skips are delayed to meet their branch, which lags by the branch's context. The outputs are the one-shot
outputs, sample for sample (the same products and sums, up to float summation order), with no recomputed
overlap; memory is set by the piece size, not by the length. Inference only (no autograd).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .blocks import Decoder, DecoderBlock, Encoder, EncoderBlock, ResidualUnit
from .layers import Snake1d, WNConv1d, WNConvTranspose1d


class _Step:
    """push(piece or None, last) -> the next output piece, or None while not enough input has arrived."""

    def push(self, x: torch.Tensor | None, last: bool) -> torch.Tensor | None:
        raise NotImplementedError


class _Pointwise(_Step):
    def __init__(self, module: nn.Module):
        self.module = module

    def push(self, x, last):
        return None if x is None else self.module(x)


class _Sequence(_Step):
    def __init__(self, steps: list[_Step]):
        self.steps = steps

    def push(self, x, last):
        for step in self.steps:
            x = step.push(x, last)
            if x is None and not last:
                return None
        return x


class _ConvStream(_Step):
    """apply(valid input) over a stream: keeps the tail of input the next outputs still need.

    Each piece is written once into the conv's input buffer after the tail, by `write(x, out)` (a Snake
    that precedes the conv writes its output straight there) or by a copy.
    """

    def __init__(self, apply: Callable[[torch.Tensor], torch.Tensor], span: int, stride: int, pad_left: int,
                 pad_right: int, write: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None):
        self.apply, self.span, self.stride = apply, span, stride
        self.pad_left, self.pad_right = pad_left, pad_right
        self.write = write or (lambda x, out: out.copy_(x))
        self.tail: torch.Tensor | None = None

    def push(self, x, last):
        if self.tail is None:
            if x is None:
                return None
            self.tail = x.new_zeros(x.shape[0], x.shape[1], self.pad_left)
        tail = self.tail
        held, new = tail.shape[-1], (0 if x is None else x.shape[-1])
        buf = tail.new_empty(tail.shape[0], tail.shape[1], held + new + (self.pad_right if last else 0))
        buf[..., :held] = tail
        if new:
            self.write(x, buf[..., held: held + new])
        if last:
            buf[..., held + new:] = 0
        n_out = (buf.shape[-1] - self.span) // self.stride + 1 if buf.shape[-1] >= self.span else 0
        self.tail = buf[..., n_out * self.stride:].clone()  # small: keeps `buf` itself from staying alive
        if n_out == 0:
            return None
        return self.apply(buf[..., : (n_out - 1) * self.stride + self.span])


class _TransposedConvStream(_Step):
    """Polyphase transposed conv: a streamed ordinary conv, phases interleaved, the padding cropped at the ends."""

    def __init__(self, conv: WNConvTranspose1d, write=None):
        taps = conv.phase_taps
        self.conv = conv
        self.phases = _ConvStream(lambda b: conv.phases(b, 0), taps, 1, taps - 1, taps - 1, write)
        self.head_left, self.tail_crop = conv.phase_crop
        if self.tail_crop > (taps - 1) * conv.stride:
            raise ValueError(f"cannot stream {conv}: padding larger than the kernel overhang")

    def push(self, x, last):
        y = self.phases.push(x, last)
        if y is None:
            return None
        z = self.conv.interleave(y)
        head = min(self.head_left, z.shape[-1])
        self.head_left -= head
        end = z.shape[-1] - (self.tail_crop if last else 0)
        return z[..., head:end] if head or end < z.shape[-1] else z


class _Residual(_Step):
    """x + branch(x), x delayed to the branch's output positions (the branch keeps the length).

    When the branch ends in a 1x1 conv, the output buffer starts as skip + bias and the conv's matrix product
    accumulates into it: one pass over the output fewer than a conv followed by an add.
    """

    def __init__(self, branch: list[_Step], project: WNConv1d | None):
        self.branch, self.project = _Sequence(branch), project
        self.pending: list[torch.Tensor] = []

    def push(self, x, last):
        if x is not None:
            self.pending.append(x)
        h = self.branch.push(x, last)
        if h is None:
            return None
        if self.project is None:
            return self._add_skip(h, h, None)
        weight = self.project.weight()[:, :, 0]
        y = self._add_skip(h.new_empty(h.shape[0], weight.shape[0], h.shape[-1]), None, self.project.bias)
        if y.shape[0] == 1:
            y[0].addmm_(weight, h[0])
        else:
            y.baddbmm_(weight.expand(y.shape[0], -1, -1), h)
        return y

    def _add_skip(self, out: torch.Tensor, y: torch.Tensor | None, bias: torch.Tensor | None) -> torch.Tensor:
        """out = (y or bias) + the next out.shape[-1] pending skip samples."""
        done = 0
        while done < out.shape[-1]:
            skip = self.pending[0]
            n = min(skip.shape[-1], out.shape[-1] - done)
            other = y[..., done: done + n] if y is not None else bias[:, None]
            torch.add(skip[..., :n], other, out=out[..., done: done + n])
            done += n
            if n == skip.shape[-1]:
                self.pending.pop(0)
            else:
                self.pending[0] = skip[..., n:].clone()  # the short remainder, not the whole piece
        return out


def _stream_sequence(modules: list[nn.Module]) -> _Sequence:
    """Steps of a Sequential; a Snake directly before a conv writes into the conv's input buffer."""
    steps, i = [], 0
    while i < len(modules):
        module, after = modules[i], modules[i + 1] if i + 1 < len(modules) else None
        if isinstance(module, Snake1d) and isinstance(after, (WNConv1d, WNConvTranspose1d)):
            step = _conv_stream(after, module.write)
            if step is not None:
                steps.append(step)
                i += 2
                continue
        steps.append(stream(module))
        i += 1
    return _Sequence(steps)


def _conv_stream(conv: nn.Module, write=None) -> _Step | None:
    """The streamed conv, or None for a 1x1 conv (stateless: runs as is)."""
    if isinstance(conv, WNConvTranspose1d):
        return _TransposedConvStream(conv, write)
    if conv.kernel_size == 1 and conv.padding == 0 and conv.stride == 1:
        return None
    span = (conv.kernel_size - 1) * conv.dilation + 1
    return _ConvStream(lambda b: conv.conv(b, 0), span, conv.stride, conv.padding, conv.padding, write)


def stream(module: nn.Module) -> _Step:
    """A single-use streaming runner for the codec's Encoder or Decoder (or any of their parts)."""
    if isinstance(module, nn.Sequential):
        return _stream_sequence(list(module))
    if isinstance(module, (Encoder, EncoderBlock, DecoderBlock)):
        return stream(module.block)
    if isinstance(module, Decoder):
        return stream(module.model)
    if isinstance(module, ResidualUnit):
        layers = list(module.block)
        last = layers[-1]
        if isinstance(last, WNConv1d) and _conv_stream(last) is None:  # a 1x1 conv: fused with the skip add
            return _Residual(_stream_sequence(layers[:-1]).steps, last)
        return _Residual(_stream_sequence(layers).steps, None)
    if isinstance(module, (WNConv1d, WNConvTranspose1d)):
        return _conv_stream(module) or _Pointwise(module)
    if isinstance(module, (Snake1d, nn.Tanh, nn.Identity)):
        return _Pointwise(module)
    raise TypeError(f"cannot stream a {type(module).__name__}")
