"""Constrained image generation in a released model's own layout (Chameleon / Anole, Lumina-mGPT, Emu3).

Once the prompt ends where the model's image body begins (Chameleon / Lumina-mGPT: after `<racm3:break>`;
Emu3: after `conv.image_prompt(h, w)`), an image of a fixed grid is a fixed *plan* of slots: image codes, or
one structural token (grid counts, end-of-line, end-of-frame, end-of-image), then the end of sequence.
`ImageConstraint(conv, grid)` walks that plan: O(1) per id, one cached mask per distinct slot. It is what
Emu3's prefix-constrained helper and Chameleon's image-token restriction do, for any of these layouts, and
it plugs into `hf_logits_processor`-style use through `convention_logits_processor`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .constraints import ConstraintError
from .conventions import Chameleon, Convention, Emu3, LuminaMGPT


class ImageConstraint:
    """Allowed next ids while generating one h x w image in `conv`'s layout, then its end of sequence."""

    def __init__(self, conv: Convention, grid: tuple[int, int], *, eos: bool = True):
        if not isinstance(conv, (Chameleon, Emu3)):
            raise ValueError(f"image constraints exist for chameleon / anole, lumina_mgpt and emu3, not {conv.name}")
        h, w = (int(v) for v in grid)
        if h < 1 or w < 1:
            raise ValueError(f"grid must be positive, got {grid}")
        self.conv, self.grid = conv, (h, w)
        if isinstance(conv, LuminaMGPT):
            if h % 2 or w % 2:
                raise ValueError(f"lumina_mgpt grids have even sides, got {h}x{w}")
            head, eol, tail = [conv.count_token(h // 2), conv.count_token(w // 2)], conv.eol, [conv.end]
        elif isinstance(conv, Chameleon):
            if (h, w) != conv.grid:
                raise ValueError(f"chameleon generates its fixed grid {conv.grid}, not {h}x{w}")
            head, eol, tail = [], None, [conv.end]
        else:  # Emu3
            head, eol, tail = [], conv.ids["eol"], [conv.ids["eof"], conv.ids["end"]]
        if eos:
            if conv.eos is None:
                raise ValueError(f"the {conv.name} convention has no end-of-sequence token")
            tail = tail + [conv.eos]
        self.head, self.eol, self.tail = head, eol, tail
        self.row = w + (eol is not None)
        self.body = h * self.row
        self.length = len(head) + self.body + len(tail)
        self.code_ids = np.asarray(conv.image_ids, dtype=np.int64)
        self.size = conv.size
        self._masks: dict = {}
        self._runs: dict = {}

    def slot(self, i: int):
        """The slot at plan position i: ("codes",) or ("id", token); ("done",) past the plan."""
        if i < len(self.head):
            return ("id", self.head[i])
        i -= len(self.head)
        if i < self.body:
            if self.eol is not None and i % self.row == self.row - 1:
                return ("id", self.eol)
            return ("codes",)
        i -= self.body
        if i < len(self.tail):
            return ("id", self.tail[i])
        return ("done",)

    def mask(self, slot) -> np.ndarray:
        mask = self._masks.get(slot)
        if mask is None:
            mask = np.zeros(self.size, dtype=bool)
            if slot[0] == "codes":
                mask[self.code_ids] = True
            elif slot[0] == "id":
                mask[slot[1]] = True
            else:  # after the plan: padding with the end-of-sequence token
                mask[self.tail[-1]] = True
            mask.flags.writeable = False
            self._masks[slot] = mask
        return mask

    def runs(self, slot) -> list[tuple[int, int]]:
        runs = self._runs.get(slot)
        if runs is None:
            mask = self.mask(slot)
            edges = np.flatnonzero(np.diff(np.concatenate([[True], mask, [True]]).astype(np.int8)))
            runs = self._runs[slot] = [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]
        return runs

    def allowed(self, position: int) -> np.ndarray:
        """Mask after `position` generated ids."""
        return self.mask(self.slot(position))

    def check(self, generated: Sequence[int]) -> None:
        for i, token in enumerate(generated):
            if not self.allowed(i)[int(token)]:
                raise ConstraintError(i, f"id {int(token)} is not allowed at plan slot {self.slot(i)}")

    def batch(self, prompts: Sequence[Sequence[int]]) -> "ImageConstraintBatch":
        return ImageConstraintBatch(self, len(prompts))


class ImageConstraintBatch:
    """One plan position per row (every row generates the same plan)."""

    def __init__(self, constraint: ImageConstraint, rows: int):
        self.constraint = constraint
        self.positions = [0] * rows

    def __len__(self) -> int:
        return len(self.positions)

    def advance(self, tokens: Sequence[int]) -> None:
        for r, token in enumerate(tokens):
            p = self.positions[r]
            if not self.constraint.allowed(p)[int(token)]:
                raise ConstraintError(p, f"row {r}: id {int(token)} is not allowed at {self.constraint.slot(p)}")
            self.positions[r] = p + 1

    def apply(self, scores: torch.Tensor) -> torch.Tensor:
        size = self.constraint.size
        if scores.ndim != 2 or scores.shape[0] != len(self) or scores.shape[1] < size:
            raise ValueError(f"scores must be (batch={len(self)}, >= {size}), got {tuple(scores.shape)}")
        groups: dict = {}
        for r, p in enumerate(self.positions):
            groups.setdefault(self.constraint.slot(p), []).append(r)
        inf = float("-inf")
        for slot, rows in groups.items():
            index = slice(None) if len(rows) == len(self) else torch.tensor(rows, device=scores.device)
            for start, end in self.constraint.runs(slot):
                scores[index, start:end] = inf
        if scores.shape[1] > size:
            scores[:, size:] = inf
        return scores


def convention_logits_processor(conv: Convention, grid: tuple[int, int], *, eos: bool = True):
    """A `transformers` LogitsProcessor generating one grid-sized image in `conv`'s layout; the prompt (each
    row of the first call) must end where the image body begins."""
    from .hf import ConstrainedLogitsProcessor

    return ConstrainedLogitsProcessor(ImageConstraint(conv, grid, eos=eos))
