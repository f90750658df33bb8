"""`nearest_code`: index of the nearest codebook row for every vector, without an N x K distance matrix.

The public function validates shapes (ValueError naming the argument), flattens leading dimensions,
resolves the backend and calls the custom op `mmtok::nearest_code`, which is what `torch.compile`
sees (an opaque op with a fake implementation) and what autograd differentiates (distances only).
"""
from __future__ import annotations

import torch

from . import backends
from .magnitude import risky_rows
from .reference import METRICS, compute_dtype, exact_distances, nearest_code_reference

METRIC_CODES = {name: code for code, name in enumerate(METRICS)}  # the compiled kernels' integer argument
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _check_finite(t: torch.Tensor, name: str) -> None:
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"nearest_code: {name} contains non-finite values (NaN or Inf)")


def _run_backend(x: torch.Tensor, codebook: torch.Tensor, metric: str, backend: str):
    """The backend's (indices, distances), with rows at risk of fp32 overflow scored in float64 (see magnitude)."""
    compute = compute_dtype(x, codebook) if backend == "torch" else torch.float32  # the kernels compute in fp32
    risky = risky_rows(x, codebook, metric, compute)
    if risky is None:
        return _run_kernel(x, codebook, metric, backend)
    indices = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    distances = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    safe = ~risky
    if bool(safe.any()):
        indices[safe], distances[safe] = _run_kernel(x[safe].contiguous(), codebook, metric, backend)
    indices[risky], distances[risky] = nearest_code_reference(x[risky].double(), codebook.double(), metric)
    return indices, distances


def _run_kernel(x: torch.Tensor, codebook: torch.Tensor, metric: str, backend: str):
    if backend == "cpp":
        return torch.ops.mmtok_C.nearest_code_cpu(x, codebook, METRIC_CODES[metric])
    if backend == "cuda":
        return torch.ops.mmtok_C.nearest_code_cuda(x, codebook, METRIC_CODES[metric])
    _check_finite(x, "x")
    _check_finite(codebook, "codebook")
    if backend == "triton":
        from .triton_kernel import nearest_code_triton

        indices = nearest_code_triton(x, codebook, metric)
        return indices, exact_distances(x, codebook, indices, metric)
    return nearest_code_reference(x, codebook, metric)


@torch.library.custom_op("mmtok::nearest_code", mutates_args=())
def nearest_code_op(x: torch.Tensor, codebook: torch.Tensor, metric: str, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """x (N, D), codebook (K, D) -> distances fp32 (N,), indices int64 (N,). `backend` is already resolved.

    The differentiable output comes first (torch's op checks sum outputs in order, starting from the first).
    """
    indices, distances = _run_backend(x, codebook, metric, backend)
    return distances, indices


@nearest_code_op.register_fake
def _(x, codebook, metric, backend):
    n = x.shape[0]
    return x.new_empty((n,), dtype=torch.float32), x.new_empty((n,), dtype=torch.int64)


def _setup_context(ctx, inputs, output):
    x, codebook, metric, _ = inputs
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
    return grad_x.to(x.dtype), grad_c.to(codebook.dtype), None, None


nearest_code_op.register_autograd(_backward, setup_context=_setup_context)


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
    if _needs_op(flat, codebook):
        distances, indices = nearest_code_op(flat, codebook, metric, name)
    else:  # the op's own implementation, without the dispatcher's first-call import of torch._dynamo (seconds)
        indices, distances = _run_backend(flat, codebook, metric, name)
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
