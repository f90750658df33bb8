"""DAC's residual vector quantiser with factorised, l2-normalised codes.

Each stage projects the residual to a small code dim (`in_proj`), picks the codebook row with the highest
cosine similarity (`mmtok.nearest_code(..., metric="cosine")`), maps the RAW (un-normalised) row back with
`out_proj` and subtracts it from the residual. Because `out_proj` is affine, out_proj(row) is a fixed table of
codebook_size vectors per stage: inference precomputes it, so decoding codes is a sum of table lookups.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmtok import nearest_code

from .layers import WNConv1d, _inference_mode_for


class CodebookStage(nn.Module):
    """One residual stage: in_proj (dim -> code_dim), codebook (size x code_dim), out_proj (code_dim -> dim)."""

    def __init__(self, dim: int, codebook_size: int, codebook_dim: int):
        super().__init__()
        self.in_proj = WNConv1d(dim, codebook_dim, 1)
        self.out_proj = WNConv1d(codebook_dim, dim, 1)
        self.codebook = nn.Embedding(codebook_size, codebook_dim)
        self._table: torch.Tensor | None = None
        self._table_key: tuple | None = None

    def project_in(self, rows: torch.Tensor) -> torch.Tensor:
        """(N, dim) -> (N, code_dim): the in-projection applied frame by frame."""
        return torch.addmm(self.in_proj.bias, rows, self.in_proj.weight()[:, :, 0].t())

    def lookup(self, latents: torch.Tensor) -> torch.Tensor:
        """(N, code_dim) -> int64 (N,): the most cosine-similar codebook row."""
        return nearest_code(latents, self.codebook.weight, metric="cosine")[0]

    def table(self) -> torch.Tensor:
        """(codebook_size, dim): out_proj of every raw codebook row (cached while the weights are unchanged)."""
        params = (self.codebook.weight, self.out_proj.weight_g, self.out_proj.weight_v, self.out_proj.bias)
        if not _inference_mode_for(*params):
            return torch.addmm(self.out_proj.bias, self.codebook.weight, self.out_proj.weight()[:, :, 0].t())
        key = tuple((p._version, p.data_ptr(), p.dtype) for p in params)
        if self._table_key != key:
            with torch.no_grad():
                w = self.out_proj.weight()[:, :, 0]
                self._table = torch.addmm(self.out_proj.bias, self.codebook.weight, w.t()).contiguous()
            self._table_key = key
        return self._table


class ResidualVectorQuantizer(nn.Module):
    """n_codebooks CodebookStages applied to successive residuals (DAC's `quantizer.quantizers.N`)."""

    def __init__(self, dim: int, n_codebooks: int, codebook_size: int, codebook_dim: int):
        super().__init__()
        self.dim, self.codebook_dim = dim, codebook_dim
        self.quantizers = nn.ModuleList(CodebookStage(dim, codebook_size, codebook_dim) for _ in range(n_codebooks))

    @torch.no_grad()
    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent (B, dim, F) -> codes int64 (B, n_codebooks, F)."""
        batch, _, frames = z.shape
        residual = z.transpose(1, 2).reshape(-1, self.dim).clone()
        codes = []
        for stage in self.quantizers:
            indices = stage.lookup(stage.project_in(residual))
            residual.sub_(stage.table().index_select(0, indices))
            codes.append(indices)
        return torch.stack(codes, 0).view(len(codes), batch, frames).transpose(0, 1)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, n, F) with n <= n_codebooks (a prefix: lower bitrate) -> latent (B, dim, F)."""
        batch, n, frames = codes.shape
        if n < 1 or n > len(self.quantizers):
            raise ValueError(f"codes: expected 1..{len(self.quantizers)} codebooks, got {n}")
        z = None
        for stage, stage_codes in zip(self.quantizers, codes.unbind(1)):
            part = stage.table().index_select(0, stage_codes.reshape(-1))
            z = part if z is None else z.add_(part)
        return z.view(batch, frames, self.dim).transpose(1, 2)

    def forward(self, z: torch.Tensor, n_quantizers: int | None = None):
        """Differentiable pass as in DAC training: returns (z_q, codes, latents, commitment_loss, codebook_loss).

        z_q uses the straight-through estimator; latents are the in_proj outputs (B, n*code_dim, F).
        """
        n_quantizers = len(self.quantizers) if n_quantizers is None else n_quantizers
        residual, z_q = z, torch.zeros_like(z)
        codes, latents = [], []
        commitment = codebook_loss = z.new_zeros(())
        for stage in self.quantizers[:n_quantizers]:
            z_e = stage.in_proj(residual)
            indices = stage.lookup(z_e.transpose(1, 2))
            chosen = stage.codebook(indices).transpose(1, 2)
            commitment = commitment + F.mse_loss(z_e, chosen.detach(), reduction="none").mean([1, 2])
            codebook_loss = codebook_loss + F.mse_loss(chosen, z_e.detach(), reduction="none").mean([1, 2])
            part = stage.out_proj(z_e + (chosen - z_e).detach())
            z_q = z_q + part
            residual = residual - part
            codes.append(indices)
            latents.append(z_e)
        return z_q, torch.stack(codes, 1), torch.cat(latents, 1), commitment.mean(), codebook_loss.mean()
