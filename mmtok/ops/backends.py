"""Which backends exist on this machine, which one `auto` picks, and why one is unavailable."""
from __future__ import annotations

import os

import torch

from . import _extension

BACKENDS = ("cpp", "cuda", "triton", "torch")


def triton_unavailable_reason(device: torch.device | None = None) -> str | None:
    try:
        import triton  # noqa: F401
    except Exception as exc:
        return f"triton is not installed ({exc}); `pip install mmtok[triton]`"
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if device is not None and device.type == "cpu" and not interpret:
        return "triton runs CPU tensors only under TRITON_INTERPRET=1"
    if device is None and not torch.cuda.is_available() and not interpret:
        return "no CUDA device (set TRITON_INTERPRET=1 to run it on CPU tensors)"
    return None


def unavailable_reason(backend: str, device: torch.device | None = None) -> str | None:
    """None when `backend` can run on `device` (or anywhere, when device is None), else the reason."""
    if backend == "torch":
        return None
    if backend == "cpp":
        if device is not None and device.type != "cpu":
            return f"the cpp kernel runs on CPU tensors, got {device.type}"
        return _extension.load()[1]
    if backend == "cuda":
        if device is not None and device.type != "cuda":
            return f"the cuda kernel runs on CUDA tensors, got {device.type}"
        reason = _extension.load()[1]
        if reason:
            return reason
        if not _extension.has_cuda_kernel():
            return "mmtok._C was built without CUDA (torch had no CUDA at build time)"
        return None
    if backend == "triton":
        return triton_unavailable_reason(device)
    raise ValueError(f"backend must be one of {('auto',) + BACKENDS}, got {backend!r}")


def resolve(backend: str, device: torch.device, compute_dtype: torch.dtype) -> str:
    """The concrete backend for a call: `auto` picks the fastest available; an explicit one must be available."""
    if backend != "auto":
        reason = unavailable_reason(backend, device)
        if reason:
            raise ValueError(f"backend={backend!r} is not available for {device.type} tensors: {reason}")
        return backend
    if compute_dtype == torch.float64:
        return "torch"  # the kernels accumulate in fp32; the reference keeps fp64 inputs exact
    order = ("cpp",) if device.type == "cpu" else ("cuda", "triton")
    for name in order:
        if unavailable_reason(name, device) is None:
            return name
    return "torch"


def info() -> dict:
    """Availability of every backend, with the reason where one is missing."""
    report = {"torch": torch.__version__, "cuda_device": torch.cuda.is_available(), "backends": {}}
    for name in BACKENDS:
        reason = unavailable_reason(name)
        report["backends"][name] = {"available": reason is None, "reason": reason}
    if _extension.has_cpu_kernel():
        report["cpu_capability"] = _extension.cpu_capability()
    return report


def set_cpu_capability(isa: str = "") -> str | None:
    """Force the C++ CPU kernel's instruction set ("avx512", "avx2", "portable"; "" = the best the CPU has,
    as MMTOK_CPU_CAPABILITY does at start-up) and return the one now in use (an unsupported request falls back
    to the best available); None without the extension. For tests and benchmarks of every ISA path."""
    if isa not in ("", "avx512", "avx2", "portable"):
        raise ValueError(f"set_cpu_capability: expected '', 'avx512', 'avx2' or 'portable', got {isa!r}")
    if not _extension.has_cpu_kernel():
        return None
    _extension.set_cpu_capability(isa)
    return _extension.cpu_capability()


_extension.load()  # once, at import: resolving a backend inside a compiled region then reads a constant
