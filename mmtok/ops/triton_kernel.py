"""Triton backend of the nearest-code lookup: one program per block of rows loops over code tiles,
computes the (rows x codes) score tile with `tl.dot` in fp32 accumulation, and keeps each row's running
(best score, index) in registers; only the indices are written. Runs on CUDA devices, and on CPU
tensors under TRITON_INTERPRET=1 (slow: for tests on small shapes).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _nearest_code_kernel(
    x_ptr, c_ptr, bias_ptr, x_scale_ptr, c_scale_ptr, out_ptr,
    N, K, D, stride_x, stride_c,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr, IEEE: tl.constexpr, COSINE: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    best = tl.full([BLOCK_N], float("inf"), tl.float32)
    best_index = tl.zeros([BLOCK_N], tl.int32)
    if COSINE:
        x_scale = tl.load(x_scale_ptr + rows, mask=row_ok, other=0.0)
    for k0 in range(0, K, BLOCK_K):
        codes = k0 + tl.arange(0, BLOCK_K)
        code_ok = codes < K
        acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
        for d0 in range(0, D, BLOCK_D):
            dims = d0 + tl.arange(0, BLOCK_D)
            dim_ok = dims < D
            xt = tl.load(x_ptr + rows[:, None] * stride_x + dims[None, :], mask=row_ok[:, None] & dim_ok[None, :], other=0.0)
            ct = tl.load(c_ptr + codes[None, :] * stride_c + dims[:, None], mask=dim_ok[:, None] & code_ok[None, :], other=0.0)
            if IEEE:
                acc = tl.dot(xt, ct, acc, input_precision="ieee")
            else:
                acc = tl.dot(xt, ct, acc)
        bias = tl.load(bias_ptr + codes, mask=code_ok, other=float("inf"))
        if COSINE:  # inverse norms applied to the fp32 dot products: inputs are never re-rounded
            c_scale = tl.load(c_scale_ptr + codes, mask=code_ok, other=0.0)
            acc = acc * x_scale[:, None] * c_scale[None, :]
        score = bias[None, :] - 2.0 * acc
        tile_best = tl.min(score, axis=1)
        tile_index = tl.argmin(score, axis=1, tie_break_left=True)
        better = tile_best < best  # strict: an equal score in a later tile keeps the lower index
        best = tl.where(better, tile_best, best)
        best_index = tl.where(better, tile_index.to(tl.int32) + k0, best_index)
    tl.store(out_ptr + rows, best_index.to(tl.int64), mask=row_ok)


def _next_pow2(v: int) -> int:
    return 1 << max(0, (v - 1).bit_length())


def block_sizes(n: int, k: int, d: int, interpret: bool) -> tuple[int, int, int]:
    """Tile sizes: large tiles under the interpreter (cost is per step), GPU-friendly ones otherwise."""
    block_d = max(16, min(_next_pow2(d), 64 if not interpret else 256))
    if interpret:
        return max(16, min(_next_pow2(n), 128)), max(16, min(_next_pow2(k), 256)), block_d
    return 128, 64 if d > 64 else 128, block_d


def nearest_code_triton(x: torch.Tensor, codebook: torch.Tensor, metric: str) -> torch.Tensor:
    """Indices (int64, N) of the nearest code for each row of x (N, D) under "l2", "cosine" or "dot"."""
    cosine = metric == "cosine"
    interpret = x.device.type == "cpu"
    # fp64 has no tensor-core path; mixed dtypes meet in fp32; the interpreter (numpy) has no bfloat16.
    if x.dtype != codebook.dtype or x.dtype == torch.float64 or (interpret and torch.bfloat16 in (x.dtype, codebook.dtype)):
        x, codebook = x.float(), codebook.float()
    x, codebook = x.contiguous(), codebook.contiguous()
    if cosine:
        x_scale = 1.0 / x.float().norm(dim=-1).clamp_min(1e-12)
        c_scale = 1.0 / codebook.float().norm(dim=-1).clamp_min(1e-12)
        bias = torch.zeros(codebook.shape[0], dtype=torch.float32, device=x.device)
    else:  # l2: score ||c||^2 - 2 x.c; dot: -2 x.c
        bias = codebook.float().square().sum(-1) if metric == "l2" else \
            torch.zeros(codebook.shape[0], dtype=torch.float32, device=x.device)
        x_scale = c_scale = bias  # unused
    n, d = x.shape
    k = codebook.shape[0]
    out = torch.empty(n, dtype=torch.int64, device=x.device)
    if n == 0:
        return out
    bn, bk, bd = block_sizes(n, k, d, interpret)
    grid = (triton.cdiv(n, bn),)
    _nearest_code_kernel[grid](
        x, codebook, bias, x_scale, c_scale, out, n, k, d, x.stride(0), codebook.stride(0),
        BLOCK_N=bn, BLOCK_K=bk, BLOCK_D=bd, IEEE=x.dtype == torch.float32, COSINE=cosine,
    )
    return out
