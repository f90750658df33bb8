"""Lookup-free quantization (LFQ, MAGVIT-v2): each of `bits` channels becomes its sign, the code index is the
binary number of the signs. The codebook ({-s, +s}^bits) is implicit, so no lookup and no distance matrix.

What checkpoints disagree on, made explicit here:
- bit order: Open-MAGVIT2 numbers channel 0 as the least significant bit (`bit_order="lsb"`),
  `vector-quantize-pytorch` as the most significant (`bit_order="msb"`). Both map z == 0 to -s (strict z > 0).
- token factorization (Open-MAGVIT2's `token_factorization`): the bits are split into sub-tokens (e.g. 18 bits as
  9 + 9, two ids of 512 values each), `sub_tokens=[9, 9]`; each sub-token numbers its own bits in `bit_order`.
- the entropy loss (MAGVIT-v2's aux loss: low per-sample entropy, high codebook entropy, over the softmax of
  2 * z . c / temperature for every code c):
  - `entropy_formula="vqtorch"`: `vector-quantize-pytorch`'s, with log(max(p, 1e-5)) in both entropies and
    aux = per_sample - diversity_gamma * codebook, scaled by `entropy_weight`;
  - `entropy_formula="magvit2"`: Open-MAGVIT2's, exact log-softmax in the per-sample entropy and log(avg + 1e-5)
    in the codebook entropy, aux = per_sample - diversity_gamma * codebook.
  Both implementations it follows build an N x 2^bits probability matrix (4 GiB for 4096 positions at 18 bits).
  Here the softmax over sign patterns is factorised over channels (`lfq_entropy`): log Z is a sum over channels,
  each row's probabilities are the outer product of two half-width tables, so the mean over rows is one
  (2^(bits/2) x N) @ (N x 2^(bits/2)) GEMM and the clamped per-sample sum comes from sorted prefix sums, with a
  hand-written backward: memory O(N x 2^(bits/2) + 2^bits), the same values (to rounding) at ~100x the speed.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from .fsq import _flat_mask, check_indices
from .lfq_entropy import ENTROPY_EPS, code_entropy_terms
from .layout import checked_rows, from_rows, resolve_channel_dim
from .output import QuantizerOutput, code_counts, usage_stats

BIT_ORDERS = ("lsb", "msb")
ENTROPY_FORMULAS = ("vqtorch", "magvit2")


class LFQ(nn.Module):
    """Lookup-free quantization of `dim`-channel vectors onto 2^bits implicit codes.

    Args:
        bits: quantized channels (2^bits codes).
        dim: input channels; when different from `bits`, `project_in` / `project_out` linears map between them.
        bit_order: "lsb" (Open-MAGVIT2: channel 0 is bit 0) or "msb" (vector-quantize-pytorch).
        sub_tokens: split the bits into sub-tokens (e.g. [9, 9]): indices then get a trailing axis of
            len(sub_tokens) ids, each in [0, 2^sub_tokens[i]).
        codebook_scale: the code values are +-codebook_scale.
        entropy_weight, commitment_weight: weights of the entropy aux loss and of the commitment loss
            mean((z - q)^2) in the returned loss.
        diversity_gamma: weight of the codebook entropy inside the aux loss.
        temperature: of the entropy softmax (vector-quantize-pytorch's inv_temperature=100 is 0.01).
        entropy_formula: "vqtorch" or "magvit2" (see the module docs).
        channel_dim: channel axis of the input.
    """

    def __init__(self, bits: int, dim: int | None = None, *, bit_order: str = "msb", sub_tokens=None,
                 codebook_scale: float = 1.0, entropy_weight: float = 0.1, commitment_weight: float = 0.0,
                 diversity_gamma: float = 1.0, temperature: float = 0.01, entropy_formula: str = "vqtorch",
                 channel_dim: int = -1, projection_bias: bool = True):
        super().__init__()
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 62:
            raise ValueError(f"LFQ: bits must be an int in 1..62, got {bits!r}")
        if bit_order not in BIT_ORDERS:
            raise ValueError(f"LFQ: bit_order must be one of {BIT_ORDERS}, got {bit_order!r}")
        if entropy_formula not in ENTROPY_FORMULAS:
            raise ValueError(f"LFQ: entropy_formula must be one of {ENTROPY_FORMULAS}, got {entropy_formula!r}")
        if not temperature > 0:
            raise ValueError(f"LFQ: temperature must be positive, got {temperature!r}")
        self.bits = bits
        self.dim = bits if dim is None else int(dim)
        self.bit_order = bit_order
        self.sub_tokens = None if sub_tokens is None else [int(b) for b in sub_tokens]
        if self.sub_tokens is not None and (sum(self.sub_tokens) != bits or min(self.sub_tokens) < 1):
            raise ValueError(f"LFQ: sub_tokens {sub_tokens} must be positive and sum to bits={bits}")
        self.codebook_scale = float(codebook_scale)
        self.entropy_weight = float(entropy_weight)
        self.commitment_weight = float(commitment_weight)
        self.diversity_gamma = float(diversity_gamma)
        self.temperature = float(temperature)
        self.entropy_formula = entropy_formula
        self.channel_dim = channel_dim
        self.num_codes = 2**bits
        projected = self.dim != bits
        self.project_in = nn.Linear(self.dim, bits, bias=projection_bias) if projected else None
        self.project_out = nn.Linear(bits, self.dim, bias=projection_bias) if projected else None
        groups = self.sub_tokens or [bits]
        weights = []
        for width in groups:
            powers = [2**i for i in range(width)]
            weights.extend(powers if bit_order == "lsb" else powers[::-1])
        self.register_buffer("_bit_weights", torch.tensor(weights, dtype=torch.int64), persistent=False)
        self.register_buffer("_group", torch.repeat_interleave(torch.arange(len(groups)), torch.tensor(groups)),
                             persistent=False)

    @property
    def id_ranges(self) -> list[int]:
        """The number of distinct ids of each index (one entry, or one per sub-token)."""
        return [2**w for w in (self.sub_tokens or [self.bits])]

    def extra_repr(self) -> str:
        return (f"bits={self.bits}, dim={self.dim}, bit_order={self.bit_order!r}, sub_tokens={self.sub_tokens}, "
                f"entropy_formula={self.entropy_formula!r}")

    # ------------------------------------------------------------------------------------ codes
    def signs_to_indices(self, positive: torch.Tensor) -> torch.Tensor:
        """(..., bits) bool (z > 0) -> int64 indices (...) or (..., len(sub_tokens))."""
        weighted = positive.long() * self._bit_weights
        if self.sub_tokens is None:
            return weighted.sum(-1)
        out = weighted.new_zeros(*weighted.shape[:-1], len(self.sub_tokens))
        return out.index_add_(-1, self._group, weighted)

    def indices_to_signs(self, indices: torch.Tensor) -> torch.Tensor:
        """Inverse of signs_to_indices: (..., bits) bool."""
        indices = indices.long()
        if self.sub_tokens is None:
            per_bit = indices.unsqueeze(-1).expand(*indices.shape, self.bits)
        else:
            per_bit = indices.index_select(-1, self._group)
        return (per_bit & self._bit_weights) != 0

    def _check_indices(self, indices: torch.Tensor, what: str) -> None:
        if self.sub_tokens is None:
            check_indices(indices, self.num_codes, what)
            return
        if indices.dim() < 1 or indices.shape[-1] != len(self.sub_tokens):
            raise ValueError(f"{what}: indices need a trailing axis of {len(self.sub_tokens)} sub-tokens, got shape "
                             f"{tuple(indices.shape)}")
        for i, size in enumerate(self.id_ranges):
            check_indices(indices[..., i], size, f"{what} (sub-token {i})")

    # ------------------------------------------------------------------------------------ losses
    def _entropies(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-sample entropy, codebook entropy) of softmax(2 h.c / T) over every code c, in blocks of codes.

        With a_i = 2 s h_i / T, the code matching the signs of a row has the largest logit, and any code's log
        probability is -2 sum_{i: sign differs} |a_i| - log Z with log Z = sum_i softplus(-2 |a_i|): small terms
        only, so no cancellation. The per-sample entropy depends on |a| alone: for the exact log (magvit2) it is
        the sum of the channels' binary entropies; with the clamped log (vqtorch) it is summed over the codes in
        the row's own sign frame (code 0 = the row's code). The codebook entropy needs each code's mean
        probability over rows, summed block by block.
        """
        if h.shape[0] == 0:
            zero = h.new_zeros(())
            return zero, zero
        a = h * (2.0 * self.codebook_scale / self.temperature)
        weight = 2.0 * a.abs()  # log-probability cost of flipping each channel away from the row's sign
        log_z = F.softplus(-weight).sum(-1)
        negative = (a <= 0).to(a.dtype)  # the row's own code has channel i negative where a_i <= 0 (z == 0 too)
        if self.entropy_formula == "magvit2":
            flip = -F.softplus(weight)  # log sigma(-w): probability of the flipped sign, per channel
            keep = -F.softplus(-weight)
            per_sample = -(flip.exp() * flip + keep.exp() * keep).sum(-1).mean()
        else:
            per_sample = None
        sample_terms, avg = code_entropy_terms(weight, log_z, negative, self.bits, self.entropy_formula == "vqtorch")
        if per_sample is None:
            per_sample = -sample_terms.mean()
        if self.entropy_formula == "vqtorch":
            codebook = -(avg * avg.clamp_min(ENTROPY_EPS).log()).sum()
        else:
            codebook = -(avg * (avg + ENTROPY_EPS).log()).sum()
        return per_sample, codebook

    # ------------------------------------------------------------------------------------ public API
    def _rows(self, z: torch.Tensor, channel_dim: int | None):
        return checked_rows(z, self.channel_dim if channel_dim is None else channel_dim, self.dim, "LFQ")

    def _latents(self, rows: torch.Tensor) -> torch.Tensor:
        h = self.project_in(rows.to(self.project_in.weight.dtype)) if self.project_in is not None else rows
        return h.to(torch.float64 if h.dtype == torch.float64 else torch.float32)

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None, channel_dim: int | None = None
                ) -> QuantizerOutput:
        """Quantize z: quantized (z's shape and dtype, straight-through), indices, the loss (entropy and
        commitment terms, in training mode only, over the positions where `mask` is True) and stats (usage,
        perplexity, and the per-sample / codebook entropies when computed)."""
        rows, lead, axis = self._rows(z, channel_dim)
        h = self._latents(rows)
        positive = h > 0
        q = torch.where(positive, self.codebook_scale, -self.codebook_scale).to(h.dtype)
        indices = self.signs_to_indices(positive)
        valid = None if mask is None else _flat_mask(mask, lead)
        hv = h if valid is None else h[valid]
        loss = h.new_zeros(())
        stats: dict = {}
        if self.training:
            if self.entropy_weight:
                per_sample, codebook = self._entropies(hv)
                loss = loss + self.entropy_weight * (per_sample - self.diversity_gamma * codebook)
                stats.update(per_sample_entropy=per_sample.detach(), codebook_entropy=codebook.detach())
            if self.commitment_weight and hv.numel():
                qv = q if valid is None else q[valid]
                loss = loss + self.commitment_weight * F.mse_loss(hv, qv)
        passed = h + (q - h).detach()
        out = passed.to(rows.dtype)
        if self.project_out is not None:
            out = self.project_out(out.to(self.project_out.weight.dtype))
        quantized = from_rows(out.to(z.dtype), lead, axis)
        counted = self.signs_to_indices(positive if valid is None else positive[valid])
        if self.sub_tokens is None:
            stats.update(usage_stats(code_counts(counted, self.num_codes)) if self.bits <= 24 else {})
        index_shape = lead if self.sub_tokens is None else (*lead, len(self.sub_tokens))
        return QuantizerOutput(quantized, indices.reshape(index_shape), loss.float(), stats)

    @torch.no_grad()
    def lookup(self, z: torch.Tensor, channel_dim: int | None = None) -> torch.Tensor:
        rows, lead, _ = self._rows(z, channel_dim)
        indices = self.signs_to_indices(self._latents(rows) > 0)
        return indices.reshape(lead if self.sub_tokens is None else (*lead, len(self.sub_tokens)))

    def decode(self, indices: torch.Tensor, channel_dim: int | None = None) -> torch.Tensor:
        """Code vectors (+-codebook_scale, through project_out) for indices; channels inserted at channel_dim
        (for sub-token indices the trailing sub-token axis is consumed)."""
        self._check_indices(indices, "LFQ.decode")
        lead_dims = indices.dim() - (0 if self.sub_tokens is None else 1)
        axis = resolve_channel_dim(self.channel_dim if channel_dim is None else channel_dim, lead_dims + 1,
                                   "LFQ.decode")
        signs = self.indices_to_signs(indices.to(self._bit_weights.device))
        vectors = torch.where(signs, self.codebook_scale, -self.codebook_scale).to(torch.float32)
        if self.project_out is not None:
            vectors = self.project_out(vectors.to(self.project_out.weight.dtype))
        return vectors.movedim(-1, axis)
