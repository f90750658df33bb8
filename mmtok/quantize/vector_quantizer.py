"""`VectorQuantizer`: the VQ-VAE / VQ-GAN codebook layer for training loops and for inference lookups.

Lookups go through the fused `mmtok.nearest_code` op (no N x K distance matrix); distances, the loss and every
codebook update run in fp32 (fp64 inputs stay fp64) while the output keeps the input dtype, so it is safe under
bf16/fp16 autocast. Under torch.distributed every state change (EMA statistics, k-means init, dead-code
re-seeding) is summed or broadcast over ranks, so all ranks hold the same codebook after every step.

torch.compile: `forward` is graph-break free. The state changes of a training step (k-means init, EMA update,
usage tracking and dead-code re-seeding) are a no-grad step that runs inside `forward` in eager mode and is
skipped while compiling; with a compiled forward call `vq.update(z, out.indices)` yourself after each forward.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import nearest_code
from . import distributed
from .dead_codes import replacement_rows
from .ema import batch_statistics, ema_update_, laplace_smoothed_codebook
from .gradient import rotation_trick, straight_through
from .kmeans import distributed_kmeans
from .layout import checked_rows, from_rows, resolve_channel_dim
from .output import QuantizerOutput, code_counts, usage_stats


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"VectorQuantizer: {name} must be a positive int, got {value!r}")
    return value


class VectorQuantizer(nn.Module):
    """Nearest-code quantisation with a learned codebook.

    Args:
        num_codes: codebook size K.
        dim: channels of the input z.
        code_dim: when set, lookups happen in this (smaller) dimension through in_proj / out_proj linears (LlamaGen).
        l2_normalize: cosine codebook: z and the codes are l2-normalised at use (the stored codebook stays raw).
        beta: commitment weight; loss = codebook term + beta * commitment (codebook term is 0 under EMA).
        ema_decay: None learns the codebook by gradient; a float learns it by EMA of cluster sizes and sums.
        kmeans_init: the first training batch initialises the codebook by k-means.
        dead_code_threshold: codes whose running per-step usage count falls below this are re-seeded from the batch.
        rotation_trick: pass gradients with the rotation trick instead of straight-through.
        channel_dim: which axis of z holds the channels (1 for (B, C, H, W), -1 for (B, T, C) or (N, C)).
        legacy_beta: taming-transformers' placement, mean((q.detach()-z)^2) + beta * mean((q - z.detach())^2).
        ema_eps: Laplace smoothing constant. kmeans_iters: Lloyd iterations. usage_decay: decay of the usage
        count that drives dead-code re-seeding when the codebook is learned by gradient. backend: for nearest_code.
    """

    def __init__(self, num_codes: int, dim: int, *, code_dim: int | None = None, l2_normalize: bool = False,
                 beta: float = 0.25, ema_decay: float | None = None, kmeans_init: bool = False,
                 dead_code_threshold: float = 0.0, rotation_trick: bool = False, channel_dim: int = -1,
                 legacy_beta: bool = False, ema_eps: float = 1e-5, kmeans_iters: int = 10,
                 usage_decay: float = 0.99, backend: str = "auto"):
        super().__init__()
        self.num_codes = _positive_int(num_codes, "num_codes")
        self.dim = _positive_int(dim, "dim")
        self.code_dim = _positive_int(code_dim, "code_dim") if code_dim is not None else None
        if ema_decay is not None and not 0.0 <= float(ema_decay) < 1.0:
            raise ValueError(f"VectorQuantizer: ema_decay must be None or in [0, 1), got {ema_decay!r}")
        if not 0.0 <= float(usage_decay) < 1.0:
            raise ValueError(f"VectorQuantizer: usage_decay must be in [0, 1), got {usage_decay!r}")
        if float(dead_code_threshold) < 0:
            raise ValueError(f"VectorQuantizer: dead_code_threshold must be >= 0, got {dead_code_threshold!r}")
        if not isinstance(channel_dim, int):
            raise ValueError(f"VectorQuantizer: channel_dim must be an int, got {channel_dim!r}")
        self.l2_normalize = bool(l2_normalize)
        self.beta = float(beta)
        self.legacy_beta = bool(legacy_beta)
        self.ema_decay = None if ema_decay is None else float(ema_decay)
        self.ema_eps = float(ema_eps)
        self.kmeans_init = bool(kmeans_init)
        self.kmeans_iters = _positive_int(kmeans_iters, "kmeans_iters")
        self.dead_code_threshold = float(dead_code_threshold)
        self.usage_decay = float(usage_decay)
        self.rotation_trick = bool(rotation_trick)
        self.channel_dim = channel_dim
        self.backend = backend
        self._needs_rank_sync = True  # first update broadcasts rank 0's state (ranks may have seeded differently)

        lookup_dim = self.code_dim or self.dim
        self.in_proj = nn.Linear(self.dim, lookup_dim) if self.code_dim else None
        self.out_proj = nn.Linear(lookup_dim, self.dim) if self.code_dim else None
        if self.ema_decay is None:
            init = torch.empty(self.num_codes, lookup_dim).uniform_(-1.0 / self.num_codes, 1.0 / self.num_codes)
            self.codebook = nn.Parameter(init)
        else:
            init = torch.randn(self.num_codes, lookup_dim)
            self.register_buffer("codebook", init)
            self.register_buffer("ema_cluster_size", torch.ones(self.num_codes))
            self.register_buffer("ema_embed_sum", init.clone())
        if self.kmeans_init:
            self.register_buffer("initialized", torch.tensor(False))
        if self.dead_code_threshold > 0 and self.ema_decay is None:
            self.register_buffer("code_usage", torch.ones(self.num_codes))

    def extra_repr(self) -> str:
        return (f"num_codes={self.num_codes}, dim={self.dim}, code_dim={self.code_dim}, l2_normalize={self.l2_normalize}, "
                f"beta={self.beta}, ema_decay={self.ema_decay}, kmeans_init={self.kmeans_init}, "
                f"dead_code_threshold={self.dead_code_threshold}, rotation_trick={self.rotation_trick}")

    # ----------------------------------------------------------------------------------------- helpers
    def _rows(self, z: torch.Tensor, channel_dim: int | None):
        return checked_rows(z, self.channel_dim if channel_dim is None else channel_dim, self.dim, "VectorQuantizer")

    def _lookup_space(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows projected (code_dim) and normalised (l2_normalize) as they are compared with the codes;
        fp32 (fp64 for fp64 input)."""
        compute = torch.float64 if rows.dtype == torch.float64 else torch.float32
        h = self.in_proj(rows) if self.in_proj is not None else rows
        h = h.to(compute)
        return F.normalize(h, dim=-1) if self.l2_normalize else h

    def codes(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The codebook as used by lookups: in `dtype`, l2-normalised when l2_normalize."""
        codebook = self.codebook.to(dtype)
        return F.normalize(codebook, dim=-1) if self.l2_normalize else codebook

    def _nearest(self, h: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        return nearest_code(h.detach(), codes.detach(), metric="l2", backend=self.backend)[0]

    # ------------------------------------------------------------------------------------ public API
    def forward(self, z: torch.Tensor, channel_dim: int | None = None) -> QuantizerOutput:
        rows, lead, axis = self._rows(z, channel_dim)
        h = self._lookup_space(rows)
        updating = self.training and not torch.compiler.is_compiling()
        if updating:
            self._sync_ranks_once()  # before the lookup: every rank must look up in rank 0's codebook
        if updating and self.kmeans_init and not bool(self.initialized):
            self._initialize(h.detach())
        codes = self.codes(h.dtype)
        indices = self._nearest(h, codes)
        q = F.embedding(indices, codes)
        numel = max(h.numel(), 1)  # an empty batch gives a zero loss, not NaN
        commitment = (q.detach() - h).square().sum() / numel
        if self.ema_decay is not None:
            q = q.detach()
            loss = self.beta * commitment
        else:
            codebook_term = (q - h.detach()).square().sum() / numel
            loss = commitment + self.beta * codebook_term if self.legacy_beta else codebook_term + self.beta * commitment
        passed = rotation_trick(h, q) if self.rotation_trick else straight_through(h, q)
        out = self.out_proj(passed) if self.out_proj is not None else passed
        quantized = from_rows(out.to(z.dtype), lead, axis)
        if updating:
            counts = self._apply_update(h.detach(), indices)
        else:
            counts = code_counts(indices, self.num_codes)
        return QuantizerOutput(quantized, indices.reshape(lead), loss.float(), usage_stats(counts))

    @torch.no_grad()
    def lookup(self, z: torch.Tensor, channel_dim: int | None = None) -> torch.Tensor:
        """Indices only (shape of z without the channel dim): no loss, no stats, no state change."""
        rows, lead, _ = self._rows(z, channel_dim)
        h = self._lookup_space(rows)
        return self._nearest(h, self.codes(h.dtype)).reshape(lead)

    @torch.no_grad()
    def decode(self, indices: torch.Tensor, channel_dim: int | None = None) -> torch.Tensor:
        """Code vectors for `indices`, in forward's output layout (channels inserted at channel_dim)."""
        if not isinstance(indices, torch.Tensor) or indices.dtype.is_floating_point or indices.dtype == torch.bool:
            raise ValueError("VectorQuantizer.decode: indices must be an integer tensor")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.num_codes):
            raise ValueError(f"VectorQuantizer.decode: indices must lie in [0, {self.num_codes}), got "
                             f"[{int(indices.min())}, {int(indices.max())}]")
        axis = resolve_channel_dim(self.channel_dim if channel_dim is None else channel_dim, indices.dim() + 1,
                                   "VectorQuantizer.decode")
        vectors = F.embedding(indices.long().to(self.codebook.device), self.codes(torch.float32))
        if self.out_proj is not None:
            vectors = self.out_proj(vectors.to(self.out_proj.weight.dtype))
        return vectors.movedim(-1, axis)

    @torch.no_grad()
    def update(self, z: torch.Tensor, indices: torch.Tensor | None = None, channel_dim: int | None = None) -> dict:
        """The no-grad state step of one training batch (k-means init, EMA, dead-code re-seeding), for use when
        `forward` runs under torch.compile (which skips it). Pass forward's indices, or None to recompute them.
        Every rank must call it once per step. Returns usage stats over all ranks."""
        rows, _, _ = self._rows(z, channel_dim)
        h = self._lookup_space(rows)
        if self.kmeans_init and not bool(self.initialized):
            self._initialize(h)
            indices = None
        if indices is None:
            indices = self._nearest(h, self.codes(h.dtype))
        counts = self._apply_update(h, indices.reshape(-1).to(h.device))
        return usage_stats(counts)

    # ------------------------------------------------------------------------------ state changes
    @torch.no_grad()
    def broadcast_state(self, src: int = 0) -> None:
        """Copy rank `src`'s codebook and running statistics to every rank (no-op without a process group).
        Eager training does this once before its first step; with a compiled forward call it before training
        (or seed every rank identically). Every rank must call it."""
        self._needs_rank_sync = False
        if distributed.is_distributed():
            for tensor in (self.codebook, *self.buffers()):
                distributed.broadcast_(tensor.data, src=src)

    def _sync_ranks_once(self) -> None:
        if self._needs_rank_sync:
            self.broadcast_state(0)

    @torch.no_grad()
    def _initialize(self, h: torch.Tensor) -> None:
        """k-means of the first batch (over all ranks) becomes the codebook; skipped while no rank has data."""
        self._sync_ranks_once()
        centroids = distributed_kmeans(h, self.num_codes, self.kmeans_iters, cosine=self.l2_normalize)
        if centroids is None:
            return
        self.codebook.data.copy_(centroids)
        if self.ema_decay is not None:
            self.ema_cluster_size.fill_(1.0)
            self.ema_embed_sum.copy_(centroids)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _apply_update(self, h: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """EMA update and dead-code re-seeding from this batch; returns the code counts summed over ranks."""
        self._sync_ranks_once()
        h = h.detach()
        counts, sums = batch_statistics(h, indices, self.num_codes)
        distributed.all_reduce_sum_(counts)
        if self.ema_decay is not None:
            distributed.all_reduce_sum_(sums)
            if float(counts.sum()) > 0:  # same decision on every rank: counts are global
                ema_update_(self.ema_cluster_size, self.ema_embed_sum, counts, sums, self.ema_decay)
                self.codebook.copy_(laplace_smoothed_codebook(self.ema_cluster_size, self.ema_embed_sum, self.ema_eps))
        if self.dead_code_threshold > 0:
            if self.ema_decay is None:
                self.code_usage.mul_(self.usage_decay).add_(counts, alpha=1.0 - self.usage_decay)
                usage = self.code_usage
            else:
                usage = self.ema_cluster_size
            self._reseed(h, usage < self.dead_code_threshold)
        return counts

    @torch.no_grad()
    def _reseed(self, h: torch.Tensor, dead: torch.Tensor) -> None:
        rows = replacement_rows(h, dead)
        if rows is None:
            return
        rows = rows.to(self.codebook.dtype)
        self.codebook.data[dead] = rows
        if self.ema_decay is not None:
            self.ema_cluster_size[dead] = self.dead_code_threshold
            self.ema_embed_sum[dead] = rows * self.dead_code_threshold
        else:
            self.code_usage[dead] = self.dead_code_threshold
