"""What every log-mel frontend shares: framing with edge padding, and fixed-size frame blocks.

A frontend is a per-frame transform (`frame_inputs` prepares one frame's samples, `features`
turns a block of prepared frames into log-mel rows) plus a framing rule (window, hop, edge
padding, frame count). Frames are always transformed in blocks of exactly `BLOCK_FRAMES` rows
(a partial block is filled up with unused rows): BLAS rounds a row differently when the number of rows
changes (matrix-vector paths for tiny inputs), so a fixed block shape is what makes one-shot,
batched and streamed features bit-identical. It also bounds the working memory.
"""
from __future__ import annotations

import math
import threading

import torch

BLOCK_FRAMES = 1024  # 10.24 s of 10 ms frames; a multiple of every supported stack size


class FrameFrontend:
    """Base class: subclasses set the constants below and implement `frame_inputs` / `features`."""

    name = "base"
    sample_rate: int = 16000
    frame_length: int  # samples per analysis window
    frame_shift: int  # hop in samples
    num_mel_bins: int
    left_pad: int = 0  # samples mirrored in front of the signal (centred frames)
    pad_mode: str = "none"  # "reflect" (edge sample not repeated), "symmetric" (repeated) or "none"

    # ---- framing -----------------------------------------------------------------------------
    def num_frames(self, num_samples: int) -> int:
        raise NotImplementedError

    def min_samples(self) -> int:
        """Shortest clip that yields one frame (and, for reflect padding, can be mirrored)."""
        n = 1
        while self.num_frames(n) < 1:
            n += 1
        return max(n, self.max_pad() + 1) if self.pad_mode != "none" else n

    def max_pad(self) -> int:
        """Samples that may be mirrored at either edge (the tail a stream must keep until the end)."""
        return self.left_pad if self.pad_mode != "none" else 0

    def right_pad(self, num_samples: int) -> int:
        """Samples needed after the signal so that its last frame is complete."""
        frames = self.num_frames(num_samples)
        needed = (frames - 1) * self.frame_shift + self.frame_length - self.left_pad
        return max(0, needed - num_samples)

    def mirror(self, edge: torch.Tensor, count: int, side: str) -> torch.Tensor:
        """`count` mirrored samples for the left or right edge, from that edge's samples."""
        if count == 0:
            return edge[:0]
        skip = 1 if self.pad_mode == "reflect" else 0
        if side == "left":
            return edge[skip: skip + count].flip(0)
        return edge[len(edge) - skip - count: len(edge) - skip].flip(0)

    def padded(self, waveform: torch.Tensor) -> torch.Tensor:
        """The whole clip with its edge padding, ready for snip-edges framing."""
        n = waveform.shape[-1]
        right = self.right_pad(n)
        if self.pad_mode == "none":
            return waveform if right == 0 else torch.cat([waveform, waveform.new_zeros(right)])
        return torch.cat([self.mirror(waveform, self.left_pad, "left"), waveform,
                          self.mirror(waveform, right, "right")])

    # ---- per-frame transform ------------------------------------------------------------------
    fft_size: int  # width of the frame buffer: frame_length, or more for zero-padded FFTs

    def frame_inputs(self, segment: torch.Tensor, count: int, out: torch.Tensor, aux: torch.Tensor) -> None:
        """Write `count` frames starting at segment[0] (hop `frame_shift`) into out[:, :frame_length]
        (columns beyond it are zero) and any per-frame scalar into aux (count,).

        Row-local: a frame's row depends only on that frame's own samples.
        """
        raise NotImplementedError

    def mel_power(self, frames: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        """A block of prepared frames (BLOCK_FRAMES, fft_size) -> mel power rows (BLOCK_FRAMES, num_mel_bins)."""
        raise NotImplementedError

    def log(self, power: torch.Tensor) -> torch.Tensor:
        """The frontend's log, in place (natural for Kaldi, log10 for Whisper)."""
        return power.log_()

    def power_scale(self) -> float:
        """Mel power (summed over channels) of a frame of white noise with mean power 1, about: the factor
        that turns a clip level (mean power of samples) into the mel-power domain of this frontend
        (Parseval: the half spectrum holds fft_size / 2 * sum(window^2) of it, times the filters' mean
        total weight per bin). Only where a relative floor sits depends on it, in dB."""
        weights = self.mel_weights().double().sum(dim=1)
        covered = weights[weights > 0]
        gain = float(covered.sum()) / weights.numel()
        return self.sample_scale() ** 2 * float((self.window.double() ** 2).sum()) * self.fft_size / 2 * gain

    def sample_scale(self) -> float:
        """The factor samples are multiplied by before analysis (Kaldi's int16 scale)."""
        return 1.0

    def mel_weights(self) -> torch.Tensor:
        """The (bins, num_mel_bins) filter matrix."""
        raise NotImplementedError

    def features(self, frames: torch.Tensor, aux: torch.Tensor,
                 divisors: torch.Tensor | None = None, floor: float | None = None) -> torch.Tensor:
        """Prepared frames -> log-mel rows. Without `divisors`: log of the power floored at the frontend's
        absolute `log_floor` (v1). With `divisors` (BLOCK_FRAMES, 1): log(max(power / divisor, floor)), a floor
        relative to each row's clip level; power-of-two gains then give bit-identical rows."""
        power = self.mel_power(frames, aux)
        if divisors is None:
            return self.log(power.clamp_min_(self.log_floor))
        return self.log(power.div_(divisors).clamp_min_(floor))

    def config(self) -> dict:
        raise NotImplementedError

    # ---- whole clips ----------------------------------------------------------------------------
    def check_length(self, num_samples: int, name: str = "waveform") -> None:
        if num_samples < self.min_samples():
            raise ValueError(f"{name}: audio is too short: {num_samples} samples "
                             f"({num_samples / self.sample_rate * 1000:.1f} ms); the {self.name} frontend "
                             f"needs at least {self.min_samples()} samples at {self.sample_rate} Hz")

    def block_features(self, pieces: list[tuple[torch.Tensor, int]], divisors: list[float] | None = None,
                       floor: float | None = None) -> torch.Tensor:
        """(segment, frame count) pieces, together at most BLOCK_FRAMES frames -> features of those frames.

        The block is always BLOCK_FRAMES rows, so every frame goes through the FFT and the mel
        matrix product in a matrix of the same shape. `divisors` (one per piece, with `floor`) selects
        the relative floor (see `features`).
        """
        frames, aux, rows = self._block_buffers()
        row = 0
        for i, (segment, count) in enumerate(pieces):
            self.frame_inputs(segment, count, frames[row: row + count], aux[row: row + count])
            if divisors is not None:
                rows[row: row + count] = divisors[i]
            row += count
        # rows past `row` keep earlier finite frames: rows are independent, and those outputs are dropped
        return self.features(frames, aux, None if divisors is None else rows, floor)[:row]

    def _block_buffers(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This thread's reusable (BLOCK_FRAMES, fft_size) frame buffer (zero past frame_length) and aux.

        One set per inference-mode state: buffers made under torch.inference_mode cannot be updated in place
        outside it, so a tokenizer first used under inference_mode keeps working afterwards.
        """
        key = "buffers_inference" if torch.is_inference_mode_enabled() else "buffers"
        buffers = getattr(self._local, key, None)
        if buffers is None:
            buffers = (torch.zeros(BLOCK_FRAMES, self.fft_size), torch.zeros(BLOCK_FRAMES),
                       torch.ones(BLOCK_FRAMES, 1))
            setattr(self._local, key, buffers)
        return buffers

    def __getstate__(self) -> dict:
        """Pickle / deepcopy without the per-thread buffers (a cache; a threading.local does not pickle), so a
        tokenizer already used can still go to worker processes and Ray actors."""
        state = self.__dict__.copy()
        state.pop("_thread_local", None)
        return state

    @property
    def _local(self) -> threading.local:
        local = self.__dict__.get("_thread_local")
        if local is None:
            local = self.__dict__.setdefault("_thread_local", threading.local())
        return local

    def segment_for(self, padded: torch.Tensor, first: int, count: int) -> torch.Tensor:
        start = first * self.frame_shift
        return padded[start: start + (count - 1) * self.frame_shift + self.frame_length]

    def __call__(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(samples,) -> ((frames, mels), frames); (batch, samples) + lengths -> padded (B, F, mels), (B,)."""
        if waveform.ndim == 1:
            feats = self.clip_features([waveform])[0]
            return feats, torch.tensor(feats.shape[0])
        if lengths is None:
            lengths = torch.full((waveform.shape[0],), waveform.shape[1])
        clips = [waveform[i, : int(n)] for i, n in enumerate(lengths)]
        feats = self.clip_features(clips)
        counts = torch.tensor([f.shape[0] for f in feats])
        out = feats[0].new_zeros(len(feats), int(counts.max()), self.num_mel_bins)
        for i, f in enumerate(feats):
            out[i, : f.shape[0]] = f
        return out, counts

    def clip_features(self, clips: list[torch.Tensor], names: list[str] | None = None,
                      divisors: list[float] | None = None, floor: float | None = None) -> list[torch.Tensor]:
        """Features (frames, mels) of each clip, with frames of all clips packed into shared fixed-size blocks."""
        return [torch.cat(r) if len(r) > 1 else r[0]
                for r in self.clip_feature_blocks(clips, names, divisors, floor)]

    def clip_feature_blocks(self, clips: list[torch.Tensor], names: list[str] | None = None,
                            divisors: list[float] | None = None, floor: float | None = None
                            ) -> list[list[torch.Tensor]]:
        """Each clip's features as consecutive pieces (for a single clip: blocks of BLOCK_FRAMES rows).

        `divisors` (one per clip) and `floor`: the relative floor of `features`."""
        names = names or [f"waveform[{i}]" for i in range(len(clips))]
        jobs = []  # (clip index, padded signal, frame count)
        for i, clip in enumerate(clips):
            clip = clip.to(torch.float32)
            self.check_length(clip.shape[-1], names[i])
            jobs.append((i, self.padded(clip), self.num_frames(clip.shape[-1])))
        results: list[list[torch.Tensor]] = [[] for _ in clips]
        pending: list[tuple[int, tuple[torch.Tensor, int]]] = []
        room = BLOCK_FRAMES

        def flush():
            nonlocal pending, room
            if pending:
                out = self.block_features([p for _, p in pending],
                                          None if divisors is None else [divisors[i] for i, _ in pending], floor)
                row = 0
                for clip_index, piece in pending:
                    results[clip_index].append(out[row: row + piece[1]])
                    row += piece[1]
            pending, room = [], BLOCK_FRAMES

        for i, padded, total in jobs:
            first = 0
            while first < total:
                count = min(room, total - first)
                pending.append((i, (self.segment_for(padded, first, count), count)))
                first += count
                room -= count
                if room == 0:
                    flush()
        flush()
        return results


class BandedProduct:
    """x @ weights for filter-bank weights (bins, filters): each group of neighbouring filters only
    touches a contiguous range of bins, so the product is done group by group over those bins alone
    (about half the work of the dense product for 80 mel filters, and the same result up to rounding)."""

    def __init__(self, weights: torch.Tensor, groups: int = 4):
        filters = weights.shape[1]
        bounds = torch.linspace(0, filters, min(groups, filters) + 1).round().long().tolist()
        self.parts = []
        for j0, j1 in zip(bounds[:-1], bounds[1:]):
            rows = (weights[:, j0:j1] != 0).any(dim=1).nonzero().flatten()
            lo, hi = (int(rows.min()), int(rows.max()) + 1) if rows.numel() else (0, 1)
            self.parts.append((lo, hi, weights[lo:hi, j0:j1].contiguous()))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[:, lo:hi] @ w for lo, hi, w in self.parts], dim=1)


def next_pow2(n: int) -> int:
    return 1 << math.ceil(math.log2(n))
