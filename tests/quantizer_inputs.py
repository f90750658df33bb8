"""Deterministic inputs of the quantizer fixtures, shared by their generator (scripts/fixtures/) and the tests.

Built from numpy's PCG64 raw 64-bit stream (stable across numpy versions), so the fixtures need not store the
inputs: random vectors at three scales, exact zeros, and the values that sit on FSQ's rounding boundaries
(with their float32 neighbours) for the levels under test.
"""
from __future__ import annotations

import math

import numpy as np


def uniform(seed: int, count: int) -> np.ndarray:
    raw = np.random.PCG64(seed).random_raw(count)
    return ((raw >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def gaussian(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Box-Muller normals, float64."""
    count = int(np.prod(shape))
    u = uniform(seed, 2 * ((count + 1) // 2)).reshape(2, -1)
    z = np.sqrt(-2.0 * np.log(u[0])) * np.cos(2.0 * math.pi * u[1])
    z2 = np.sqrt(-2.0 * np.log(u[0])) * np.sin(2.0 * math.pi * u[1])
    return np.concatenate([z, z2])[:count].reshape(shape)


def fsq_boundaries(levels: list[int], symmetric: bool, eps: float = 1e-3) -> np.ndarray:
    """Per channel, the inputs at which FSQ's level changes (float64), for the plain or the symmetric formula."""
    values = []
    for level in levels:
        if symmetric:
            cuts = [2.0 * (m - 0.5) / (level - 1) - 1.0 for m in range(1, level)]
        else:
            half_l = (level - 1) * (1 + eps) / 2
            offset = 0.5 if level % 2 == 0 else 0.0
            shift = math.atanh(offset / half_l)
            lo, hi = -(level // 2), (level - 1) - level // 2
            cuts = [math.atanh((k + 0.5 + offset) / half_l) - shift for k in range(lo, hi)
                    if abs((k + 0.5 + offset) / half_l) < 1]
        values.append(np.array(cuts))
    return values


def fsq_inputs(seed: int, levels: list[int], n: int, symmetric: bool = False) -> np.ndarray:
    """(n, len(levels)) float32: normals at scales 0.3 / 1 / 3, zeros, and boundary values with neighbours."""
    d = len(levels)
    z = gaussian(seed, (n, d)) * np.repeat([0.3, 1.0, 3.0], (n + 2) // 3)[:n, None]
    z = z.astype(np.float32)
    z[: n // 50] = 0.0
    cuts = fsq_boundaries(levels, symmetric)
    rows = n // 5
    picks = (uniform(seed + 1, rows * d) * 1e6).astype(np.int64).reshape(rows, d)
    block = np.stack([cuts[i][picks[:, i] % len(cuts[i])] for i in range(d)], axis=1).astype(np.float32)
    nudge = picks % 3 - 1  # -1, 0, +1 ulp
    target = np.where(nudge > 0, np.float32(np.inf), np.where(nudge < 0, np.float32(-np.inf), block))
    block = np.nextafter(block, target.astype(np.float32))
    z[n // 50: n // 50 + rows] = block
    return z
