"""BEST-RQ random-projection quantizer (Chiu et al. 2022): frozen targets for speech pre-training.

token = nearest code (cosine) of l2-normalise(x A), with A (input_dim x code_dim, Xavier-uniform, no bias)
and a codebook of standard-normal rows scaled to unit length. Both are buffers made from a local
torch.Generator seeded by `seed` on the CPU, so the same seed gives the same tokens on any machine and device.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..ops import nearest_code


def _frozen_tables(input_dim: int, code_dim: int, num_codes: int, num_codebooks: int, seed: int):
    """(projection (G, input_dim, code_dim), codebook (G, num_codes, code_dim)): codebook i's projection
    then its codebook are drawn in turn, so codebook 0 is the same whatever num_codebooks is."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    bound = math.sqrt(6.0 / (input_dim + code_dim))  # Xavier-uniform, gain 1
    projections, codebooks = [], []
    for _ in range(num_codebooks):
        projections.append((torch.rand(input_dim, code_dim, generator=generator) * 2.0 - 1.0) * bound)
        codes = torch.randn(num_codes, code_dim, generator=generator)
        codebooks.append(codes / codes.norm(dim=-1, keepdim=True))
    return torch.stack(projections), torch.stack(codebooks)


class RandomProjectionQuantizer(nn.Module):
    """Frozen BEST-RQ quantizer: features (B, T, input_dim) or (T, input_dim) -> int64 indices (..., num_codebooks),
    -1 where the mask marks padding."""

    def __init__(self, input_dim: int, *, code_dim: int = 16, num_codes: int = 8192, num_codebooks: int = 1,
                 seed: int = 0):
        super().__init__()
        for name, value in (("input_dim", input_dim), ("code_dim", code_dim), ("num_codes", num_codes),
                            ("num_codebooks", num_codebooks)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"RandomProjectionQuantizer: {name} must be a positive int, got {value!r}")
        self.input_dim, self.code_dim, self.num_codes, self.num_codebooks = input_dim, code_dim, num_codes, num_codebooks
        self.seed = int(seed)
        projection, codebook = _frozen_tables(input_dim, code_dim, num_codes, num_codebooks, self.seed)
        self.register_buffer("projection", projection)
        self.register_buffer("codebook", codebook)

    def extra_repr(self) -> str:
        return (f"input_dim={self.input_dim}, code_dim={self.code_dim}, num_codes={self.num_codes}, "
                f"num_codebooks={self.num_codebooks}, seed={self.seed}")

    @torch.no_grad()
    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        self._check(x, mask)
        indices = self.lookup(self.project(x))
        if mask is not None:
            indices = indices.masked_fill(~mask.to(indices.device).unsqueeze(-1), -1)
        return indices

    def _check(self, x, mask) -> None:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise ValueError("RandomProjectionQuantizer: x must be a floating tensor (B, T, input_dim) or (T, input_dim)")
        if x.dim() not in (2, 3) or x.shape[-1] != self.input_dim:
            raise ValueError(f"RandomProjectionQuantizer: x must have shape (B, T, {self.input_dim}) or "
                             f"(T, {self.input_dim}), got {tuple(x.shape)}")
        if mask is not None:
            if mask.dtype != torch.bool or tuple(mask.shape) != tuple(x.shape[:-1]):
                raise ValueError(f"RandomProjectionQuantizer: mask must be a bool tensor of shape {tuple(x.shape[:-1])} "
                                 f"(True = valid frame), got {mask.dtype} {tuple(mask.shape)}")

    @torch.no_grad()
    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Features (..., input_dim) -> projected (..., num_codebooks, code_dim) in fp32 (the first half of
        forward; a caller may project fixed-size blocks, whose BLAS rounding does not depend on the rest, and
        look the rows up together)."""
        projection = self.projection.float()
        features = x.to(device=projection.device, dtype=torch.float32)
        return torch.einsum("...d,gdc->...gc", features, projection)

    @torch.no_grad()
    def lookup(self, projected: torch.Tensor) -> torch.Tensor:
        """Projected rows (..., num_codebooks, code_dim) -> int64 indices (..., num_codebooks): each row's
        nearest code by cosine (row-independent: any grouping of rows gives the same indices)."""
        codebook = self.codebook.float()
        # nearest_code's cosine metric does the l2-normalisation
        return torch.stack(
            [nearest_code(projected[..., g, :], codebook[g], metric="cosine")[0] for g in range(self.num_codebooks)],
            dim=-1,
        )
