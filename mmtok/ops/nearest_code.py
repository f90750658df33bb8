"""`nearest_code`: index of the nearest codebook row for every vector, without an N x K distance matrix.

The public function validates shapes (ValueError naming the argument), flattens leading dimensions, resolves the
backend and calls that backend's operator (`registration.OPS`): `mmtok::nearest_code`, whose CPU and CUDA kernels
the compiled library registers per dispatch key, or the Python backends' `mmtok::nearest_code_reference` /
`mmtok::nearest_code_triton`. The op is what `torch.compile` sees (opaque, with a fake implementation) and what
autograd differentiates (distances only); the backend choice stays outside it.
"""
from __future__ import annotations

import torch

from . import backends
from .reference import METRICS, compute_dtype
from .registration import OPS, PYTHON_KERNELS

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def nearest_code(x: torch.Tensor, codebook: torch.Tensor, *, metric: str = "l2", backend: str = "auto"):
    """Nearest codebook row for every vector of `x`.

    Args:
        x: (..., D) floating tensor, any layout.
        codebook: (K, D) floating tensor on the same device.
        metric: "l2" (squared Euclidean), "cosine" (1 - cosine similarity of l2-normalised vectors) or "dot"
            (maximum inner product, as IBQ looks codes up: the returned distance is -x.c).
        backend: "auto", "cpp", "cuda", "triton" or "torch".

    Returns:
        (indices, distances): int64 and fp32, both shaped x.shape[:-1]. Exact ties go to the lowest index.
        Finite inputs of any magnitude get the right code on every backend: rows large enough to overflow the
        fp32 kernels (x near 3e38) are scored in float64 (`mmtok.ops.magnitude`); a distance beyond the fp32
        range is returned as inf. Non-finite values are a ValueError.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"nearest_code: x must be a torch.Tensor, got {type(x).__name__}")
    if not isinstance(codebook, torch.Tensor):
        raise ValueError(f"nearest_code: codebook must be a torch.Tensor, got {type(codebook).__name__}")
    if metric not in METRICS:
        raise ValueError(f"nearest_code: metric must be one of {METRICS}, got {metric!r}")
    if x.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"nearest_code: x must be a floating tensor (fp32/fp16/bf16/fp64), got {x.dtype}")
    if codebook.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"nearest_code: codebook must be a floating tensor (fp32/fp16/bf16/fp64), got {codebook.dtype}")
    if x.dim() < 1:
        raise ValueError("nearest_code: x must have at least one dimension (..., D), got a 0-d tensor")
    if codebook.dim() != 2:
        raise ValueError(f"nearest_code: codebook must have shape (K, D), got rank {codebook.dim()} shape {tuple(codebook.shape)}")
    if codebook.shape[0] == 0:
        raise ValueError("nearest_code: codebook is empty (K = 0)")
    if codebook.shape[1] == 0:
        raise ValueError("nearest_code: codebook has D = 0")
    if x.shape[-1] != codebook.shape[1]:
        raise ValueError(
            f"nearest_code: x has D = {x.shape[-1]} (shape {tuple(x.shape)}) but codebook has D = {codebook.shape[1]}"
        )
    if x.device != codebook.device:
        raise ValueError(f"nearest_code: x is on {x.device} but codebook is on {codebook.device}")
    name = backends.resolve(backend, x.device, compute_dtype(x, codebook))
    lead = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1])
    if flat.stride(-1) != 1:
        flat = flat.contiguous()
    if codebook.stride(-1) != 1:
        codebook = codebook.contiguous()
    if name in PYTHON_KERNELS and not _needs_op(flat, codebook):
        # the op's own implementation, without the dispatcher's first-call import of torch._dynamo (seconds)
        indices, distances = PYTHON_KERNELS[name](flat, codebook, metric)
    else:
        distances, indices = OPS[name](flat, codebook, metric)
    return indices.reshape(lead), distances.reshape(lead)


def _needs_op(x: torch.Tensor, codebook: torch.Tensor) -> bool:
    """Go through the custom op only where it matters: under torch.compile / tracing, or with autograd."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return True
    if type(x) not in _EAGER_TYPES or type(codebook) not in _EAGER_TYPES:  # fake / functional / other subclasses
        return True
    return torch.is_grad_enabled() and (x.requires_grad or codebook.requires_grad)


# nn.Parameter is a plain tensor that requires grad (e.g. a module's codebook; `weight.float()` of an fp32
# Parameter returns the Parameter itself): with grad mode off, or with requires_grad False, no autograd is needed,
# so it takes the direct path too. A Parameter wrapping a tensor subclass has the subclass's type, not Parameter.
_EAGER_TYPES = (torch.Tensor, torch.nn.Parameter)
