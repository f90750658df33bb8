"""Layouts of multi-codebook audio codes as one flat run of LLM ids, each exactly reversible, parsed strictly or
leniently after generation.

Every layout maps codes to ids `offset .. offset + size - 1` (`size` = the ids it uses) and back:
- `FrameMajor`: frame by frame, codebook 0, 1, ..., K-1 of frame t, each codebook its own id range (the
  TokenStream's codec block body; Sesame CSM's per-frame order).
- `SnacFrames`: SNAC's multi-rate levels, one coarse frame at a time in depth-first order of the level tree
  (Orpheus TTS at 24 kHz, strides [4, 2, 1]: l0[t], l1[2t], l2[4t], l2[4t+1], l1[2t+1], l2[4t+2], l2[4t+3]),
  every position of the frame its own id range (Orpheus: id = 128266 + position * 4096 + code, `offset=128266`).
- `DelayPattern`: codebook k shifted right by `delays[k]` steps (MusicGen: delays 0, 1, ..., K-1), every step
  one id per codebook (its own range) or the padding id where a shifted codebook has no code; `delay_grid` /
  `undelay_grid` give the (K, steps) grid for models with one output head per codebook.
- `SemanticFirst`: Mimi / Moshi's order, a delay pattern whose semantic codebook(s) lead the acoustic ones by
  `acoustic_delay` steps (Moshi: 1), so a step holds frame t's semantic code and frame t-1's acoustic codes.
Each takes `codebooks=n` (SNAC: `levels=n`): lay out only the first n codebooks / levels (a lower bitrate, as
the residual VQs are coarse to fine); `encode` then takes codes with at least n codebooks and drops the rest.

`decode(ids, strict=True, fill_code=0)` returns `DecodedCodes` (`.codes`, `.repairs`). Strict decoding raises
`StreamDecodeError` naming an offending position; lenient decoding drops an incomplete last frame (a
generation cut off mid-frame, or a delay pattern's frames whose later codebooks were never generated), replaces
an id outside its position's range by `fill_code`, and lists each change as a `Repair`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from .decoder import MAX_REPAIRS
from .errors import Repair, StreamDecodeError
from .ids import as_ids


@dataclass
class DecodedCodes:
    """Codes decoded from ids (int64 (K, T)) and what lenient decoding changed (empty when clean)."""

    codes: torch.Tensor
    repairs: list[Repair] = field(default_factory=list)


def _positive(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _sizes(codebook_sizes, name: str = "codebook_sizes") -> tuple[int, ...]:
    try:
        sizes = tuple(codebook_sizes)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of positive ints, got {codebook_sizes!r}") from None
    if not sizes:
        raise ValueError(f"{name}: no codebooks")
    return tuple(_positive(k, f"{name}[{i}]") for i, k in enumerate(sizes))


def _prefix(value, total: int, name: str) -> int:
    if value is None:
        return total
    n = _positive(value, name)
    if n > total:
        raise ValueError(f"{name}={n}: only {total} available")
    return n


def _codes(codes, rows: int, sizes: Sequence[int], what: str) -> np.ndarray:
    """(K >= rows, T) integer codes -> int64 numpy (rows, T), each row checked against its codebook size."""
    tensor = torch.as_tensor(codes)
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
        raise ValueError(f"{what}: expected integer codes, got dtype {tensor.dtype}")
    if tensor.dim() != 2 or tensor.shape[0] < rows:
        raise ValueError(f"{what}: expected codes ({rows} or more codebooks, frames), got shape {tuple(tensor.shape)}")
    array = tensor[:rows].detach().cpu().numpy().astype(np.int64)
    limits = np.asarray(sizes, dtype=np.int64)[:, None]
    bad = (array < 0) | (array >= limits)
    if bad.any():
        k, t = np.argwhere(bad)[0]
        raise ValueError(f"{what}: code {array[k, t]} of codebook {k}, frame {t} is outside 0..{limits[k, 0] - 1}")
    return array


class _Repairs:
    """Strict: raise at the first problem; lenient: collect at most MAX_REPAIRS repairs, then count the rest."""

    def __init__(self, strict: bool):
        self.strict, self.items, self.unlisted = strict, [], 0

    def problem(self, position: int, kind: str, message: str) -> None:
        if self.strict:
            raise StreamDecodeError(position, message)
        if len(self.items) < MAX_REPAIRS:
            self.items.append(Repair(int(position), kind, message))
        else:
            self.unlisted += 1

    def done(self, end: int) -> list[Repair]:
        if self.unlisted:
            self.items.append(Repair(end, "unlisted_repairs", f"{self.unlisted} further repairs not listed"))
        return self.items


def _read(ids, strict: bool) -> tuple[np.ndarray, np.ndarray, _Repairs]:
    """(ids, mask of entries that are not integer ids, repairs); strict refuses such entries."""
    flat, not_ids = as_ids(ids)
    repairs = _Repairs(strict)
    invalid = np.zeros(flat.shape, dtype=bool)
    for position in sorted(not_ids):
        repairs.problem(position, "foreign_code", f"{not_ids[position]} (replaced by a fill code)")
        invalid[position] = True
    return flat, invalid, repairs


class FrameLayout:
    """P positions per frame, position p holding code row `rows[p]` in its own id range of `sizes[p]` ids."""

    name = "frame_layout"

    def __init__(self, sizes: Sequence[int], rows: Sequence[int], num_rows: int, offset: int = 0):
        self.position_sizes = np.asarray(sizes, dtype=np.int64)
        self.position_rows = np.asarray(rows, dtype=np.int64)
        self.num_rows = int(num_rows)
        if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or offset < 0:
            raise ValueError(f"offset must be a non-negative int, got {offset!r}")
        self.offset = int(offset)
        self.position_offsets = self.offset + np.concatenate([[0], np.cumsum(self.position_sizes)[:-1]])
        self.row_sizes = np.zeros(self.num_rows, dtype=np.int64)
        self.row_sizes[self.position_rows] = self.position_sizes

    @property
    def per_frame(self) -> int:
        return len(self.position_sizes)

    @property
    def size(self) -> int:
        """The number of ids the layout uses (offset .. offset + size - 1)."""
        return int(self.position_sizes.sum())

    def encode(self, codes) -> np.ndarray:
        """Codes (rows, T) -> ids (T * per_frame,)."""
        array = _codes(codes, self.num_rows, self.row_sizes, self.name)
        return (array[self.position_rows] + self.position_offsets[:, None]).T.reshape(-1)

    def decode(self, ids, *, strict: bool = True, fill_code: int = 0) -> DecodedCodes:
        flat, invalid, repairs = _read(ids, strict)
        p = self.per_frame
        whole = len(flat) - len(flat) % p
        if whole != len(flat):
            repairs.problem(whole, "truncated_frame", f"{self.name}: {len(flat)} ids end inside a frame "
                            f"({len(flat) % p} of {p} ids; partial frame dropped)")
        grid = flat[:whole].reshape(-1, p)
        values = grid - self.position_offsets
        out_of_range = (values < 0) | (values >= self.position_sizes)
        bad = out_of_range | invalid[:whole].reshape(-1, p)  # entries that are not ids: already reported
        for t, j in np.argwhere(out_of_range & ~invalid[:whole].reshape(-1, p)):
            repairs.problem(t * p + j, "foreign_code", f"{self.name}: id {grid[t, j]} at frame {t}, position {j} "
                            f"is outside that position's ids {self.position_offsets[j]}.."
                            f"{self.position_offsets[j] + self.position_sizes[j] - 1} (replaced by {fill_code})")
        values[bad] = fill_code
        codes = np.zeros((self.num_rows, values.shape[0]), dtype=np.int64)
        codes[self.position_rows] = values.T
        return DecodedCodes(torch.from_numpy(codes), repairs.done(len(flat)))


class FrameMajor(FrameLayout):
    """Frame by frame, codebook 0 .. n-1 of each frame, codebook k in ids offset + sum(sizes[:k]) + code."""

    name = "frame_major"

    def __init__(self, codebook_sizes: Sequence[int], *, offset: int = 0, codebooks: int | None = None):
        sizes = _sizes(codebook_sizes)
        n = _prefix(codebooks, len(sizes), "codebooks")
        super().__init__(sizes[:n], range(n), n, offset)


def snac_order(vq_strides: Sequence[int]) -> list[tuple[int, int]]:
    """(level, index within the frame) of each position of one coarse frame, depth first: a level-k code is
    followed by its children at level k + 1 (vq_strides[k] / vq_strides[k+1] of them)."""
    strides = _sizes(vq_strides, "vq_strides")
    if any(strides[k] % strides[k + 1] for k in range(len(strides) - 1)):
        raise ValueError(f"vq_strides {list(strides)}: each stride must be a multiple of the next (nested rates)")
    order: list[tuple[int, int]] = []

    def visit(level: int, index: int) -> None:
        order.append((level, index))
        if level + 1 < len(strides):
            ratio = strides[level] // strides[level + 1]
            for child in range(ratio):
                visit(level + 1, index * ratio + child)

    visit(0, 0)
    return order


class SnacFrames(FrameLayout):
    """SNAC frame codes (K, T_0) (rows level by level, time order inside a level, as `SnacCodec.encode`) ->
    one coarse frame at a time in depth-first order, position p in ids offset + p * codebook_size + code."""

    name = "snac_frames"

    def __init__(self, codebook_size: int, vq_strides: Sequence[int], *, offset: int = 0, levels: int | None = None):
        self.codebook_size = _positive(codebook_size, "codebook_size")
        strides = _sizes(vq_strides, "vq_strides")
        order = snac_order(strides)
        n = _prefix(levels, len(strides), "levels")
        slots = [strides[0] // s for s in strides]
        first_row = np.concatenate([[0], np.cumsum(slots)]).tolist()
        kept = [(level, index) for level, index in order if level < n]
        self.vq_strides, self.levels = list(strides), n
        super().__init__([self.codebook_size] * len(kept), [first_row[lv] + i for lv, i in kept], first_row[n], offset)

    @classmethod
    def from_code_spec(cls, spec, **options) -> "SnacFrames":
        """The layout of a SNAC codec's codes (its code_spec: extra["vq_strides"], the codebook size)."""
        strides = spec.extra.get("vq_strides") if spec.extra.get("layout") == "snac_frames" else None
        if strides is None:
            raise ValueError("SnacFrames.from_code_spec needs a SNAC codec's code_spec (extra layout 'snac_frames')")
        return cls(spec.codebook_size, strides, **options)


def delay_grid(codes, delays: Sequence[int], pad: int) -> torch.Tensor:
    """(K, T) codes -> (K, T + max(delays)) with codebook k shifted right by delays[k] and `pad` elsewhere."""
    codes = torch.as_tensor(codes)
    if codes.dim() != 2 or codes.shape[0] != len(delays):
        raise ValueError(f"codes must be ({len(delays)}, frames), got shape {tuple(codes.shape)}")
    frames, most = codes.shape[1], max(delays)
    grid = torch.full((codes.shape[0], frames + most), int(pad), dtype=torch.int64)
    for k, d in enumerate(delays):
        grid[k, d: d + frames] = codes[k]
    return grid


def undelay_grid(grid, delays: Sequence[int]) -> torch.Tensor:
    """The inverse of `delay_grid`: (K, S) -> (K, S - max(delays)) codes."""
    grid = torch.as_tensor(grid)
    frames = grid.shape[-1] - max(delays)
    if grid.dim() != 2 or grid.shape[0] != len(delays) or frames < 0:
        raise ValueError(f"grid must be ({len(delays)}, steps >= {max(delays)}), got shape {tuple(grid.shape)}")
    return torch.stack([grid[k, d: d + frames] for k, d in enumerate(delays)]).to(torch.int64)


class DelayPattern:
    """Codebook k delayed by delays[k] steps (default k: MusicGen), flattened step by step: ids of step s are
    codebook 0 .. K-1 in turn, codebook k in ids offset + sum(sizes[:k]) + code, or `pad_id` where codebook k
    has no code at step s (default: the id right after the code ranges, `offset + sum(sizes)`)."""

    name = "delay_pattern"

    def __init__(self, codebook_sizes: Sequence[int], *, delays: Sequence[int] | None = None, offset: int = 0,
                 pad_id: int | None = None, codebooks: int | None = None):
        sizes = _sizes(codebook_sizes)
        n = _prefix(codebooks, len(sizes), "codebooks")
        delays = list(range(len(sizes))) if delays is None else list(delays)
        if len(delays) != len(sizes) or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0
                                            for d in delays):
            raise ValueError(f"delays must give a non-negative int per codebook ({len(sizes)}), got {delays!r}")
        self.frame = FrameMajor(sizes[:n], offset=offset)
        self.delays = [int(d) for d in delays[:n]]
        self.pad_id = self.frame.offset + self.frame.size if pad_id is None else int(pad_id)
        if self.frame.offset <= self.pad_id < self.frame.offset + self.frame.size:
            raise ValueError(f"pad_id {self.pad_id} lies inside the code ids {self.frame.offset}.."
                             f"{self.frame.offset + self.frame.size - 1}")

    @property
    def num_codebooks(self) -> int:
        return len(self.delays)

    @property
    def offset(self) -> int:
        return self.frame.offset

    @property
    def size(self) -> int:
        """Ids used: the code ranges, plus the padding id when it follows them (the default)."""
        return self.frame.size + (self.pad_id == self.offset + self.frame.size)

    def steps_for(self, frames: int) -> int:
        return int(frames) + max(self.delays)

    def encode(self, codes) -> np.ndarray:
        """Codes (K, T) -> ids ((T + max(delays)) * K,)."""
        array = _codes(codes, self.num_codebooks, self.frame.position_sizes, self.name)
        ids = torch.from_numpy(array + self.frame.position_offsets[:, None])
        return delay_grid(ids, self.delays, self.pad_id).T.reshape(-1).numpy()

    def decode(self, ids, *, strict: bool = True, fill_code: int = 0) -> DecodedCodes:
        flat, invalid, repairs = _read(ids, strict)
        k = self.num_codebooks
        whole = len(flat) - len(flat) % k
        if whole != len(flat):
            repairs.problem(whole, "truncated_frame", f"{self.name}: {len(flat)} ids end inside a step "
                            f"({len(flat) % k} of {k} codebooks; partial step dropped)")
        grid = flat[:whole].reshape(-1, k).T  # (K, S)
        bad_entry = invalid[:whole].reshape(-1, k).T
        steps, most = grid.shape[1], max(self.delays)
        frames = max(0, steps - most)
        if 0 < steps < most:
            repairs.problem(whole, "truncated_frame", f"{self.name}: {steps} steps hold no complete frame "
                            f"(the delays need {most} steps more than the frames)")
        offsets, sizes = self.frame.position_offsets, self.frame.position_sizes
        codes = np.zeros((k, frames), dtype=np.int64)
        dropped = 0
        for j, d in enumerate(self.delays):
            cells = grid[j, d: d + frames]
            values = cells - offsets[j]
            out_of_range = (values < 0) | (values >= sizes[j])
            bad = out_of_range | bad_entry[j, d: d + frames]  # entries that are not ids: already reported
            for t in np.flatnonzero(out_of_range & ~bad_entry[j, d: d + frames]):
                what = "the padding id" if cells[t] == self.pad_id else f"id {cells[t]}"
                repairs.problem((d + t) * k + j, "foreign_code", f"{self.name}: {what} where codebook {j} of "
                                f"frame {t} was expected (replaced by {fill_code})")
            values[bad] = fill_code
            codes[j] = values
            for s in [*range(min(d, steps)), *range(d + frames, steps)]:
                if grid[j, s] != self.pad_id and not bad_entry[j, s]:
                    if s >= d + frames and not strict:
                        dropped += 1  # a code of a frame whose later codebooks were never generated
                        continue
                    repairs.problem(s * k + j, "stray_token", f"{self.name}: id {grid[j, s]} at step {s} where "
                                    f"codebook {j} is padding ({self.pad_id}; or the sequence was cut off)")
        if dropped:
            repairs.problem(whole, "truncated_tail", f"{self.name}: {dropped} codes of incomplete frames after frame "
                            f"{frames - 1} dropped (the sequence ends before their last codebooks)")
        return DecodedCodes(torch.from_numpy(codes), repairs.done(len(flat)))


class SemanticFirst(DelayPattern):
    """Mimi / Moshi order: the first `semantic` codebooks undelayed, the acoustic ones `acoustic_delay` steps
    later (Moshi: 1; 0 gives the frame-major order), flattened step by step as `DelayPattern`."""

    name = "semantic_first"

    def __init__(self, codebook_sizes: Sequence[int], *, semantic: int = 1, acoustic_delay: int = 1,
                 offset: int = 0, pad_id: int | None = None, codebooks: int | None = None):
        sizes = _sizes(codebook_sizes)
        semantic = _prefix(semantic, len(sizes), "semantic")
        if isinstance(acoustic_delay, bool) or not isinstance(acoustic_delay, (int, np.integer)) or acoustic_delay < 0:
            raise ValueError(f"acoustic_delay must be a non-negative int, got {acoustic_delay!r}")
        delays = [0] * semantic + [int(acoustic_delay)] * (len(sizes) - semantic)
        super().__init__(sizes, delays=delays, offset=offset, pad_id=pad_id, codebooks=codebooks)
