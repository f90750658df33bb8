"""Per-channel normalisation statistics and frame stacking: the steps between log-mel and the quantizer.

BEST-RQ normalises every mel channel to zero mean and unit variance over the utterance's
frames; without it the random projection sees mostly the channel means and the codes
collapse. The sums are accumulated exactly (features rounded to a 2**-12 grid, summed as
int64), so the statistics do not depend on summation order: one pass over a whole clip, a
streamed first pass over hours of audio in any chunking, and several clips in one batch give
bit-identical means and deviations, hence identical tokens.
"""
from __future__ import annotations

import torch

STATS_SCALE = 4096.0  # grid of the exact accumulators; |feature| < 2**19 / 4096 = 128
MAX_FRAMES = 2 ** 29  # int64 sum of squares cannot overflow below this many frames (~1490 h at 100 fps)
SUM_ROWS = 1024  # rows summed in float64 at a time: 1024 * 2**38 < 2**53 keeps those sums exact
STD_EPSILON = 1e-5  # added to the standard deviation (NeMo's per-feature normalisation constant)


class FeatureStats:
    """Mean and standard deviation per channel, either accumulated from frames or supplied by the user."""

    def __init__(self, num_channels: int):
        self.num_channels = int(num_channels)
        self.count = 0
        self._sum = torch.zeros(num_channels, dtype=torch.int64)
        self._sum_sq = torch.zeros(num_channels, dtype=torch.int64)
        self._fixed: tuple[torch.Tensor, torch.Tensor] | None = None
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    # ---- building ---------------------------------------------------------------------------
    @classmethod
    def from_features(cls, features: torch.Tensor) -> "FeatureStats":
        stats = cls(features.shape[-1])
        stats.update(features)
        return stats

    @classmethod
    def from_mean_std(cls, mean, std) -> "FeatureStats":
        """User-supplied statistics (e.g. computed once over a corpus): used as they are."""
        mean = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
        std = torch.as_tensor(std, dtype=torch.float64).reshape(-1)
        if mean.shape != std.shape:
            raise ValueError(f"stats: mean has {mean.numel()} channels but std has {std.numel()}")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()) or (std < 0).any():
            raise ValueError("stats: mean and std must be finite and std >= 0")
        stats = cls(mean.numel())
        stats._fixed = (mean, std)
        return stats

    def update(self, features: torch.Tensor) -> "FeatureStats":
        """Add frames (..., num_channels) to the running sums (exact, so order does not matter)."""
        if self._fixed is not None:
            raise ValueError("stats: supplied mean/std cannot be updated")
        if features.shape[-1] != self.num_channels:
            raise ValueError(f"stats: expected {self.num_channels} channels, got {features.shape[-1]}")
        # scaling by a power of two and rounding to an integer are exact in float32; sums of at most
        # SUM_ROWS such integers (and of their squares, < 2**38 each) are exact in float64 in any order.
        # Chunks of SUM_ROWS rows also keep the work in cache.
        rows = features.reshape(-1, self.num_channels)
        if rows.shape[0] == 0:
            return self
        if self.count + rows.shape[0] > MAX_FRAMES:
            raise ValueError(f"stats: more than {MAX_FRAMES} frames; supply statistics with from_mean_std")
        for chunk in rows.split(SUM_ROWS):
            q = torch.round(chunk.to(torch.float32) * STATS_SCALE)
            if not bool(q.abs().max() < 2.0 ** 19):  # also false for NaN
                raise ValueError("stats: features must be finite and lie in (-128, 128) for the sums to be exact")
            q = q.to(torch.float64)
            self._sum += q.sum(0).to(torch.int64)
            self._sum_sq += q.square_().sum(0).to(torch.int64)
        self.count += rows.shape[0]
        self._cache = None
        return self

    # ---- using -------------------------------------------------------------------------------
    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """float64 (mean, std) per channel; std is the unbiased (n - 1) deviation, 0 for a single frame."""
        if self._fixed is not None:
            return self._fixed
        if self.count == 0:
            raise ValueError("stats: no frames were accumulated")
        n = self.count
        mean = self._sum.to(torch.float64) / (n * STATS_SCALE)
        # sum((q - qbar)^2) = sum(q^2) - sum(q)^2 / n, in exact integers up to the final division
        centred = self._sum_sq.to(torch.float64) - (self._sum.to(torch.float64) ** 2) / n
        var = centred.clamp_min(0.0) / (max(n - 1, 1) * STATS_SCALE ** 2)
        return mean, var.sqrt()

    def _mean_and_divisor(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cache is None:
            mean, std = self.mean_std()
            self._cache = (mean.to(torch.float32), (std + STD_EPSILON).to(torch.float32))
        if features.shape[-1] != self.num_channels:
            raise ValueError(f"stats: features have {features.shape[-1]} channels, stats have {self.num_channels}")
        return self._cache

    def normalize(self, features: torch.Tensor) -> torch.Tensor:
        """(features - mean) / (std + 1e-5) in float32, elementwise (so any block split gives the same rows)."""
        mean, divisor = self._mean_and_divisor(features)
        return (features - mean) / divisor

    def normalize_(self, features: torch.Tensor) -> torch.Tensor:
        """`normalize` in place on float32 features (the same rounding; no new buffer per block)."""
        mean, divisor = self._mean_and_divisor(features)
        if features.dtype != torch.float32:
            raise ValueError(f"stats: normalize_ needs float32 features, got {features.dtype}")
        return features.sub_(mean).div_(divisor)

    def to_dict(self) -> dict:
        mean, std = self.mean_std()
        return {"mean": mean.tolist(), "std": std.tolist(), "count": self.count if self._fixed is None else None}

    @classmethod
    def from_dict(cls, data: dict) -> "FeatureStats":
        return cls.from_mean_std(data["mean"], data["std"])

    def __repr__(self) -> str:
        kind = "supplied" if self._fixed is not None else f"{self.count} frames"
        return f"FeatureStats({self.num_channels} channels, {kind})"


def stack_frames(features: torch.Tensor, stack: int) -> torch.Tensor:
    """(frames, C) -> (frames // stack, stack * C): consecutive frames side by side; a partial group is dropped."""
    usable = features.shape[0] // stack * stack
    return features[:usable].reshape(usable // stack, stack * features.shape[1])
