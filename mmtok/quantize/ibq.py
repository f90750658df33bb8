"""Index backpropagation quantization (IBQ; Emu3.5, Apertus 1.5, SEED-Voken's IBQ tokenizers).

The code is the maximum inner product z . e_k over the codebook. The gradient is straight-through on the
softmax of those logits: upstream forms one_hot = hard - softmax.detach() + softmax and z_q = one_hot @ E, so
every code receives gradient in proportion to its probability. Doing that literally builds several N x K
matrices (4096 positions x 131,072 codes is 2 GiB each). Here the forward pass is one fused maximum-inner-product
lookup (`mmtok.nearest_code(metric="dot")`, no N x K matrix) and the backward pass recomputes the softmax one
block of rows at a time: the same gradients, memory O(block x K).

Loss (upstream `IndexPropagationQuantize`): mean((z_q - z)^2) + mean((sg(z_q_hard) - z)^2)
+ beta * mean((z_q_hard - sg(z))^2), where z_q_hard = E[index]; the optional MAGVIT-v2 entropy loss over the
softmax(logits / entropy_temperature) is added with `entropy_weight`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import nearest_code
from .fsq import _flat_mask, check_indices
from .layout import checked_rows, from_rows, resolve_channel_dim
from .output import QuantizerOutput, code_counts, usage_stats

ROW_BLOCK_ELEMENTS = 1 << 24  # rows per backward block: about 64 MiB of fp32 logits


def _row_block(k: int) -> int:
    return max(1, ROW_BLOCK_ELEMENTS // max(k, 1))


def max_inner_product(z: torch.Tensor, codebook: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """argmax_k z . e_k for every row (ties to the lowest index), without an N x K matrix."""
    return nearest_code(z.detach(), codebook.detach(), metric="dot", backend=backend)[0]


class _SoftmaxStraightThrough(torch.autograd.Function):
    """z_q = E[index] forward; backward as d/dz, d/dE of (hard - sg(p) + p) @ E with p = softmax(z E^T)."""

    @staticmethod
    def forward(ctx, z, codebook, indices):
        ctx.save_for_backward(z, codebook, indices)
        return codebook.index_select(0, indices)

    @staticmethod
    def backward(ctx, grad):
        z, codebook, indices = ctx.saved_tensors
        grad_z = torch.empty_like(z) if ctx.needs_input_grad[0] else None
        grad_c = torch.zeros_like(codebook).index_add_(0, indices, grad) if ctx.needs_input_grad[1] else None
        rows = _row_block(codebook.shape[0])
        # one workspace for every block (a fresh 2 x block x K buffer per block would be page-faulted in each time):
        # the logits and d/dp of a block come from one GEMM, [z_b; g_b] @ E^T, and the softmax and its backward
        # run in place on it
        work = z.new_empty(2 * min(rows, z.shape[0]), codebook.shape[0])
        for start in range(0, z.shape[0], rows):
            zb, gb = z[start:start + rows], grad[start:start + rows]
            n = zb.shape[0]
            both = work[: 2 * n]
            torch.mm(torch.cat([zb, gb]), codebook.t(), out=both)
            p, gp = both[:n], both[n:]
            p.sub_(p.amax(dim=-1, keepdim=True)).exp_()
            p.div_(p.sum(dim=-1, keepdim=True))  # softmax(z_b E^T)
            gp.mul_(p)  # p * dL/dp
            gl = gp.addcmul_(p, gp.sum(dim=-1, keepdim=True), value=-1.0)  # back through the softmax
            if grad_z is not None:
                torch.mm(gl, codebook, out=grad_z[start:start + n])
            if grad_c is not None:
                grad_c.addmm_(gl.t(), zb)
        return grad_z, grad_c, None


def _entropy_terms(z: torch.Tensor, codebook: torch.Tensor, temperature: float, eps: float = 1e-5):
    """MAGVIT-v2 entropy loss over softmax(z E^T / T), one block of rows at a time."""
    n = z.shape[0]
    rows = _row_block(codebook.shape[0])
    sample, avg = z.new_zeros(()), None
    for start in range(0, n, rows):
        logits = (z[start:start + rows] @ codebook.t()) / temperature
        log_p = torch.log_softmax(logits, dim=-1)
        p = log_p.exp()
        sample = sample - (p * log_p).sum()
        part = p.sum(0)
        avg = part if avg is None else avg + part
    avg = avg / n
    return sample / n, -(avg * (avg + eps).log()).sum()


class IBQ(nn.Module):
    """Index backpropagation quantizer: `num_codes` learned codes of `dim` channels, maximum-inner-product lookup.

    Args:
        num_codes, dim: codebook size and width.
        beta: commitment weight.
        entropy_weight: weight of the MAGVIT-v2 entropy loss (0 disables it), at `entropy_temperature`.
        channel_dim: channel axis of the input.
        backend: for the lookup (`mmtok.nearest_code`).
    """

    def __init__(self, num_codes: int, dim: int, *, beta: float = 0.25, entropy_weight: float = 0.0,
                 entropy_temperature: float = 0.01, channel_dim: int = -1, backend: str = "auto"):
        super().__init__()
        if isinstance(num_codes, bool) or not isinstance(num_codes, int) or num_codes < 1:
            raise ValueError(f"IBQ: num_codes must be a positive int, got {num_codes!r}")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"IBQ: dim must be a positive int, got {dim!r}")
        self.num_codes, self.dim = num_codes, dim
        self.beta = float(beta)
        self.entropy_weight = float(entropy_weight)
        self.entropy_temperature = float(entropy_temperature)
        self.channel_dim = channel_dim
        self.backend = backend
        self.codebook = nn.Parameter(torch.empty(num_codes, dim).uniform_(-1.0 / num_codes, 1.0 / num_codes))

    def extra_repr(self) -> str:
        return f"num_codes={self.num_codes}, dim={self.dim}, beta={self.beta}, entropy_weight={self.entropy_weight}"

    def _rows(self, z: torch.Tensor, channel_dim: int | None):
        return checked_rows(z, self.channel_dim if channel_dim is None else channel_dim, self.dim, "IBQ")

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None, channel_dim: int | None = None
                ) -> QuantizerOutput:
        rows, lead, axis = self._rows(z, channel_dim)
        compute = torch.float64 if rows.dtype == torch.float64 else torch.float32
        h, codebook = rows.to(compute), self.codebook.to(compute)
        indices = max_inner_product(h, codebook, self.backend)
        q = _SoftmaxStraightThrough.apply(h, codebook, indices)
        hard = F.embedding(indices, codebook)
        valid = None if mask is None else _flat_mask(mask, lead)
        pick = (lambda t: t) if valid is None else (lambda t: t[valid])
        hv, qv, hardv = pick(h), pick(q), pick(hard)
        if hv.numel():
            loss = (F.mse_loss(qv, hv) + F.mse_loss(hardv.detach(), hv)
                    + self.beta * F.mse_loss(hardv, hv.detach()))
        else:
            loss = h.new_zeros(())
        stats = usage_stats(code_counts(pick(indices), self.num_codes))
        if self.training and self.entropy_weight and hv.shape[0]:
            per_sample, codebook_entropy = _entropy_terms(hv, codebook, self.entropy_temperature)
            loss = loss + self.entropy_weight * (per_sample - codebook_entropy)
            stats.update(per_sample_entropy=per_sample.detach(), codebook_entropy=codebook_entropy.detach())
        quantized = from_rows(q.to(z.dtype), lead, axis)
        return QuantizerOutput(quantized, indices.reshape(lead), loss.float(), stats)

    @torch.no_grad()
    def lookup(self, z: torch.Tensor, channel_dim: int | None = None) -> torch.Tensor:
        rows, lead, _ = self._rows(z, channel_dim)
        compute = torch.float64 if rows.dtype == torch.float64 else torch.float32
        return max_inner_product(rows.to(compute), self.codebook.to(compute), self.backend).reshape(lead)

    @torch.no_grad()
    def decode(self, indices: torch.Tensor, channel_dim: int | None = None) -> torch.Tensor:
        check_indices(indices, self.num_codes, "IBQ.decode")
        axis = resolve_channel_dim(self.channel_dim if channel_dim is None else channel_dim, indices.dim() + 1,
                                   "IBQ.decode")
        return F.embedding(indices.long().to(self.codebook.device), self.codebook.float()).movedim(-1, axis)
