"""Exponential-moving-average codebook learning (VQ-VAE / VQ-VAE-2 appendix), with Laplace smoothing.

State per code k: an EMA of its cluster size N_k and of the sum of vectors assigned to it m_k.
Each step with batch counts n_k and sums s_k (already summed over ranks):
    N_k <- decay * N_k + (1 - decay) * n_k,      m_k <- decay * m_k + (1 - decay) * s_k
    N'_k = (N_k + eps) / (sum_j N_j + K * eps) * sum_j N_j     (Laplace smoothing: no division by zero)
    e_k  = m_k / N'_k
All in fp32 whatever the model's precision.
"""
from __future__ import annotations

import torch


def batch_statistics(vectors: torch.Tensor, indices: torch.Tensor, num_codes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-code counts (K,) and vector sums (K, D) of one batch, in fp32, without a one-hot matrix."""
    vectors = vectors.float()
    counts = torch.zeros(num_codes, dtype=torch.float32, device=vectors.device)
    counts.index_add_(0, indices, torch.ones(indices.shape, dtype=torch.float32, device=vectors.device))
    sums = torch.zeros(num_codes, vectors.shape[-1], dtype=torch.float32, device=vectors.device)
    sums.index_add_(0, indices, vectors)
    return counts, sums


@torch.no_grad()
def ema_update_(cluster_size: torch.Tensor, embed_sum: torch.Tensor, counts: torch.Tensor, sums: torch.Tensor,
                decay: float) -> None:
    """Move the running cluster sizes and sums towards this batch's, in place."""
    cluster_size.mul_(decay).add_(counts, alpha=1.0 - decay)
    embed_sum.mul_(decay).add_(sums, alpha=1.0 - decay)


def laplace_smoothed_codebook(cluster_size: torch.Tensor, embed_sum: torch.Tensor, eps: float) -> torch.Tensor:
    """The codebook e_k = m_k / N'_k with Laplace-smoothed cluster sizes N'_k."""
    total = cluster_size.sum()
    smoothed = (cluster_size + eps) / (total + cluster_size.numel() * eps) * total
    return embed_sum / smoothed.unsqueeze(-1)
