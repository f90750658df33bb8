"""The result of a quantizer forward pass and the code-usage statistics reported with it."""
from __future__ import annotations

from typing import NamedTuple

import torch


class QuantizerOutput(NamedTuple):
    """quantized: z's shape and dtype (straight-through gradient); indices: z's shape without the channel dim
    (int64); loss: 0-d fp32 (codebook + beta * commitment); stats: {"perplexity", "usage"} as detached 0-d tensors."""

    quantized: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    stats: dict


def code_counts(indices: torch.Tensor, num_codes: int) -> torch.Tensor:
    """How many vectors chose each code (fp32, length num_codes); static shape, so it traces under torch.compile."""
    flat = indices.reshape(-1)
    ones = torch.ones(flat.shape, dtype=torch.float32, device=flat.device)
    return torch.zeros(num_codes, dtype=torch.float32, device=flat.device).index_add_(0, flat, ones)


def usage_stats(counts: torch.Tensor) -> dict:
    """Perplexity (exp of the entropy of the code histogram) and the fraction of codes used at least once."""
    counts = counts.detach().float()
    total = counts.sum().clamp_min(1.0)
    probs = counts / total
    entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum()
    return {"perplexity": torch.exp(entropy), "usage": (counts > 0).float().mean()}
