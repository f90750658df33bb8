"""Ground truth for the nearest-code lookup: chunked plain torch.

Every backend is tested against this (and it against float64). It never holds more than one
(chunk x K) block of scores, so memory stays O(N + K*D + chunk*K) like the fused kernels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Rows per chunk are chosen so one score block holds about this many elements (16 MiB of fp32).
_BLOCK_ELEMENTS = 1 << 22


def compute_dtype(x: torch.Tensor, codebook: torch.Tensor) -> torch.dtype:
    """fp64 when either side is fp64, otherwise fp32: half-precision inputs accumulate in fp32."""
    return torch.float64 if torch.float64 in (x.dtype, codebook.dtype) else torch.float32


METRICS = ("l2", "cosine", "dot")


def prepare(x: torch.Tensor, codebook: torch.Tensor, metric: str):
    """Both sides in the compute dtype, l2-normalised for the cosine metric."""
    dtype = compute_dtype(x, codebook)
    x, codebook = x.to(dtype), codebook.to(dtype)
    if metric == "cosine":
        x, codebook = F.normalize(x, dim=-1), F.normalize(codebook, dim=-1)
    return x, codebook


def exact_distances(x: torch.Tensor, codebook: torch.Tensor, indices: torch.Tensor, metric: str) -> torch.Tensor:
    """The returned distance of each row to its chosen code, recomputed directly (no cancellation): squared L2,
    1 - cosine similarity, or minus the inner product for "dot".

    Shared by every backend so they report the same number for the same index.
    """
    xs, cs = prepare(x, codebook, metric)
    chosen = cs.index_select(0, indices)
    if metric == "cosine":
        dist = 1.0 - (xs * chosen).sum(-1)
    elif metric == "dot":
        dist = -(xs * chosen).sum(-1)
    else:
        dist = (xs - chosen).square().sum(-1)
    return dist.to(torch.float32)


def nearest_code_reference(x: torch.Tensor, codebook: torch.Tensor, metric: str, block_elements: int = _BLOCK_ELEMENTS):
    """Index of the nearest code for each row of x (N, D); exact ties go to the lowest index."""
    xs, cs = prepare(x, codebook, metric)
    n, k = xs.shape[0], cs.shape[0]
    # argmin_k ||x - c_k||^2 = argmin_k (||c_k||^2 - 2 x.c_k); for cosine every ||c_k|| is 1 (or 0 for a zero code,
    # whose similarity is 0), so the score is -2 x.c_k, as it is for the maximum inner product ("dot").
    bias = cs.square().sum(-1) if metric == "l2" else torch.zeros(k, dtype=cs.dtype, device=cs.device)
    indices = torch.empty(n, dtype=torch.int64, device=xs.device)
    rows = max(1, block_elements // max(k, 1))
    for start in range(0, n, rows):
        block = xs[start : start + rows]
        scores = torch.addmm(bias, block, cs.t(), beta=1, alpha=-2)
        indices[start : start + rows] = scores.argmin(dim=1)  # first minimum on ties
    return indices, exact_distances(x, codebook, indices, metric)
