"""Finite scalar quantization (FSQ): each channel rounded to one of L_i levels; the code index is the mixed-radix
number of the levels (channel 0 least significant), so the codebook (prod L_i codes) is implicit.

Checkpoints were trained with formulas that differ in small ways, and each gives other codes on most vectors,
so the formula is an explicit, named choice (`formula=`):

- "vqtorch": the FSQ paper's bound as `vector-quantize-pytorch` implements it today (1.32): with
  half_l = (L-1)(1+eps)/2, offset = 0.5 for even L, shift = atanh(offset / half_l):
  bound(z) = tanh(z + shift) * half_l - offset, level = round(bound(z)), value = level / (L // 2); the index is
  the mixed-radix sum of the shifted levels, rounded.
- "cosmos": the same bound and levels, but the index sum is truncated to an integer (`.to(int32)`), as NVIDIA's
  Cosmos tokenizer and `vector-quantize-pytorch` <= 1.17.8 do. (The float sum is exact for the usual levels, so
  this matters only where it is not.)
- "xcodec2": `vector-quantize-pytorch` 1.17.8's `ResidualFSQ` with one quantizer, which X-Codec2 and NeuCodec were
  trained with: the bound is applied twice (once on the projected input, once inside the layer) before rounding;
  truncated index.
- "symmetric": the symmetry-preserving quantizer that `vector-quantize-pytorch` 1.32's `ResidualFSQ` layers use
  (arXiv 2411.19842, section 3.2): value = 2/(L-1) * floor((L-1)(clamp(z, -1, 1) + 1)/2 + 0.5) - 1 (hard clamp;
  `soft_bound=True` uses tanh instead of the clamp); every L >= 2 allowed; rounded index.

The quantization runs in fp32 whatever the input dtype (in bf16 the bound rounds away whole levels and code
usage collapses, vector-quantize-pytorch #114); the output is cast back to the input dtype. Gradients pass
straight through the rounding.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .layout import checked_rows, from_rows, resolve_channel_dim
from .output import QuantizerOutput, code_counts, usage_stats

FORMULAS = ("vqtorch", "cosmos", "xcodec2", "symmetric")


class _NarrowLinear(torch.autograd.Function):
    """x @ W^T + b for a narrow x (few input channels, e.g. FSQ's 4 levels -> 256 channels), with the weight
    gradient formed as (x^T g)^T: autograd's g^T x runs the long reduction the slow way for such shapes
    (about 2.4x the time on CPU); the same sums."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return torch.addmm(bias, x, weight.t()) if bias is not None else x @ weight.t()

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad @ weight if ctx.needs_input_grad[0] else None
        grad_w = (x.t() @ grad).t() if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def narrow_linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`layer(x)` for 2-D x through _NarrowLinear (same value and gradients, faster weight gradient)."""
    if x.dim() != 2:
        return layer(x)
    return _NarrowLinear.apply(x, layer.weight, layer.bias)


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (x.round() - x).detach()


def _floor_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (x.floor() - x).detach()


def check_levels(levels, formula: str, what: str = "FSQ") -> list[int]:
    if isinstance(levels, (str, bytes)) or not hasattr(levels, "__iter__"):
        raise ValueError(f"{what}: levels must be a list of ints, got {levels!r}")
    levels = list(levels)
    if not levels or any(isinstance(v, bool) or not isinstance(v, int) for v in levels):
        raise ValueError(f"{what}: levels must be a non-empty list of ints, got {levels!r}")
    minimum = 2 if formula in ("symmetric", "cosmos") else 3  # Cosmos' bound is well defined at L = 2 ({-1, 0})
    if any(v < minimum for v in levels):
        raise ValueError(f"{what}: every level must be >= {minimum} for formula {formula!r}, got {levels} "
                         + ("(L = 2 needs formula='symmetric')" if minimum == 3 else ""))
    if math.prod(levels) > 2**31 - 1:
        raise ValueError(f"{what}: prod(levels) = {math.prod(levels)} does not fit an int32 index")
    return levels


class FSQ(nn.Module):
    """Finite scalar quantization of `dim`-channel vectors onto prod(levels) implicit codes.

    Args:
        levels: levels per quantized channel, e.g. [8, 5, 5, 5] (1000 codes) or [4] * 8 (65,536, X-Codec2).
        dim: channels of the input; when it differs from len(levels), `project_in` / `project_out` linears map
            between them (as the checkpoints that use FSQ do).
        formula: which published formula ("vqtorch", "cosmos", "xcodec2", "symmetric"; see the module docs).
        channel_dim: the channel axis of the input (-1 for (..., C); 1 for (B, C, H, W)).
        eps: the bound's margin (1e-3 in every implementation).
        projection_bias: whether the projections have a bias.
        soft_bound: for "symmetric" only, tanh instead of the hard clamp.
    """

    def __init__(self, levels, dim: int | None = None, *, formula: str = "vqtorch", channel_dim: int = -1,
                 eps: float = 1e-3, projection_bias: bool = True, soft_bound: bool = False):
        super().__init__()
        if formula not in FORMULAS:
            raise ValueError(f"FSQ: formula must be one of {FORMULAS}, got {formula!r}")
        self.formula = formula
        self.levels = check_levels(levels, formula)
        self.eps = float(eps)
        self.soft_bound = bool(soft_bound)
        self.channel_dim = channel_dim
        self.code_dim = len(self.levels)
        self.dim = self.code_dim if dim is None else int(dim)
        if self.dim < 1:
            raise ValueError(f"FSQ: dim must be positive, got {dim!r}")
        self.num_codes = math.prod(self.levels)
        projected = self.dim != self.code_dim
        self.project_in = nn.Linear(self.dim, self.code_dim, bias=projection_bias) if projected else None
        self.project_out = nn.Linear(self.code_dim, self.dim, bias=projection_bias) if projected else None
        basis = [1]
        for level in self.levels[:-1]:
            basis.append(basis[-1] * level)
        self.register_buffer("_levels", torch.tensor(self.levels, dtype=torch.float32), persistent=False)
        self.register_buffer("_basis", torch.tensor(basis, dtype=torch.float32), persistent=False)
        self.register_buffer("_basis_int", torch.tensor(basis, dtype=torch.int64), persistent=False)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, dim={self.dim}, formula={self.formula!r}, num_codes={self.num_codes}"

    # ------------------------------------------------------------------------------------ formulas
    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """The tanh bound of the FSQ paper: each channel squeezed into (-(L-1)/2 - offset, (L-1)/2 - offset)."""
        levels = self._levels
        half_l = (levels - 1) * (1 + self.eps) / 2
        offset = torch.where(levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def _values(self, z: torch.Tensor) -> torch.Tensor:
        """fp32 latents -> quantized values in [-1, 1] (straight-through)."""
        if self.formula == "symmetric":
            levels_minus_1 = self._levels - 1
            bounded = torch.tanh(z) if self.soft_bound else z.clamp(-1.0, 1.0)
            bracket = _floor_ste(levels_minus_1 * (bounded + 1) / 2.0 + 0.5)
            return (2.0 / levels_minus_1) * bracket - 1.0
        if self.formula == "xcodec2":
            z = self.bound(z)
        half_width = torch.floor(self._levels / 2)
        return _round_ste(self.bound(z)) / half_width

    def _level_digits(self, values: torch.Tensor) -> torch.Tensor:
        """Quantized values -> per-channel level numbers 0..L-1 (float, as each formula computes them)."""
        if self.formula == "symmetric":
            return (values + 1.0) / (2.0 / (self._levels - 1))
        half_width = torch.floor(self._levels / 2)
        return values * half_width + half_width

    def values_to_indices(self, values: torch.Tensor) -> torch.Tensor:
        """(..., len(levels)) quantized values -> int64 indices, rounded or truncated as the formula does."""
        total = (self._level_digits(values.detach()) * self._basis).sum(dim=-1)
        if self.formula in ("cosmos", "xcodec2"):
            return total.to(torch.int32).to(torch.int64)
        return total.round().to(torch.int64)

    def indices_to_values(self, indices: torch.Tensor) -> torch.Tensor:
        """int indices -> (..., len(levels)) fp32 quantized values (the implicit codebook entries)."""
        digits = (indices.long().unsqueeze(-1) // self._basis_int) % self._basis_int.new_tensor(self.levels)
        digits = digits.to(torch.float32)
        if self.formula == "symmetric":
            return digits * (2.0 / (self._levels - 1)) - 1.0
        half_width = torch.floor(self._levels / 2)
        return (digits - half_width) / half_width

    # ------------------------------------------------------------------------------------ public API
    def _rows(self, z: torch.Tensor, channel_dim: int | None):
        return checked_rows(z, self.channel_dim if channel_dim is None else channel_dim, self.dim, "FSQ")

    def _latents(self, rows: torch.Tensor) -> torch.Tensor:
        h = self.project_in(rows.to(self.project_in.weight.dtype)) if self.project_in is not None else rows
        return h.to(torch.float64 if h.dtype == torch.float64 else torch.float32)

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None, channel_dim: int | None = None
                ) -> QuantizerOutput:
        """Quantize z. Returns quantized (z's shape and dtype), int64 indices (z's shape without channels), a
        zero loss (FSQ has none) and usage stats over the positions where `mask` (z's shape without channels,
        True = real data) is set."""
        rows, lead, axis = self._rows(z, channel_dim)
        values = self._values(self._latents(rows))
        indices = self.values_to_indices(values)
        out = values.to(rows.dtype)
        if self.project_out is not None:
            out = narrow_linear(self.project_out, out.to(self.project_out.weight.dtype))
        quantized = from_rows(out.to(z.dtype), lead, axis)
        counted = indices if mask is None else indices[_flat_mask(mask, lead)]
        stats = usage_stats(code_counts(counted, self.num_codes))
        loss = rows.new_zeros((), dtype=torch.float32)
        return QuantizerOutput(quantized, indices.reshape(lead), loss, stats)

    @torch.no_grad()
    def lookup(self, z: torch.Tensor, channel_dim: int | None = None) -> torch.Tensor:
        """Indices only (z's shape without the channel axis)."""
        rows, lead, _ = self._rows(z, channel_dim)
        return self.values_to_indices(self._values(self._latents(rows))).reshape(lead)

    def decode(self, indices: torch.Tensor, channel_dim: int | None = None) -> torch.Tensor:
        """Code vectors (through project_out) for int indices, channels inserted at channel_dim."""
        check_indices(indices, self.num_codes, "FSQ.decode")
        axis = resolve_channel_dim(self.channel_dim if channel_dim is None else channel_dim, indices.dim() + 1,
                                   "FSQ.decode")
        vectors = self.indices_to_values(indices.to(self._basis_int.device))
        if self.project_out is not None:
            vectors = self.project_out(vectors.to(self.project_out.weight.dtype))
        return vectors.movedim(-1, axis)


def check_indices(indices, num_codes: int, what: str) -> None:
    if not isinstance(indices, torch.Tensor) or indices.dtype.is_floating_point or indices.dtype == torch.bool:
        raise ValueError(f"{what}: indices must be an integer tensor")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= num_codes):
        raise ValueError(f"{what}: indices must lie in [0, {num_codes}), got [{int(indices.min())}, "
                         f"{int(indices.max())}]")


def _flat_mask(mask: torch.Tensor, lead: torch.Size) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(lead):
        raise ValueError(f"mask must be a tensor of shape {tuple(lead)} (the input without its channel axis), "
                         f"got {getattr(mask, 'shape', type(mask).__name__)}")
    return mask.reshape(-1).to(torch.bool)
