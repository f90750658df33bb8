"""The `mmtok::` nearest-code operators: one signature, the kernels written in Python, the fake and autograd.

Packaged as pytorch/extension-cpp packages custom ops. `mmtok::nearest_code` is defined by the compiled library
(csrc/extension.cpp) with its CPU and CUDA kernels registered in C++ per dispatch key; when the library is absent
it is defined here with the same signature and the torch reference as its kernel (CompositeExplicitAutograd: any
device). The two backends written in Python are ops of the same signature: `mmtok::nearest_code_reference` (the
torch reference, the ground truth every kernel is tested against) and `mmtok::nearest_code_triton`. The backend is
chosen outside the traced op (`nearest_code.nearest_code`), never passed to it.

Every one of them gets the same fake kernel (shape checks, then the output shapes: what `torch.compile` traces)
and the same autograd formula (the gradient of the returned distance; indices are constants). The outputs are
(distances, indices): the differentiable one first, as torch's op checks sum outputs in order.

The Triton op is a plain custom op, not `torch.library.triton_op`: a triton_op's body doubles as its fake kernel,
so it must be traceable, and this backend's body is not (the finiteness ValueError and the float64 range guard of
`magnitude` decide on values).
"""
from __future__ import annotations

import torch

from . import _extension
from .magnitude import risky_rows
from .reference import METRICS, compute_dtype, exact_distances, nearest_code_reference

# Also written in csrc/extension.cpp (TORCH_LIBRARY); tests/test_nearest_code.py checks the two are equal.
NEAREST_CODE_SIGNATURE = "(Tensor x, Tensor codebook, str metric) -> (Tensor, Tensor)"
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

_LIB = torch.library.Library("mmtok", "FRAGMENT")  # kept alive for the process: it owns the registrations


def _check_finite(t: torch.Tensor, name: str) -> None:
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"nearest_code: {name} contains non-finite values (NaN or Inf)")


def run_guarded(x: torch.Tensor, codebook: torch.Tensor, metric: str, kernel, compute: torch.dtype):
    """`kernel`'s (indices, distances) after the finiteness check, with rows at risk of overflow in `compute`
    scored by the float64 reference instead (see magnitude)."""
    risky = risky_rows(x, codebook, metric, compute)
    if risky is None:
        _check_finite(x, "x")
        _check_finite(codebook, "codebook")
        return kernel(x, codebook, metric)
    indices = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    distances = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    safe = ~risky
    if bool(safe.any()):
        indices[safe], distances[safe] = kernel(x[safe].contiguous(), codebook, metric)
    indices[risky], distances[risky] = nearest_code_reference(x[risky].double(), codebook.double(), metric)
    return indices, distances


def reference_kernel(x: torch.Tensor, codebook: torch.Tensor, metric: str):
    """The torch backend: (indices, distances) of the chunked reference, in fp64 when either input is fp64."""
    return run_guarded(x, codebook, metric, nearest_code_reference, compute_dtype(x, codebook))


def _triton_indices_and_distances(x, codebook, metric):
    from .triton_kernel import nearest_code_triton  # imports triton: only when this backend runs

    indices = nearest_code_triton(x, codebook, metric)
    return indices, exact_distances(x, codebook, indices, metric)


def triton_kernel(x: torch.Tensor, codebook: torch.Tensor, metric: str):
    """The triton backend: (indices, distances); the kernel scores in fp32."""
    return run_guarded(x, codebook, metric, _triton_indices_and_distances, torch.float32)


def _as_op_kernel(kernel):
    def op_kernel(x, codebook, metric):
        indices, distances = kernel(x, codebook, metric)
        return distances, indices

    return op_kernel


def _fake(x, codebook, metric):
    """Output shapes, after the checks the kernels make (what torch.compile and torch.export trace)."""
    torch._check_value(metric in METRICS, lambda: f"nearest_code: metric must be one of {METRICS}, got {metric!r}")
    torch._check_value(x.dim() == 2, lambda: f"nearest_code: x must be (N, D), got rank {x.dim()}")
    torch._check_value(codebook.dim() == 2, lambda: f"nearest_code: codebook must be (K, D), got rank {codebook.dim()}")
    torch._check_value(x.dtype in _FLOAT_DTYPES and codebook.dtype in _FLOAT_DTYPES,
                       lambda: f"nearest_code: x and codebook must be floating, got {x.dtype} and {codebook.dtype}")
    torch._check_value(x.device == codebook.device,
                       lambda: f"nearest_code: x is on {x.device} but codebook is on {codebook.device}")
    torch._check_value(x.shape[1] == codebook.shape[1],
                       lambda: f"nearest_code: x has D = {x.shape[1]} but codebook has D = {codebook.shape[1]}")
    torch._check_value(codebook.shape[0] > 0, lambda: "nearest_code: codebook is empty (K = 0)")
    n = x.shape[0]
    return x.new_empty((n,), dtype=torch.float32), x.new_empty((n,), dtype=torch.int64)


def _setup_context(ctx, inputs, output):
    x, codebook, metric = inputs
    _, indices = output
    ctx.save_for_backward(x, codebook, indices)
    ctx.metric = metric
    ctx.mark_non_differentiable(indices)


def _backward(ctx, grad_dist, grad_indices):
    """Gradient of the returned distance to the chosen code, w.r.t. x and the codebook (indices are constants)."""
    x, codebook, indices = ctx.saved_tensors
    dtype = compute_dtype(x, codebook)
    xs, cs = x.to(dtype), codebook.to(dtype)
    chosen = cs.index_select(0, indices)
    g = grad_dist.to(dtype).unsqueeze(-1)
    if ctx.metric == "dot":  # d(-x.c)/dx = -c, d(-x.c)/dc = -x
        grad_x = -chosen * g
        grad_rows = -xs * g
    elif ctx.metric == "cosine":
        # d(1 - <u, v>)/dx with u = x/|x|, v = c/|c|: -(v - <u,v> u)/|x|, and symmetrically for c.
        xn, cn = xs.norm(dim=-1, keepdim=True).clamp_min(1e-12), chosen.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        u, v = xs / xn, chosen / cn
        sim = (u * v).sum(-1, keepdim=True)
        grad_x = -(v - sim * u) / xn * g
        grad_rows = -(u - sim * v) / cn * g
    else:
        diff = xs - chosen
        grad_x = 2.0 * diff * g
        grad_rows = -2.0 * diff * g
    grad_c = torch.zeros_like(cs).index_add_(0, indices, grad_rows)
    return grad_x.to(x.dtype), grad_c.to(codebook.dtype), None


def _register():
    python_kernels = {"nearest_code_reference": reference_kernel, "nearest_code_triton": triton_kernel}
    if not _extension.has_cpu_kernel():  # no compiled library: the same schema, with the reference as its kernel
        python_kernels["nearest_code"] = reference_kernel
    for name, kernel in python_kernels.items():
        _LIB.define(name + NEAREST_CODE_SIGNATURE)
        _LIB.impl(name, _as_op_kernel(kernel), "CompositeExplicitAutograd")
    for name in ("nearest_code", "nearest_code_reference", "nearest_code_triton"):
        torch.library.register_fake(f"mmtok::{name}", _fake, lib=_LIB)
        torch.library.register_autograd(f"mmtok::{name}", _backward, setup_context=_setup_context, lib=_LIB)


_register()

# The op each backend runs (resolved once; `torch.compile` reads these as constants).
OPS = {
    "cpp": torch.ops.mmtok.nearest_code.default,  # the CPU kernel (C++), chosen by the dispatcher for CPU tensors
    "cuda": torch.ops.mmtok.nearest_code.default,  # the CUDA kernel (C++), for CUDA tensors
    "torch": torch.ops.mmtok.nearest_code_reference.default,
    "triton": torch.ops.mmtok.nearest_code_triton.default,
}
# What the same backends run without the dispatcher, for eager calls that need no autograd (see nearest_code).
PYTHON_KERNELS = {"torch": reference_kernel, "triton": triton_kernel}
