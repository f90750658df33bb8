"""Residual quantization: each level quantizes what the levels before it left over, and the output is the sum.

- `ResidualVQ`: levels of `VectorQuantizer` (separate or one shared codebook), as EnCodec / DAC / SoundStream
  and `vector-quantize-pytorch`'s `ResidualVQ` do: r_0 = z, q_l = VQ_l(r_l), r_{l+1} = r_l - sg(q_l).
- `ResidualFSQ`: levels of FSQ with per-level scales, in the two published formulas of
  `vector-quantize-pytorch`: "vqtorch" (1.32: the input soft-clamped by tanh(x / c) * c with c = 1 + 1/(L-1),
  symmetric hard-clamped levels, scales L^-l) and "vqtorch-1.17.8" (the tanh bound applied to the projected input,
  then the plain FSQ bound and rounding per level, scales (L-1)^-l, truncated indices).

Quantizer dropout (SoundStream's, for bitrate-scalable codecs): in training, with `quantizer_dropout=True`, each
forward keeps only the first n levels, n drawn uniformly from [dropout_min_levels, num_quantizers]; dropped
levels get index -1 and contribute nothing. Pass `generator=` (the same seed on every rank) to keep DDP ranks
in step.
"""
from __future__ import annotations

import torch
from torch import nn

from .fsq import FSQ, _flat_mask, check_indices, check_levels
from .layout import checked_rows, from_rows, resolve_channel_dim
from .output import QuantizerOutput, code_counts, usage_stats
from .vector_quantizer import VectorQuantizer

RESIDUAL_FSQ_FORMULAS = ("vqtorch", "vqtorch-1.17.8")


def _levels_kept(num_quantizers: int, training: bool, dropout: bool, minimum: int, generator) -> int:
    if not (training and dropout and num_quantizers > 1):
        return num_quantizers
    return int(torch.randint(minimum, num_quantizers + 1, (), generator=generator))


def _stack_indices(per_level: list[torch.Tensor], num_quantizers: int, like: torch.Tensor) -> torch.Tensor:
    missing = [torch.full_like(like, -1)] * (num_quantizers - len(per_level))
    return torch.stack(per_level + missing, dim=-1)


def _counted_usage(indices: torch.Tensor, num_codes: int, valid) -> dict:
    """Usage stats of the first level (the one every configuration keeps)."""
    first = indices[..., 0].reshape(-1)
    return usage_stats(code_counts(first if valid is None else first[valid], num_codes))


class ResidualVQ(nn.Module):
    """`num_quantizers` levels of nearest-code VQ over `dim` channels.

    Args:
        num_quantizers, num_codes, dim: levels, codes per level, channels.
        shared_codebook: every level uses the first level's codebook.
        quantizer_dropout, dropout_min_levels, generator: see the module docs.
        channel_dim: channel axis of the input.
        **vq_options: passed to each `VectorQuantizer` (code_dim, l2_normalize, ema_decay, kmeans_init, beta, ...).
    """

    def __init__(self, num_quantizers: int, num_codes: int, dim: int, *, shared_codebook: bool = False,
                 quantizer_dropout: bool = False, dropout_min_levels: int = 1, generator: torch.Generator | None = None,
                 channel_dim: int = -1, **vq_options):
        super().__init__()
        if isinstance(num_quantizers, bool) or not isinstance(num_quantizers, int) or num_quantizers < 1:
            raise ValueError(f"ResidualVQ: num_quantizers must be a positive int, got {num_quantizers!r}")
        if not 1 <= dropout_min_levels <= num_quantizers:
            raise ValueError(f"ResidualVQ: dropout_min_levels must be in 1..{num_quantizers}, got {dropout_min_levels}")
        self.num_quantizers, self.num_codes, self.dim = num_quantizers, num_codes, dim
        self.shared_codebook = bool(shared_codebook)
        self.quantizer_dropout = bool(quantizer_dropout)
        self.dropout_min_levels = int(dropout_min_levels)
        self.generator = generator
        self.channel_dim = channel_dim
        count = 1 if self.shared_codebook else num_quantizers
        self.levels = nn.ModuleList(VectorQuantizer(num_codes, dim, channel_dim=-1, **vq_options) for _ in range(count))

    def level(self, index: int) -> VectorQuantizer:
        return self.levels[0 if self.shared_codebook else index]

    def _rows(self, z: torch.Tensor, channel_dim: int | None):
        return checked_rows(z, self.channel_dim if channel_dim is None else channel_dim, self.dim, "ResidualVQ")

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None, channel_dim: int | None = None,
                num_levels: int | None = None) -> QuantizerOutput:
        """Quantize z with the first `num_levels` levels (all by default; fewer in training under dropout).
        indices: z's shape without channels, plus a trailing level axis of num_quantizers (-1 = not used).
        loss: the sum of the levels' losses."""
        rows, lead, axis = self._rows(z, channel_dim)
        kept = num_levels if num_levels is not None else _levels_kept(
            self.num_quantizers, self.training, self.quantizer_dropout, self.dropout_min_levels, self.generator)
        if not 1 <= kept <= self.num_quantizers:
            raise ValueError(f"ResidualVQ: num_levels must be in 1..{self.num_quantizers}, got {kept}")
        residual = rows
        total = torch.zeros_like(rows)
        loss = rows.new_zeros((), dtype=torch.float32)
        per_level = []
        for index in range(kept):
            out = self.level(index)(residual)
            total = total + out.quantized
            residual = residual - out.quantized.detach()
            loss = loss + out.loss
            per_level.append(out.indices)
        indices = _stack_indices(per_level, self.num_quantizers, per_level[0])
        valid = None if mask is None else _flat_mask(mask, lead)
        stats = _counted_usage(indices, self.num_codes, valid)
        return QuantizerOutput(from_rows(total.to(z.dtype), lead, axis),
                               indices.reshape(*lead, self.num_quantizers), loss, stats)

    @torch.no_grad()
    def decode(self, indices: torch.Tensor, channel_dim: int | None = None) -> torch.Tensor:
        """Sum of the levels' code vectors; index -1 (a dropped level) contributes nothing."""
        if indices.dim() < 1 or indices.shape[-1] > self.num_quantizers:
            raise ValueError(f"ResidualVQ.decode: indices need a trailing level axis of at most {self.num_quantizers}")
        lead = indices.shape[:-1]
        axis = resolve_channel_dim(self.channel_dim if channel_dim is None else channel_dim, len(lead) + 1,
                                   "ResidualVQ.decode")
        total = None
        for level in range(indices.shape[-1]):
            idx = indices[..., level]
            used = idx >= 0
            vectors = self.level(level).decode(idx.clamp_min(0), channel_dim=-1) * used.unsqueeze(-1)
            total = vectors if total is None else total + vectors
        return total.movedim(-1, axis)


class ResidualFSQ(nn.Module):
    """`num_quantizers` levels of FSQ with per-level scales (see the module docs for the two formulas).

    Args:
        levels: FSQ levels of every level (e.g. [8, 5, 5, 5]).
        num_quantizers: residual levels.
        dim: input channels (projected to len(levels) when different).
        formula: "vqtorch" (vector-quantize-pytorch 1.32) or "vqtorch-1.17.8".
        quantizer_dropout, dropout_min_levels, generator: see the module docs.
    """

    def __init__(self, levels, num_quantizers: int, dim: int | None = None, *, formula: str = "vqtorch",
                 quantizer_dropout: bool = False, dropout_min_levels: int = 1,
                 generator: torch.Generator | None = None, channel_dim: int = -1, projection_bias: bool = True):
        super().__init__()
        if formula not in RESIDUAL_FSQ_FORMULAS:
            raise ValueError(f"ResidualFSQ: formula must be one of {RESIDUAL_FSQ_FORMULAS}, got {formula!r}")
        if isinstance(num_quantizers, bool) or not isinstance(num_quantizers, int) or num_quantizers < 1:
            raise ValueError(f"ResidualFSQ: num_quantizers must be a positive int, got {num_quantizers!r}")
        self.formula = formula
        layer_formula = "symmetric" if formula == "vqtorch" else "cosmos"
        self.levels = check_levels(levels, layer_formula, "ResidualFSQ")
        self.num_quantizers = num_quantizers
        self.code_dim = len(self.levels)
        self.dim = self.code_dim if dim is None else int(dim)
        self.channel_dim = channel_dim
        self.quantizer_dropout = bool(quantizer_dropout)
        self.dropout_min_levels = int(dropout_min_levels)
        self.generator = generator
        projected = self.dim != self.code_dim
        self.project_in = nn.Linear(self.dim, self.code_dim, bias=projection_bias) if projected else None
        self.project_out = nn.Linear(self.code_dim, self.dim, bias=projection_bias) if projected else None
        self.fsq = FSQ(self.levels, formula=layer_formula)
        self.num_codes = self.fsq.num_codes
        base = torch.tensor(self.levels, dtype=torch.float32)
        base = base if formula == "vqtorch" else base - 1
        self.register_buffer("scales", torch.stack([base ** (-i) for i in range(num_quantizers)]),
                             persistent=False)

    def _rows(self, z: torch.Tensor, channel_dim: int | None):
        return checked_rows(z, self.channel_dim if channel_dim is None else channel_dim, self.dim, "ResidualFSQ")

    def _start(self, h: torch.Tensor) -> torch.Tensor:
        if self.formula == "vqtorch":
            clamp = 1 + 1 / (self.fsq._levels - 1)
            return torch.tanh(h / clamp) * clamp
        return self.fsq.bound(h)

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None, channel_dim: int | None = None,
                num_levels: int | None = None) -> QuantizerOutput:
        rows, lead, axis = self._rows(z, channel_dim)
        kept = num_levels if num_levels is not None else _levels_kept(
            self.num_quantizers, self.training, self.quantizer_dropout, self.dropout_min_levels, self.generator)
        if not 1 <= kept <= self.num_quantizers:
            raise ValueError(f"ResidualFSQ: num_levels must be in 1..{self.num_quantizers}, got {kept}")
        h = self.project_in(rows.to(self.project_in.weight.dtype)) if self.project_in is not None else rows
        h = h.to(torch.float64 if h.dtype == torch.float64 else torch.float32)
        residual = self._start(h)
        total = torch.zeros_like(residual)
        per_level = []
        for index in range(kept):
            scale = self.scales[index]
            values = self.fsq._values(residual / scale)
            per_level.append(self.fsq.values_to_indices(values))
            quantized = values * scale
            residual = residual - quantized.detach()
            total = total + quantized
        indices = _stack_indices(per_level, self.num_quantizers, per_level[0])
        out = total.to(rows.dtype)
        if self.project_out is not None:
            out = self.project_out(total.to(self.project_out.weight.dtype))
        valid = None if mask is None else _flat_mask(mask, lead)
        stats = _counted_usage(indices, self.num_codes, valid)
        return QuantizerOutput(from_rows(out.to(z.dtype), lead, axis), indices.reshape(*lead, self.num_quantizers),
                               rows.new_zeros((), dtype=torch.float32), stats)

    def decode(self, indices: torch.Tensor, channel_dim: int | None = None) -> torch.Tensor:
        if indices.dim() < 1 or indices.shape[-1] > self.num_quantizers:
            raise ValueError(f"ResidualFSQ.decode: indices need a trailing level axis of at most {self.num_quantizers}")
        check_indices(indices.clamp_min(0), self.num_codes, "ResidualFSQ.decode")
        lead = indices.shape[:-1]
        axis = resolve_channel_dim(self.channel_dim if channel_dim is None else channel_dim, len(lead) + 1,
                                   "ResidualFSQ.decode")
        total = None
        for level in range(indices.shape[-1]):
            idx = indices[..., level]
            values = self.fsq.indices_to_values(idx.clamp_min(0)) * self.scales[level] * (idx >= 0).unsqueeze(-1)
            total = values if total is None else total + values
        if self.project_out is not None:
            total = self.project_out(total.to(self.project_out.weight.dtype))
        return total.movedim(-1, axis)
