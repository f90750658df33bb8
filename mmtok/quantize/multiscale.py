"""VAR's multi-scale residual quantizer: one codebook, token maps from coarse to fine, shared Φ convolutions.

Visual AutoRegressive modelling (VAR, Tian et al. 2024) tokenizes a latent f (B, C, H, W) into K token maps of
growing size (1x1, 2x2, ..., HxW; 680 tokens for the released 10 scales at 16x16). At scale k the residual is
area-downsampled to (h_k, w_k), every position takes its nearest code, the code map is bicubic-upsampled back to
(H, W), passed through a Φ convolution (φ(h) = (1 - r) h + r conv3x3(h)), added to the running reconstruction
f_hat and subtracted from the residual. The last scale is the full resolution: no resampling either way.

Φ sharing follows VAR's `share_quant_resi`: 0 = one Φ per scale, 1 = one Φ for all, n > 1 = n Φ spread over the
scales; scale k uses the Φ whose "tick" is nearest k / (K - 1), the ticks being linspace(1/(3n), 1 - 1/(3n), n)
when n == 4 and linspace(1/(2n), 1 - 1/(2n), n) otherwise (VAR's rule, reproduced to the bit, first tick on
ties). A ratio r of 0 means no Φ at all (identity).

The lookup is `mmtok.nearest_code` (squared L2, or cosine for VAR's `using_znorm`), in fp32 whatever the input
dtype; no distance matrix is built. `forward` returns VAR's training loss (the mean over scales of
beta * |sg(f_hat_k) - f|^2 + |f_hat_k - sg(f)|^2, a mean squared error each) and the straight-through f_hat.

Indices are one (B, L) tensor, L = sum of h_k * w_k, scales concatenated coarse to fine and each map row-major:
the sequence VAR's transformer reads (`split` gives the per-scale maps back).

Differences from the upstream module, all outside its numerics: a single scale is allowed (upstream divides by
K - 1 = 0), and the `ema_vocab_hit_SV` usage monitor is not kept (usage comes back in `stats`).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import nearest_code
from .layout import resolve_channel_dim
from .output import QuantizerOutput, code_counts, usage_stats

VAR_SCALES = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
LOOKUP_METRICS = ("l2", "cosine")


def _scale_sizes(scales) -> tuple[tuple[int, int], ...]:
    if isinstance(scales, (int, str)) or not isinstance(scales, Sequence) or len(scales) == 0:
        raise ValueError(f"MultiScaleResidualVQ: scales must be a non-empty sequence of sizes, got {scales!r}")
    sizes = []
    for s in scales:
        hw = (s, s) if isinstance(s, int) else tuple(s)
        if len(hw) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in hw):
            raise ValueError(f"MultiScaleResidualVQ: every scale must be a positive int or (h, w), got {s!r}")
        sizes.append(hw)
    return tuple(sizes)


def phi_ticks(count: int) -> list[float]:
    """VAR's tick positions of `count` Φ layers on [0, 1] (numpy.linspace's arithmetic, in float64)."""
    margin = 1 / 3 / count if count == 4 else 1 / 2 / count
    start, stop = margin, 1 - margin
    if count == 1:
        return [start]
    step = (stop - start) / (count - 1)
    return [i * step + start for i in range(count - 1)] + [stop]


def phi_index(scale: int, num_scales: int, count: int) -> int:
    """Which of `count` Φ layers scale `scale` of `num_scales` uses: the tick nearest scale / (num_scales - 1)."""
    at = scale / (num_scales - 1) if num_scales > 1 else 0.0
    distances = [abs(t - at) for t in phi_ticks(count)]
    return distances.index(min(distances))


class Phi(nn.Module):
    """φ(h) = (1 - ratio) * h + ratio * conv3x3(h), computed in fp32."""

    def __init__(self, dim: int, ratio: float):
        super().__init__()
        self.ratio = float(ratio)
        self.conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        conv = F.conv2d(h, self.conv.weight.float(), self.conv.bias.float(), padding=1)
        return h * (1 - self.ratio) + conv * self.ratio


class MultiScaleResidualVQ(nn.Module):
    """VAR's multi-scale residual quantizer (see the module docstring).

    Args:
        num_codes, dim: codebook size and code dimension (VAR: 4096, 32).
        scales: token-map sizes, coarse to fine, ints (square) or (h, w); the last is the latent size.
        phi_ratio: r of φ (VAR's `quant_resi`, 0.5); 0 disables Φ.
        phi_count: VAR's `share_quant_resi`: 0 = one Φ per scale, 1 = shared, n = n partially shared (4).
        metric: "l2" or "cosine" (VAR's `using_znorm`).
        beta: commitment weight.
        channel_dim: where the channels are in forward/encode inputs and decode outputs (1 or -1).
    """

    def __init__(self, num_codes: int, dim: int, scales=VAR_SCALES, *, phi_ratio: float = 0.5, phi_count: int = 4,
                 metric: str = "l2", beta: float = 0.25, channel_dim: int = 1, backend: str = "auto"):
        super().__init__()
        for name, value in (("num_codes", num_codes), ("dim", dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"MultiScaleResidualVQ: {name} must be a positive int, got {value!r}")
        if metric not in LOOKUP_METRICS:
            raise ValueError(f"MultiScaleResidualVQ: metric must be one of {LOOKUP_METRICS}, got {metric!r}")
        if not isinstance(phi_count, int) or phi_count < 0:
            raise ValueError(f"MultiScaleResidualVQ: phi_count must be an int >= 0, got {phi_count!r}")
        self.sizes = _scale_sizes(scales)
        self.num_codes, self.dim, self.metric, self.beta = num_codes, dim, metric, float(beta)
        self.channel_dim, self.backend = channel_dim, backend
        self.phi_ratio = float(phi_ratio)
        self.codebook = nn.Parameter(torch.empty(num_codes, dim).uniform_(-1 / num_codes, 1 / num_codes))
        count = len(self.sizes) if phi_count == 0 else phi_count
        self.phi_count = phi_count
        use_phi = abs(self.phi_ratio) > 1e-6
        self.phis = nn.ModuleList([Phi(dim, abs(self.phi_ratio)) for _ in range(count)] if use_phi else [])
        self._phi_of_scale = [phi_index(k, len(self.sizes), count) for k in range(len(self.sizes))]

    @property
    def num_tokens(self) -> int:
        """L: tokens per latent, all scales."""
        return sum(h * w for h, w in self.sizes)

    @property
    def latent_size(self) -> tuple[int, int]:
        return self.sizes[-1]

    def extra_repr(self) -> str:
        return (f"num_codes={self.num_codes}, dim={self.dim}, scales={self.sizes}, phi_ratio={self.phi_ratio}, "
                f"phi_count={self.phi_count}, metric={self.metric!r}, beta={self.beta}")

    # ------------------------------------------------------------------------------------------ helpers
    def phi(self, scale: int, h: torch.Tensor) -> torch.Tensor:
        return self.phis[self._phi_of_scale[scale]](h) if len(self.phis) else h

    def _latent(self, z: torch.Tensor, channel_dim: int | None) -> torch.Tensor:
        if not isinstance(z, torch.Tensor) or not z.is_floating_point() or z.dim() != 4:
            raise ValueError("MultiScaleResidualVQ: z must be a 4-d floating tensor (B, C, H, W) or (B, H, W, C)")
        axis = resolve_channel_dim(self.channel_dim if channel_dim is None else channel_dim, 4, "MultiScaleResidualVQ")
        if axis not in (1, 3):
            raise ValueError("MultiScaleResidualVQ: channel_dim must be 1 (B, C, H, W) or -1 (B, H, W, C)")
        f = z if axis == 1 else z.permute(0, 3, 1, 2)
        if f.shape[1] != self.dim:
            raise ValueError(f"MultiScaleResidualVQ: z has {f.shape[1]} channels, the codebook has dim {self.dim}")
        if tuple(f.shape[2:]) != self.latent_size:
            raise ValueError(f"MultiScaleResidualVQ: z is {tuple(f.shape[2:])} spatially but the last scale is "
                             f"{self.latent_size}")
        return f

    def _output_layout(self, f: torch.Tensor, channel_dim: int | None) -> torch.Tensor:
        axis = resolve_channel_dim(self.channel_dim if channel_dim is None else channel_dim, 4, "MultiScaleResidualVQ")
        return f if axis == 1 else f.permute(0, 2, 3, 1)

    def _codes(self) -> torch.Tensor:
        return self.codebook.float()

    def _lookup(self, rest: torch.Tensor, size: tuple[int, int], last: bool) -> torch.Tensor:
        """Codes (B, h, w) of the residual at one scale."""
        down = rest if last else F.interpolate(rest, size=size, mode="area")
        rows = down.permute(0, 2, 3, 1).reshape(-1, self.dim)
        indices = nearest_code(rows.detach(), self._codes().detach(), metric=self.metric, backend=self.backend)[0]
        return indices.view(rest.shape[0], *size)

    def _contribution(self, scale: int, indices: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """What scale `scale`'s code map adds to f_hat: embed, bicubic up to the latent size (not at the last
        scale), Φ."""
        h = F.embedding(indices, codes).permute(0, 3, 1, 2)
        if scale != len(self.sizes) - 1:
            h = F.interpolate(h, size=self.latent_size, mode="bicubic")
        return self.phi(scale, h.contiguous())

    # ----------------------------------------------------------------------------------------- public API
    def forward(self, z: torch.Tensor, channel_dim: int | None = None) -> QuantizerOutput:
        """Quantize a latent: straight-through f_hat (z's layout and dtype), indices (B, L), VAR's loss, usage."""
        f = self._latent(z, channel_dim).float()
        target = f.detach()
        rest = target.clone()
        f_hat = torch.zeros_like(target)
        codes = self._codes()
        loss = f.new_zeros(())
        per_scale = []
        for k, size in enumerate(self.sizes):
            indices = self._lookup(rest, size, last=k == len(self.sizes) - 1)
            h = self._contribution(k, indices, codes)
            f_hat = f_hat + h
            rest = rest - h.detach()
            loss = loss + self.beta * F.mse_loss(f_hat.detach(), f) + F.mse_loss(f_hat, target)
            per_scale.append(indices.reshape(indices.shape[0], -1))
        loss = loss / len(self.sizes)
        quantized = (f_hat.detach() - target) + f  # value f_hat; gradient straight through to the encoder only
        indices = torch.cat(per_scale, dim=1)
        stats = usage_stats(code_counts(indices, self.num_codes))
        return QuantizerOutput(self._output_layout(quantized.to(z.dtype), channel_dim), indices, loss.float(), stats)

    @torch.no_grad()
    def lookup(self, z: torch.Tensor, channel_dim: int | None = None) -> torch.Tensor:
        """Indices (B, L) only: no loss, no statistics."""
        f = self._latent(z, channel_dim).float()
        rest = f.clone()
        codes = self._codes()
        per_scale = []
        for k, size in enumerate(self.sizes):
            indices = self._lookup(rest, size, last=k == len(self.sizes) - 1)
            rest.sub_(self._contribution(k, indices, codes))
            per_scale.append(indices.reshape(indices.shape[0], -1))
        return torch.cat(per_scale, dim=1)

    def split(self, indices: torch.Tensor) -> list[torch.Tensor]:
        """(B, L) indices -> the per-scale token maps [(B, h_k, w_k)], coarse to fine."""
        self._check_indices(indices, self.num_tokens)
        maps, start = [], 0
        for h, w in self.sizes:
            maps.append(indices[:, start:start + h * w].reshape(-1, h, w))
            start += h * w
        return maps

    def _check_indices(self, indices, length: int | None) -> None:
        if not isinstance(indices, torch.Tensor) or indices.dtype.is_floating_point or indices.dtype == torch.bool:
            raise ValueError("MultiScaleResidualVQ: indices must be an integer tensor")
        if indices.dim() != 2 or (length is not None and indices.shape[1] != length):
            raise ValueError(f"MultiScaleResidualVQ: indices must be (B, {length}) (all scales, coarse to fine), "
                             f"got {tuple(indices.shape)}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.num_codes):
            raise ValueError(f"MultiScaleResidualVQ: indices must lie in [0, {self.num_codes}), got "
                             f"[{int(indices.min())}, {int(indices.max())}]")

    @torch.no_grad()
    def decode(self, indices: torch.Tensor, channel_dim: int | None = None, *, num_scales: int | None = None
               ) -> torch.Tensor:
        """f_hat (fp32, in the channel layout) from (B, L') indices of the first `num_scales` scales (all by
        default; fewer gives VAR's coarse reconstructions, e.g. for progressive decoding)."""
        count = len(self.sizes) if num_scales is None else num_scales
        if not isinstance(count, int) or not 1 <= count <= len(self.sizes):
            raise ValueError(f"MultiScaleResidualVQ.decode: num_scales must be in [1, {len(self.sizes)}], got {num_scales!r}")
        self._check_indices(indices, sum(h * w for h, w in self.sizes[:count]))
        indices = indices.long().to(self.codebook.device)
        codes = self._codes()
        f_hat = codes.new_zeros(indices.shape[0], self.dim, *self.latent_size)
        start = 0
        for k, (h, w) in enumerate(self.sizes[:count]):
            f_hat.add_(self._contribution(k, indices[:, start:start + h * w].reshape(-1, h, w), codes))
            start += h * w
        return self._output_layout(f_hat, channel_dim)

    # ------------------------------------------------------------------------------------- checkpoints
    def load_var_state_dict(self, state: dict, prefix: str = "quantize.") -> None:
        """Load VAR's `VectorQuantizer2` tensors (`{prefix}embedding.weight` and the Φ convolutions in any of its
        three sharing layouts), strictly: a missing, unexpected or mis-shaped tensor is a ValueError listing it."""
        own = {"codebook": f"{prefix}embedding.weight"}
        for i in range(len(self.phis)):
            if self.phi_count == 1:
                source = f"{prefix}quant_resi.qresi"
            elif self.phi_count == 0:
                source = f"{prefix}quant_resi.{i}"
            else:
                source = f"{prefix}quant_resi.qresi_ls.{i}"
            own[f"phis.{i}.conv.weight"] = f"{source}.weight"
            own[f"phis.{i}.conv.bias"] = f"{source}.bias"
        expected = {v for v in own.values()}
        present = {k for k in state if k.startswith(prefix) and not k.endswith("ema_vocab_hit_SV")}
        mine = self.state_dict()
        problems = [f"missing {k}" for k in sorted(expected - present)]
        problems += [f"unexpected {k}" for k in sorted(present - expected)]
        for name, key in own.items():
            if key in state and tuple(state[key].shape) != tuple(mine[name].shape):
                problems.append(f"{key}: shape {tuple(state[key].shape)}, expected {tuple(mine[name].shape)}")
        if problems:
            raise ValueError("MultiScaleResidualVQ: the VAR quantizer weights do not match this configuration: "
                             + "; ".join(problems))
        self.load_state_dict({name: state[key] for name, key in own.items()}, strict=True)
