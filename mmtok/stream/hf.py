"""A `transformers` LogitsProcessor around a mmtok Constraint (imported only when asked for).

Tested with sampled `generate` (temperature 1, batches of several rows) and with beam search (`num_beams`):
beam search reorders (and duplicates) rows between steps, so each row's state is taken from the row of the
previous step whose ids it continues (found by comparing the prefixes; sampling never reorders, and then
the comparison is a single equality test).
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
        self._previous: torch.Tensor | None = None

    def _start(self, input_ids: torch.Tensor) -> None:
        ids = input_ids.tolist()
        n = input_ids.shape[1] if self.prompt_length is None else self.prompt_length
        if n > input_ids.shape[1]:
            raise ValueError(f"prompt_length={n} but generate passed only {input_ids.shape[1]} ids per row")
        self.batch = self.constraint.batch([row[:n] for row in ids])
        for t in range(n, input_ids.shape[1]):
            self.batch.advance([row[t] for row in ids])

    def _parents(self, input_ids: torch.Tensor) -> list[int] | None:
        """For each row, a row of the previous call whose ids it continues (None if some row has none)."""
        previous, prefix = self._previous, input_ids[:, :-1]
        if previous.shape == prefix.shape and torch.equal(previous, prefix):
            return list(range(prefix.shape[0]))  # no reordering (sampling, greedy)
        same = (prefix[:, None, :] == previous[None, :, :].to(prefix.device)).all(dim=-1)  # (rows, previous rows)
        found = same.any(dim=1)
        if not bool(found.all()):
            return None
        return same.to(torch.int8).argmax(dim=1).tolist()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        parents = None
        if self.batch is not None and length == self._length + 1:
            parents = self._parents(input_ids)
        if parents is None:  # a new generate (or rows that continue nothing seen): start over from the prompt
            self._start(input_ids)
        else:
            if parents != list(range(len(parents))) or len(parents) != len(self.batch):
                self.batch.states = [self.batch.states[p].copy() for p in parents]  # beams reordered
            self.batch.advance(input_ids[:, -1].tolist())
        self._length = length
        self._previous = input_ids.detach().clone()
        return self.batch.apply(scores)
