"""A per-sequence logits hook around a mmtok Constraint, for engines other than `transformers`.

vLLM's per-request processors (`SamplingParams(logits_processors=[...])`, its V0 engine) are called once per
sequence and step as `fn(prompt_ids, output_ids, logits)`; other engines offer the same kind of hook. Only
that calling convention is tested (the tests call it as the engine does, sequences interleaved); it has not
been run inside vLLM here (no vLLM wheel installs on this CPU-only machine without pulling a CUDA torch).
"""
from __future__ import annotations

import torch

from .constraints import Constraint


class RequestLogitsProcessor:
    """A per-request logits processor with the calling convention of vLLM's `SamplingParams(logits_processors=
    [...])` (its V0 engine): `processor(prompt_ids, output_ids, logits) -> logits`, called once per sequence
    and step with that sequence's ids so far and its (vocab,) logits; one processor may serve several
    sequences of a request (n > 1, beam search) in any order: the state of each prefix is cached, so a call
    that extends a prefix seen before costs one transition."""

    def __init__(self, constraint: Constraint, *, cache_size: int = 4096):
        self.constraint = constraint
        self.cache_size = int(cache_size)
        self._functions: dict[tuple, object] = {}

    def __call__(self, prompt_ids, output_ids, logits: torch.Tensor) -> torch.Tensor:
        prompt = tuple(int(i) for i in prompt_ids)
        function = self._functions.get(prompt)
        if function is None:
            function = self._functions[prompt] = self.constraint.prefix_function(prompt_length=len(prompt),
                                                                                  cache_size=self.cache_size)
        allowed = function(prompt + tuple(int(i) for i in output_ids))
        size = self.constraint.vocab.size
        if logits.ndim != 1 or logits.shape[0] < size:
            raise ValueError(f"logits must be (>= {size},) for one sequence, got {tuple(logits.shape)}")
        forbidden = torch.from_numpy(~allowed).to(logits.device)
        logits[:size].masked_fill_(forbidden, float("-inf"))
        logits[size:] = float("-inf")
        return logits
