"""k-means codebook initialisation from the first training batch, identical on every rank.

Initial centroids are sampled from the rank with the most vectors and broadcast; each Lloyd iteration sums
assignments over all ranks, so the result is the k-means of the union of the ranks' batches.
Assignments use `mmtok.nearest_code` (no distance matrix).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ops import nearest_code
from . import distributed
from .ema import batch_statistics


def sample_rows(vectors: torch.Tensor, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """`count` rows of `vectors` drawn without replacement when there are enough, with replacement otherwise."""
    n = vectors.shape[0]
    if n >= count:
        pick = torch.randperm(n, generator=generator, device="cpu")[:count]
    else:
        pick = torch.randint(n, (count,), generator=generator, device="cpu")
    return vectors[pick.to(vectors.device)]


@torch.no_grad()
def distributed_kmeans(vectors: torch.Tensor, num_codes: int, iters: int = 10, cosine: bool = False,
                       generator: torch.Generator | None = None) -> torch.Tensor | None:
    """Centroids (num_codes, D) in fp32 of the vectors held by all ranks, or None when no rank has any vectors.

    Every rank must call this together (it runs collectives even with an empty local batch).
    With cosine=True this is spherical k-means: vectors and centroids are l2-normalised.
    """
    vectors = vectors.detach().float()
    if cosine:
        vectors = F.normalize(vectors, dim=-1)
    counts = distributed.gather_counts(vectors.shape[0], vectors.device)
    if sum(counts) == 0:
        return None
    src = distributed.richest_rank(counts)
    centroids = torch.zeros(num_codes, vectors.shape[-1], dtype=torch.float32, device=vectors.device)
    if distributed.rank() == src:
        centroids.copy_(sample_rows(vectors, num_codes, generator))
    distributed.broadcast_(centroids, src=src)
    metric = "cosine" if cosine else "l2"
    for _ in range(iters):
        if vectors.shape[0]:
            assign, _ = nearest_code(vectors, centroids, metric=metric)
        else:
            assign = torch.zeros(0, dtype=torch.int64, device=vectors.device)
        sizes, sums = batch_statistics(vectors, assign, num_codes)
        distributed.all_reduce_sum_(sizes)
        distributed.all_reduce_sum_(sums)
        updated = sums / sizes.clamp_min(1.0).unsqueeze(-1)
        if cosine:
            updated = F.normalize(updated, dim=-1)
        centroids = torch.where((sizes > 0).unsqueeze(-1), updated, centroids)  # empty clusters keep their seed
    return centroids
