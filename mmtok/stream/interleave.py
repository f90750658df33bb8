"""Multi-codebook codes <-> one flat id run, frame by frame with per-codebook offsets.

(K, T) codes become [c[0,0]+o0, c[1,0]+o1, ..., c[K-1,0]+o_{K-1}, c[0,1]+o0, ...]: each frame's codebooks sit
together, and each codebook has its own id range, so the mapping is exactly reversible.
"""
from __future__ import annotations

import numpy as np
import torch


def interleave(codes: torch.Tensor, offsets: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """(K, T) codes -> (K*T,) ids. Raises ValueError if a code is outside its codebook."""
    codes = np.asarray(torch.as_tensor(codes).cpu(), dtype=np.int64)
    if codes.ndim != 2 or codes.shape[0] != len(offsets):
        raise ValueError(f"codes must be (num_codebooks={len(offsets)}, T), got shape {codes.shape}")
    bad = (codes < 0) | (codes >= sizes[:, None])
    if bad.any():
        k, t = np.argwhere(bad)[0]
        raise ValueError(f"code {codes[k, t]} at codebook {k}, frame {t} is outside [0, {sizes[k]})")
    return (codes + offsets[:, None]).T.reshape(-1)


def deinterleave(ids: np.ndarray, offsets: np.ndarray) -> torch.Tensor:
    """(K*T,) ids -> (K, T) codes; the inverse of interleave (ids must already be a whole number of frames)."""
    ids = np.asarray(ids, dtype=np.int64)
    k = len(offsets)
    if ids.size % k:
        raise ValueError(f"{ids.size} ids is not a whole number of {k}-codebook frames")
    return torch.from_numpy((ids.reshape(-1, k) - offsets[None, :]).T.copy())
