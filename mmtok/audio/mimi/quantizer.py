"""Mimi's split residual VQ: `num_semantic_quantizers` levels (1 in Mimi: the level distilled from WavLM) and the
acoustic levels, two separate residual VQs over the *same* latent, each with its own 1x1 input / output projection
(absent when `vector_quantization_hidden_dimension` equals `hidden_size`). Codes are semantic levels first.

The codebooks are stored by upstream as EMA sums; the code vectors are `embed_sum / cluster_usage.clamp(min=1e-5)`
(transformers' `MimiEuclideanCodebook`, epsilon 1e-5; moshi's `EuclideanCodebook` the same). They are computed once at
load time into the `codebooks` parameter here, so a later `load_state_dict` replaces them: there is no first-use
cache to go stale (both upstreams cache the quotient on first use and never refresh it). The lookup is plain L2
(`mmtok.nearest_code`; upstream takes argmin of `torch.cdist`).
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from ...ops import nearest_code

EMA_EPSILON = 1e-5  # transformers' MimiEuclideanCodebook(epsilon=1e-5): cluster_usage.clamp(min=epsilon)
RVQ_NAMES = ("semantic_residual_vector_quantizer", "acoustic_residual_vector_quantizer")
# training-state buffers of upstream's codebooks, dropped at load
TRAINING_BUFFERS = ("initialized",)


class ResidualVQ(nn.Module):
    """`levels` codebooks of `size` x `dim` over latents of `hidden` channels (projected when `project`)."""

    def __init__(self, levels: int, size: int, dim: int, hidden: int, project: bool):
        super().__init__()
        self.input_proj = nn.Conv1d(hidden, dim, 1, bias=False) if project else None
        self.output_proj = nn.Conv1d(dim, hidden, 1, bias=False) if project else None
        self.codebooks = nn.Parameter(torch.zeros(levels, size, dim), requires_grad=False)

    def encode(self, latent: torch.Tensor, levels: int) -> torch.Tensor:
        """(B, hidden, T) -> codes (B, levels, T)."""
        z = self.input_proj(latent) if self.input_proj is not None else latent
        residual = z.transpose(1, 2)
        codes = []
        for book in self.codebooks[:levels]:
            idx = nearest_code(residual, book, metric="l2")[0]
            residual = residual - book[idx]
            codes.append(idx)
        return torch.stack(codes, dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, K, T), K <= levels -> (B, hidden, T)."""
        z = self.codebooks[0][codes[:, 0]]
        for k in range(1, codes.shape[1]):
            z = z + self.codebooks[k][codes[:, k]]
        z = z.transpose(1, 2)
        return self.output_proj(z) if self.output_proj is not None else z


class SplitResidualVQ(nn.Module):
    def __init__(self, s: dict):
        super().__init__()
        project = s["vector_quantization_hidden_dimension"] != s["hidden_size"]
        semantic = s["num_semantic_quantizers"]
        args = (s["codebook_size"], s["codebook_dim"], s["hidden_size"], project)
        self.semantic_residual_vector_quantizer = ResidualVQ(semantic, *args)
        self.acoustic_residual_vector_quantizer = ResidualVQ(s["num_quantizers"] - semantic, *args)
        self.semantic = semantic

    def encode(self, latent: torch.Tensor, levels: int) -> torch.Tensor:
        codes = self.semantic_residual_vector_quantizer.encode(latent, self.semantic)
        if levels > self.semantic:
            codes = torch.cat([codes, self.acoustic_residual_vector_quantizer.encode(latent, levels - self.semantic)], 1)
        return codes

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        out = self.semantic_residual_vector_quantizer.decode(codes[:, : self.semantic])
        if codes.shape[1] > self.semantic:
            out = out + self.acoustic_residual_vector_quantizer.decode(codes[:, self.semantic:])
        return out


def codebooks_from_ema(state: Mapping[str, torch.Tensor], s: dict, origin: str) -> tuple[dict, list[str]]:
    """Upstream `quantizer.<rvq>.layers.i.codebook.{embed_sum, cluster_usage, initialized}` -> our
    `quantizer.<rvq>.codebooks` (levels, K, D), plus the keys used up. Missing levels or extra ones are errors
    naming the keys; an all-zero codebook (a fresh, untrained model) is refused."""
    out, used = {}, []
    counts = {RVQ_NAMES[0]: s["num_semantic_quantizers"],
              RVQ_NAMES[1]: s["num_quantizers"] - s["num_semantic_quantizers"]}
    for name, levels in counts.items():
        prefix = f"quantizer.{name}.layers."
        found = sorted({int(k[len(prefix):].split(".")[0]) for k in state if k.startswith(prefix)})
        if found != list(range(levels)):
            raise ValueError(f"{origin}: {name} has levels {found[:12]} in the weights, the config says {levels} "
                             f"(num_quantizers={s['num_quantizers']}, num_semantic_quantizers="
                             f"{s['num_semantic_quantizers']})")
        books = []
        for i in range(levels):
            base = f"{prefix}{i}.codebook."
            if base + "embed_sum" not in state or base + "cluster_usage" not in state:
                raise ValueError(f"{origin}: missing {base}embed_sum / {base}cluster_usage")
            total, usage = state[base + "embed_sum"].float(), state[base + "cluster_usage"].float()
            if total.dim() != 2 or usage.shape != total.shape[:1]:
                raise ValueError(f"{origin}: {base}embed_sum {list(total.shape)} and cluster_usage "
                                 f"{list(usage.shape)} do not make a (K, D) codebook")
            if not bool(total.any()):
                raise ValueError(f"{origin}: codebook {base}embed_sum is all zeros (an untrained model)")
            books.append(total / usage.clamp(min=EMA_EPSILON)[:, None])
            used += [base + "embed_sum", base + "cluster_usage"] + [base + b for b in TRAINING_BUFFERS
                                                                    if base + b in state]
        if len({tuple(b.shape) for b in books}) > 1:
            raise ValueError(f"{origin}: the {name} codebooks have different shapes {[list(b.shape) for b in books]}")
        out[f"quantizer.{name}.codebooks"] = torch.stack(books)
    return out, used
