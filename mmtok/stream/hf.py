"""A `transformers` LogitsProcessor around a mmtok Constraint (imported only when asked for).

Tested with sampled `generate` (temperature 1, batches of several rows). Beam search reorders rows between
steps, which the per-row states do not follow: it is not supported.
"""
from __future__ import annotations

import torch
from transformers import LogitsProcessor

from .constraints import Constraint, ConstraintBatch  # noqa: F401 (the types this processor drives)


class ConstrainedLogitsProcessor(LogitsProcessor):
    """Masks every id the constraint forbids to -inf. Each call moves each row's state by the id generated
    last (O(1)); a call that does not continue the previous one (a new `generate`) starts over from the
    prompt. prompt_length: how many leading ids of each row are the prompt (None: all ids of the first
    call)."""

    def __init__(self, constraint: Constraint, *, prompt_length: int | None = None):
        if not callable(getattr(constraint, "batch", None)):
            raise ValueError(f"constraint must be a mmtok Constraint (or ImageConstraint), got"
                             f" {type(constraint).__name__}")
        if prompt_length is not None and (isinstance(prompt_length, bool) or int(prompt_length) < 0):
            raise ValueError(f"prompt_length must be a non-negative int or None, got {prompt_length!r}")
        self.constraint = constraint
        self.prompt_length = None if prompt_length is None else int(prompt_length)
        self.batch: ConstraintBatch | None = None
        self._length = -1

    def _start(self, input_ids: torch.Tensor) -> None:
        ids = input_ids.tolist()
        n = input_ids.shape[1] if self.prompt_length is None else self.prompt_length
        if n > input_ids.shape[1]:
            raise ValueError(f"prompt_length={n} but generate passed only {input_ids.shape[1]} ids per row")
        self.batch = self.constraint.batch([row[:n] for row in ids])
        for t in range(n, input_ids.shape[1]):
            self.batch.advance([row[t] for row in ids])

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        if self.batch is None or length != self._length + 1 or input_ids.shape[0] != len(self.batch):
            self._start(input_ids)
        else:
            self.batch.advance(input_ids[:, -1].tolist())
        self._length = length
        return self.batch.apply(scores)
