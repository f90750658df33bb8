"""Constrained generation: for any prefix of ids, the set of ids that keeps the stream decodable.

A `Constraint` is built from a `Vocabulary` and what the generated content may be (a fixed image grid,
images only, a number of audio frames, a maximum number of blocks, ...). Every sequence it allows parses
with `TokenStream.decode(strict=True)` once it is complete, and every sequence the encoder writes that
fits the options is allowed. It is
- vectorised: each distinct allowed set is one cached id mask (a few dozen for any vocabulary), so a step
  is one table lookup, never a loop over ids;
- incremental: a `ConstraintState` moves by one id in O(1);
- batch aware: `ConstraintBatch` keeps one state per row and gives the (batch, vocab) mask of a step.

Adapters: `hf_logits_processor(...)` (a `transformers` LogitsProcessor, mmtok.stream.hf; sampling and beam
search), `request_logits_processor(...)` (a per-sequence `(prompt_ids, output_ids, logits)` hook, vLLM's
per-request convention) and `Constraint.prefix_function()` (prefix ids -> allowed mask, for engines that
hand over the whole prefix).
The prompt is read with the plain layout rules (any grid, any number of blocks, `<bos>` / `<pad>` allowed);
the options apply from the first generated id on.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterable, Sequence

import numpy as np
import torch

from .grammar import DONE, Grammar, GrammarState, Rules, block_names
from .vocabulary import Vocabulary


class ConstraintError(ValueError):
    """An id the constraint does not allow at that position (`position` is its index in the sequence)."""

    def __init__(self, position: int, message: str):
        self.position = int(position)
        super().__init__(f"at token position {position}: {message}")


class Constraint:
    """The allowed next ids for sequences over `vocab`. Options (all optional):

    text: free text between blocks (False: blocks only, e.g. image generation).
    blocks: the block kinds that may be generated, from "image", "audio", "audio_codec", "video".
    image_grid: one (h, w) grid or a list of them that generated images (and video frames) must have.
    audio_frames / codec_frames / video_frames: an exact count or (min, max) (max None: unbounded).
    video_audio: whether a generated video may carry an audio / codec track.
    timestamps: whether every video frame must carry a timestamp.
    min_blocks / max_blocks: blocks (at the top level) before `<eos>` is allowed / after which no
    block may begin.
    """

    def __init__(self, vocab: Vocabulary, *, text: bool = True, blocks: Iterable[str] | None = None,
                 image_grid=None, audio_frames=None, codec_frames=None, video_frames=None,
                 video_audio: bool = True, timestamps: bool = True, min_blocks: int = 0,
                 max_blocks: int | None = None):
        if not isinstance(vocab, Vocabulary):
            raise ValueError(f"vocab must be an mmtok Vocabulary, got {type(vocab).__name__}")
        self.vocab = vocab
        have = block_names(vocab)
        blocks = have if blocks is None else tuple(blocks)
        missing = [b for b in blocks if b not in have]
        if missing:
            raise ValueError(f"blocks={list(blocks)}: the vocabulary has no codes for {missing} (it has {list(have)})")
        min_blocks = _count(min_blocks, "min_blocks")
        if max_blocks is not None:
            max_blocks = _count(max_blocks, "max_blocks")
            if max_blocks < min_blocks:
                raise ValueError(f"max_blocks={max_blocks} is below min_blocks={min_blocks}")
        if min_blocks and not blocks:
            raise ValueError(f"min_blocks={min_blocks} but no block kind may be generated")
        if not text and not blocks:
            raise ValueError("text=False and no blocks: nothing could be generated but <eos>")
        self.rules = Rules(
            text=bool(text), blocks=blocks, grids=_grids(image_grid, vocab),
            audio_frames=_frames(audio_frames, "audio_frames"), codec_frames=_frames(codec_frames, "codec_frames"),
            video_frames=_frames(video_frames, "video_frames"), video_audio=bool(video_audio),
            timestamps=bool(timestamps), min_blocks=min_blocks, max_blocks=max_blocks,
        )
        self.grammar = Grammar(vocab, self.rules)
        self.prompt_grammar = Grammar(vocab, Rules(prompt=True, blocks=have, video_frames=(0, None),
                                                   audio_frames=(0, None), codec_frames=(0, None),
                                                   timestamps=False))
        self._rows: dict[tuple, int] = {}
        self._masks: list[np.ndarray] = []
        self._tables: dict[tuple, torch.Tensor] = {}
        self._runs: list[list[tuple[int, int]]] = []

    # ---- masks -----------------------------------------------------------------------------------
    def _row(self, key: tuple) -> int:
        row = self._rows.get(key)
        if row is None:
            mask = np.zeros(self.vocab.size, dtype=bool)
            for atom in key:
                self.grammar.atom_mask(atom, mask)
            mask.flags.writeable = False  # shared by every state in that place: callers get a read-only view
            row = self._rows[key] = len(self._masks)
            self._masks.append(mask)
        return row

    def forbidden_runs(self, row: int) -> list[tuple[int, int]]:
        """The forbidden ids of one cached mask as [start, end) runs (a handful: the allowed sets are unions of
        whole ranges), so applying a mask writes only the forbidden scores."""
        while len(self._runs) <= row:
            mask = self._masks[len(self._runs)]
            edges = np.flatnonzero(np.diff(np.concatenate([[True], mask, [True]]).astype(np.int8)))
            self._runs.append([(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])])
        return self._runs[row]

    def row_of(self, state: "ConstraintState") -> int:
        """Index of the state's allowed mask in the cached table."""
        return self._row(state.grammar.allowed_key(state.s))

    def allowed_of(self, state: "ConstraintState") -> np.ndarray:
        return self._masks[self.row_of(state)]

    def forbidden_table(self, device=None) -> torch.Tensor:
        """(rows, vocab) bool: True where an id is forbidden, one row per cached allowed set."""
        device = torch.device("cpu") if device is None else torch.device(device)
        key = (str(device), len(self._masks))
        table = self._tables.get(key)
        if table is None:
            table = ~torch.from_numpy(np.stack(self._masks)).to(device)
            self._tables = {key: table}
        return table

    @property
    def cached_masks(self) -> int:
        """How many distinct allowed sets (one mask each) the constraint has met so far."""
        return len(self._masks)

    @property
    def mask_bytes(self) -> int:
        """Memory of the cached masks (numpy rows plus the current torch table)."""
        return sum(m.nbytes for m in self._masks) + sum(t.numel() * t.element_size() for t in self._tables.values())

    # ---- states ----------------------------------------------------------------------------------
    def state(self, prompt: Sequence[int] = ()) -> "ConstraintState":
        """A state after reading `prompt` (read with the plain layout rules; raises ConstraintError if the
        prompt itself breaks the layout)."""
        state = ConstraintState(self)
        state.read_prompt(prompt)
        return state

    def batch(self, prompts: Sequence[Sequence[int]]) -> "ConstraintBatch":
        return ConstraintBatch(self, prompts)

    def allowed_mask(self, ids: Sequence[int], *, prompt_length: int = 0) -> np.ndarray:
        """Framework-free: the (vocab,) bool mask of ids allowed after `ids`, whose first `prompt_length`
        ids are the prompt. Replays the whole prefix; `prefix_function` caches."""
        ids = _ints(ids, "ids")
        if not 0 <= prompt_length <= len(ids):
            raise ValueError(f"prompt_length={prompt_length} outside 0..{len(ids)} (the prefix length)")
        state = self.state(ids[:prompt_length])
        state.extend(ids[prompt_length:])
        return state.allowed().copy()

    def check(self, ids: Sequence[int], *, prompt_length: int = 0) -> None:
        """Raise ConstraintError at the first id of `ids` the constraint forbids."""
        ids = _ints(ids, "ids")
        state = self.state(ids[:prompt_length])
        state.extend(ids[prompt_length:])

    def prefix_function(self, *, prompt_length: int, cache_size: int = 4096):
        """A callable prefix ids -> (vocab,) bool numpy mask for engines that pass the whole prefix each step
        (prompt first). The state of each prefix is cached, so a prefix that extends a seen one by one id
        costs one transition (plus hashing the prefix)."""
        return PrefixFunction(self, prompt_length, cache_size)

    def __repr__(self) -> str:
        return f"Constraint({self.rules}, vocab={self.vocab.hash[:12]}, cached_masks={len(self._masks)})"


class ConstraintState:
    """One sequence's place in the grammar; `advance(id)` is O(1)."""

    __slots__ = ("constraint", "grammar", "s")

    def __init__(self, constraint: Constraint):
        self.constraint = constraint
        self.grammar = constraint.prompt_grammar
        self.s = GrammarState()

    def read_prompt(self, prompt: Sequence[int]) -> None:
        self.grammar = self.constraint.prompt_grammar
        for token in _ints(prompt, "prompt"):
            self.advance(token, where="prompt")
        self.grammar = self.constraint.grammar
        self.s.blocks = 0

    def allowed(self) -> np.ndarray:
        return self.constraint._masks[self.row()]

    def row(self) -> int:
        return self.constraint._row(self.grammar.allowed_key(self.s))

    def advance(self, token: int, *, where: str = "generated sequence") -> None:
        token = int(token)
        s = self.s
        if s.mode == DONE and token in (self.grammar.sp["pad"], self.grammar.sp["eos"]):
            s.position += 1
            return
        if not 0 <= token < self.constraint.vocab.size or not self.allowed()[token]:
            raise ConstraintError(s.position, f"id {token} is not allowed in the {where} here ({s})")
        self.grammar.advance(s, token)

    def extend(self, tokens: Iterable[int]) -> None:
        for token in tokens:
            self.advance(token)

    @property
    def done(self) -> bool:
        return self.s.mode == DONE

    def copy(self) -> "ConstraintState":
        other = ConstraintState.__new__(ConstraintState)
        other.constraint, other.grammar, other.s = self.constraint, self.grammar, self.s.copy()
        return other


class ConstraintBatch:
    """One ConstraintState per batch row; `forbidden(device)` is the (batch, vocab) mask of the next step."""

    def __init__(self, constraint: Constraint, prompts: Sequence[Sequence[int]]):
        self.constraint = constraint
        self.states = [constraint.state(p) for p in prompts]

    def __len__(self) -> int:
        return len(self.states)

    def advance(self, tokens: Sequence[int]) -> None:
        tokens = _ints(tokens, "tokens")
        if len(tokens) != len(self.states):
            raise ValueError(f"{len(tokens)} tokens for a batch of {len(self.states)}")
        for state, token in zip(self.states, tokens):
            state.advance(token)

    def rows(self) -> list[int]:
        return [state.row() for state in self.states]

    def forbidden(self, device=None) -> torch.Tensor:
        rows = self.rows()  # may add masks to the table, so before fetching it
        table = self.constraint.forbidden_table(device)
        return table[torch.tensor(rows, device=table.device)]

    def apply(self, scores: torch.Tensor) -> torch.Tensor:
        """Set forbidden ids of (batch, V') scores to -inf in place (V' >= vocab: ids past it are forbidden)."""
        if scores.ndim != 2 or scores.shape[0] != len(self.states) or scores.shape[1] < self.constraint.vocab.size:
            raise ValueError(f"scores must be (batch={len(self.states)}, >= {self.constraint.vocab.size}), got"
                             f" {tuple(scores.shape)}")
        size = self.constraint.vocab.size
        groups: dict[int, list[int]] = {}
        for i, row in enumerate(self.rows()):
            groups.setdefault(row, []).append(i)
        inf = float("-inf")
        for row, members in groups.items():
            runs = self.constraint.forbidden_runs(row)
            if len(members) == len(self.states):
                for start, end in runs:
                    scores[:, start:end] = inf
            else:
                index = torch.tensor(members, device=scores.device)
                for start, end in runs:
                    scores[index, start:end] = inf
        if scores.shape[1] > size:
            scores[:, size:] = inf
        return scores


class PrefixFunction:
    """prefix ids -> allowed mask, caching the state of recent prefixes (see Constraint.prefix_function)."""

    def __init__(self, constraint: Constraint, prompt_length: int, cache_size: int):
        self.constraint = constraint
        self.prompt_length = _count(prompt_length, "prompt_length")
        self.cache_size = max(1, int(cache_size))
        self._cache: OrderedDict[tuple, ConstraintState] = OrderedDict()

    def state(self, ids: Sequence[int]) -> ConstraintState:
        ids = tuple(int(i) for i in ids)
        if len(ids) < self.prompt_length:
            raise ValueError(f"prefix of {len(ids)} ids is shorter than the prompt ({self.prompt_length})")
        state = self._cache.get(ids)
        if state is not None:
            self._cache.move_to_end(ids)
            return state
        parent = self._cache.get(ids[:-1]) if len(ids) > self.prompt_length else None
        if parent is not None:
            state = parent.copy()
            state.advance(ids[-1])
        else:
            state = self.constraint.state(ids[: self.prompt_length])
            state.extend(ids[self.prompt_length:])
        self._cache[ids] = state
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return state

    def __call__(self, ids: Sequence[int]) -> np.ndarray:
        return self.state(ids).allowed()


def hf_logits_processor(vocab: Vocabulary, *, prompt_length: int | None = None, **options):
    """A `transformers` LogitsProcessor enforcing Constraint(vocab, **options) (e.g. image_grid=(h, w)).
    prompt_length: the length of the (padded) prompt handed to `generate`; None takes it from the first call."""
    from .hf import ConstrainedLogitsProcessor

    return ConstrainedLogitsProcessor(Constraint(vocab, **options), prompt_length=prompt_length)


def request_logits_processor(vocab: Vocabulary, **options):
    """A per-request processor `(prompt_ids, output_ids, logits) -> logits` enforcing Constraint(vocab,
    **options): the calling convention of vLLM's `SamplingParams(logits_processors=[...])` (V0 engine) and
    of other engines that call a hook per sequence and step (mmtok.stream.request_processor)."""
    from .request_processor import RequestLogitsProcessor

    return RequestLogitsProcessor(Constraint(vocab, **options))


# ---- option parsing ----------------------------------------------------------------------------------
def _count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return int(value)


def _frames(value, name: str) -> tuple[int, int | None]:
    if value is None:
        return (1, None)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
        return (int(value), int(value))
    try:
        low, high = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or (min, max), got {value!r}") from None
    low = _count(low, f"{name} min")
    if high is not None:
        high = _count(high, f"{name} max")
        if high < max(low, 1):
            raise ValueError(f"{name}={value!r}: max must be >= max(min, 1)")
    return (low, high)


def _grids(value, vocab: Vocabulary):
    if value is None:
        return None
    if len(value) == 2 and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
        value = [value]
    grids = []
    for grid in value:
        try:
            h, w = (int(v) for v in grid)
        except (TypeError, ValueError):
            raise ValueError(f"image_grid must be (h, w) or a list of (h, w), got {value!r}") from None
        if not (1 <= h <= vocab.max_grid and 1 <= w <= vocab.max_grid):
            raise ValueError(f"image_grid {h}x{w} outside the vocabulary's grid sides 1..{vocab.max_grid}")
        grids.append((h, w))
    if "image" not in vocab.ranges:
        raise ValueError("image_grid given but the vocabulary has no image codes")
    return tuple(sorted(set(grids)))


def _ints(ids, name: str) -> list[int]:
    if isinstance(ids, torch.Tensor):
        ids = ids.reshape(-1).tolist()
    elif isinstance(ids, np.ndarray):
        ids = ids.reshape(-1).tolist()
    try:
        return [int(i) for i in ids]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of ints") from None
