"""Re-seeding of dead codes: codes whose running usage fell below a threshold take vectors from the batch.

Which codes are dead is decided from usage already summed over ranks (so every rank agrees); the replacement
vectors are drawn on the rank holding the most vectors and broadcast, so every rank writes the same rows.
"""
from __future__ import annotations

import torch

from . import distributed
from .kmeans import sample_rows


@torch.no_grad()
def replacement_rows(vectors: torch.Tensor, dead: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor | None:
    """Rows (num_dead, D) in fp32 to write into the dead codes, identical on every rank; None when there is
    nothing to do (no dead code, or no rank has a vector). All ranks must call it together."""
    num_dead = int(dead.sum())  # identical on all ranks: `dead` comes from all-reduced usage
    if num_dead == 0:
        return None
    counts = distributed.gather_counts(vectors.shape[0], vectors.device)
    if sum(counts) == 0:
        return None
    src = distributed.richest_rank(counts)
    rows = torch.zeros(num_dead, vectors.shape[-1], dtype=torch.float32, device=vectors.device)
    if distributed.rank() == src:
        rows.copy_(sample_rows(vectors.detach().float(), num_dead, generator))
    return distributed.broadcast_(rows, src=src)
