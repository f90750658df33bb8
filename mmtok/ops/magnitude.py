"""The range guard of `nearest_code`: rows whose magnitudes could overflow the expanded form are done in fp64.

Every backend scores bias_k - 2 x.c_k in fp32 (the reference in fp64 for fp64 inputs). For finite inputs near
the top of the float range (x = 3e38) those products overflow and each backend returns a different wrong code.
Which rows are at risk follows from a bound that needs only max|x_i| per row and max|c| over the codebook:
|x.c| <= D max|x| max|c| and ||c||^2 <= D max|c|^2 (the cosine metric's risk is the norm itself, D max|x|^2).
A row whose bound passes SAFE_EXPONENT of its compute precision is scored by the float64 reference instead, on
every backend alike, so the answer is the same (and right) everywhere; if even float64 could overflow (fp64
inputs whose products pass 1e307) the call is refused with a ValueError naming the magnitudes. Ordinary data
never comes within dozens of orders of magnitude of either limit, so only the guard's one min/max pass over x
is paid.
"""
from __future__ import annotations

import math

import torch

# 2^126 in fp32 (its max is just under 2^128) and 2^1020 in fp64: a factor of 4 left for rounding on the bound
SAFE_EXPONENT = {torch.float32: 126, torch.float64: 1020}


def _bound(row_max: torch.Tensor, code_max: float, dim: int, metric: str) -> torch.Tensor:
    if metric == "cosine":
        return dim * torch.maximum(row_max.square(), torch.full_like(row_max, code_max * code_max))
    if metric == "dot":
        return 2.0 * dim * row_max * code_max
    return dim * (2.0 * row_max * code_max + code_max * code_max)


def _abs_maxima(x: torch.Tensor, codebook: torch.Tensor) -> tuple[float, float]:
    """(max |x|, max |codebook|), NaN where one holds a NaN: aminmax reads each once without an |t| temporary,
    and one transfer brings the four numbers back (one sync on a GPU)."""
    ends = torch.stack([v.to(torch.float64) for v in (*torch.aminmax(x), *torch.aminmax(codebook))]).tolist()
    return tuple(math.nan if math.isnan(lo) or math.isnan(hi) else max(-lo, hi)
                 for lo, hi in (ends[:2], ends[2:]))


def risky_rows(x: torch.Tensor, codebook: torch.Tensor, metric: str, compute: torch.dtype) -> torch.Tensor | None:
    """Bool (N,) of the rows the `compute`-precision kernels cannot score safely; None when there are none or
    when some value is not finite (the backends refuse those themselves, with their own message)."""
    if x.shape[0] == 0:
        return None
    x_max, code_max = _abs_maxima(x, codebook)  # per-row maxima only when the whole x is at risk
    if not (math.isfinite(code_max) and math.isfinite(x_max)):
        return None
    if float(_bound(torch.tensor([x_max], dtype=torch.float64), code_max, codebook.shape[1], metric)) <= \
            2.0 ** SAFE_EXPONENT[compute]:
        return None
    row_max = torch.linalg.vector_norm(x, ord=math.inf, dim=1).to(torch.float64)  # max |x_i| per row, exact
    bound = _bound(row_max, code_max, codebook.shape[1], metric)
    worst = float(bound.max())
    if worst <= 2.0 ** SAFE_EXPONENT[compute]:
        return None
    if worst > 2.0 ** SAFE_EXPONENT[torch.float64]:
        raise ValueError(f"nearest_code: x values up to {float(row_max.max()):.3g} and codebook values up to "
                         f"{code_max:.3g} (D = {codebook.shape[1]}, metric {metric!r}) overflow even a float64 "
                         "distance computation; rescale the inputs")
    return bound > 2.0 ** SAFE_EXPONENT[compute]
