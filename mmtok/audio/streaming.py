"""Chunked audio -> log-mel blocks -> tokens with bounded memory, equal to encoding the whole clip at once.

`FeatureStream` turns pushed samples into the same fixed, clip-aligned frame blocks that the
one-shot path computes (frames 0-1023, 1024-2047, ... of the clip), mirroring the clip's edges
exactly as the one-shot path does once the end is known. The blocks are therefore
bit-identical, whatever the chunk sizes. `AudioTokenStream` normalises them with statistics
fixed in advance (a first pass over the same audio, or supplied by the user), stacks and
quantizes them: with the same statistics, its tokens equal `AudioTokenizer.encode` of the
whole clip.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import torch

from .features import FeatureStats, stack_frames
from .frontend import BLOCK_FRAMES, FrameFrontend
from .io import SAMPLE_RATE, to_float
from .resample import StreamingResampler


class SampleBuffer:
    """The samples a stream holds between blocks, in one reused allocation.

    Appending copies only the new samples, and dropping consumed samples moves only the (less than a
    block) remainder to the front, so the work is linear in the samples pushed whatever the chunk sizes,
    and the memory stays one block plus one chunk. (Concatenating a growing buffer on every push was
    quadratic in the number of chunks, and small chunks fragmented the heap into gigabytes.)
    """

    def __init__(self, capacity: int):
        self._data = torch.empty(max(1, int(capacity)), dtype=torch.float32)
        self.size = 0
        self.copied = 0  # samples written or moved so far (what the linearity test counts)

    def append(self, samples: torch.Tensor) -> None:
        n = samples.numel()
        if self.size + n > self._data.numel():
            grown = torch.empty(max(2 * self._data.numel(), self.size + n), dtype=torch.float32)
            grown[: self.size] = self._data[: self.size]
            self.copied += self.size
            self._data = grown
        self._data[self.size: self.size + n] = samples
        self.size += n
        self.copied += n

    def view(self) -> torch.Tensor:
        return self._data[: self.size]

    def drop(self, count: int) -> None:
        """Forget the first `count` samples."""
        rest = self.size - count
        if rest > 0:
            self._data[:rest] = self._data[count: self.size].clone()
            self.copied += rest
        self.size = max(rest, 0)


class FeatureStream:
    """Push mono float32 samples, get (frames, mels) feature blocks; `finish()` returns the tail."""

    def __init__(self, frontend: FrameFrontend, name: str = "stream", divisor: float | None = None,
                 floor: float | None = None):
        self.frontend, self.name = frontend, name
        self.divisors = None if divisor is None else [divisor]  # the relative floor's (see frontend.features)
        self.floor = floor
        self.num_samples = 0  # raw samples received
        self.next_frame = 0
        self._head: list[torch.Tensor] = []  # raw samples held until the left edge can be mirrored
        self._buffer: SampleBuffer | None = None  # padded signal from sample self._buffer_start on
        self._buffer_start = 0
        self._keep = frontend.max_pad() + 1  # raw tail kept for mirroring the right edge
        self._tail = torch.zeros(0)
        self.finished = False

    @property
    def samples_copied(self) -> int:
        """Samples written into or moved within the stream's buffer so far (linear in the samples pushed)."""
        return 0 if self._buffer is None else self._buffer.copied

    def push(self, samples: torch.Tensor) -> list[torch.Tensor]:
        if self.finished:
            raise ValueError(f"{self.name}: push() after finish()")
        samples = samples.reshape(-1).to(torch.float32)
        if samples.numel() == 0:
            return []
        self.num_samples += samples.numel()
        if self._keep > 1:
            self._tail = torch.cat([self._tail, samples[-self._keep:]])[-self._keep:]
        if self._buffer is None:
            self._head.append(samples)
            if self.num_samples < self._keep:
                return []
            head = torch.cat(self._head)
            self._head = []
            left = self.frontend.mirror(head, self.frontend.left_pad, "left") if self.frontend.pad_mode != "none" \
                else head[:0]
            f = self.frontend
            self._buffer = SampleBuffer((BLOCK_FRAMES + 1) * f.frame_shift + f.frame_length + left.numel())
            self._buffer.append(left)
            self._buffer.append(head)
        else:
            self._buffer.append(samples)
        return self._emit(final=False)

    def finish(self) -> list[torch.Tensor]:
        """Pad the right edge now that the length is known and return the remaining blocks."""
        if self.finished:
            return []
        self.frontend.check_length(self.num_samples, self.name)
        if self._buffer is None:  # shorter than the mirror length: pad the whole clip at once
            padded = self.frontend.padded(torch.cat(self._head))
            self._buffer = SampleBuffer(padded.numel())
            self._buffer.append(padded)
            self._head = []
        else:
            right = self.frontend.right_pad(self.num_samples)
            pad = self._tail.new_zeros(right) if self.frontend.pad_mode == "none" else \
                self.frontend.mirror(self._tail, right, "right")
            self._buffer.append(pad)
        self.finished = True
        return self._emit(final=True)

    def _emit(self, final: bool) -> list[torch.Tensor]:
        f, blocks = self.frontend, []
        buffer = self._buffer.view()
        available = len(buffer) + self._buffer_start  # padded samples known so far
        total = f.num_frames(self.num_samples) if final else None
        while True:
            if final:
                count = min(BLOCK_FRAMES, total - self.next_frame)
                if count <= 0:
                    break
            else:
                count = BLOCK_FRAMES
                if (self.next_frame + count - 1) * f.frame_shift + f.frame_length > available:
                    break
            start = self.next_frame * f.frame_shift - self._buffer_start
            segment = buffer[start: start + (count - 1) * f.frame_shift + f.frame_length]
            blocks.append(f.block_features([(segment, count)], self.divisors, self.floor))
            self.next_frame += count
        drop = self.next_frame * f.frame_shift - self._buffer_start
        if drop > 0:
            self._buffer.drop(drop)
            self._buffer_start += drop
        return blocks


def mono_chunks(chunks: Iterable, name: str) -> Iterator[torch.Tensor]:
    """Each chunk (samples,) or (channels, samples), any PCM dtype -> mono float32, checked for NaN."""
    for i, chunk in enumerate(chunks):
        chunk = torch.as_tensor(chunk)
        if chunk.ndim not in (1, 2):
            raise ValueError(f"{name}: chunk {i} must be (samples,) or (channels, samples), got {tuple(chunk.shape)}")
        chunk = to_float(chunk, name)
        if chunk.ndim == 2:
            chunk = chunk[0] if chunk.shape[0] == 1 else chunk.mean(dim=0)
        if not torch.isfinite(chunk.sum()) and not torch.isfinite(chunk).all():  # the sum is the fast check
            raise ValueError(f"{name}: chunk {i} contains NaN or infinite samples")
        yield chunk


COALESCE_SAMPLES = 4096  # tiny chunks are joined up to this many samples: per-chunk overhead stays small


def coalesced(chunks: Iterable[torch.Tensor], min_samples: int = COALESCE_SAMPLES) -> Iterator[torch.Tensor]:
    """Mono chunks joined until each holds at least `min_samples` (the last may hold fewer): the same samples
    in the same order, so every chunking-independent stage gives the same result with far fewer calls."""
    pending, size = [], 0
    for chunk in chunks:
        if size == 0 and chunk.numel() >= min_samples:
            yield chunk
            continue
        pending.append(chunk)
        size += chunk.numel()
        if size >= min_samples:
            yield torch.cat(pending)
            pending, size = [], 0
    if pending:
        yield torch.cat(pending)


def resampled(chunks: Iterable[torch.Tensor], sample_rate: float) -> Iterator[torch.Tensor]:
    """Mono chunks at sample_rate -> chunks at 16 kHz (soxr's streaming resampler)."""
    if sample_rate == SAMPLE_RATE:
        yield from chunks
        return
    resampler = StreamingResampler(sample_rate, SAMPLE_RATE)
    for chunk in chunks:
        yield resampler.process(chunk)
    yield resampler.flush()


def feature_stream(tokenizer, name: str, divisor: float | None) -> FeatureStream:
    floor = None if tokenizer.relative_floor is None else tokenizer.relative_floor.floor
    return FeatureStream(tokenizer.frontend, name, divisor, floor)


def stream_stats(tokenizer, chunks: Iterable[torch.Tensor], name: str, divisor: float | None = None) -> FeatureStats:
    """The statistics pass: the clip's exact per-channel statistics (over the frames the tokenizer's variant
    counts), without holding its features. Equal to the one-shot statistics (exact, order-free sums)."""
    stats, stream = FeatureStats(tokenizer.frontend.num_mel_bins), feature_stream(tokenizer, name, divisor)
    everything = FeatureStats(tokenizer.frontend.num_mel_bins)  # for a clip where no frame passes the gate

    def add(block):
        block, mask = tokenizer.gated(block)
        stats.update(block if mask is None else block[mask])
        if mask is not None and stats.count == 0:
            everything.update(block)

    for chunk in chunks:
        for block in stream.push(chunk):
            add(block)
    for block in stream.finish():
        add(block)
    return stats if stats.count else everything


class AudioTokenStream:
    """Push 16 kHz mono chunks, get (num_codebooks, t) tokens; the concatenation equals one-shot encoding."""

    def __init__(self, tokenizer, stats: FeatureStats, name: str = "stream", divisor: float | None = None):
        self.tokenizer, self.stats = tokenizer, stats
        self.features = feature_stream(tokenizer, name, divisor)

    def _tokens(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        stack = self.tokenizer.stack
        # the blocks are the feature stream's fresh output (gated in place already): normalised in place
        stacked = [stack_frames(self.stats.normalize_(self.tokenizer.gated(b)[0]), stack) for b in blocks]
        return self.tokenizer.quantize_stacked(stacked)

    def push(self, samples: torch.Tensor) -> torch.Tensor:
        return self._tokens(self.features.push(samples))

    def finish(self) -> torch.Tensor:
        return self._tokens(self.features.finish())
