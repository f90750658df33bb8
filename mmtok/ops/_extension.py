"""Loads the compiled operator library `mmtok._C` once; if it is missing or broken, records why and warns once.

The library is a plain shared object of torch operators (no Python bindings, the stable-ABI `abi3` build of
pytorch/extension-cpp): `torch.ops.load_library` runs its registrations of `torch.ops.mmtok.*`. Import of mmtok
never fails because of it: the ops fall back to the torch reference (see `registration`).
The result is kept in a plain module global (not an lru_cache) so `torch.compile` reads it as a constant.
"""
from __future__ import annotations

import importlib.util
import warnings

import torch

_STATE: tuple | None = None  # (path of the loaded library or None, reason it is unavailable or None)


def _load():
    try:
        spec = importlib.util.find_spec("mmtok._C")
        if spec is None or not spec.origin:
            raise ImportError("mmtok._C is not built")
        torch.ops.load_library(spec.origin)
        torch.ops.mmtok.cpu_capability()  # the library's own helper op: proves the registrations ran
    except Exception as exc:  # not built, or an undefined symbol from a torch mismatch
        reason = f"mmtok._C failed to load ({type(exc).__name__}: {exc}); rebuild with `make install`"
        warnings.warn(f"mmtok: compiled kernels unavailable, using the torch reference: {reason}", RuntimeWarning, stacklevel=4)
        return None, reason
    return spec.origin, None


def load():
    """(path of the library or None, reason it is unavailable or None)."""
    global _STATE
    if _STATE is None:
        _STATE = _load()
    return _STATE


def has_cpu_kernel() -> bool:
    return load()[0] is not None


def has_cuda_kernel() -> bool:
    return has_cpu_kernel() and bool(torch.ops.mmtok.with_cuda())


def cpu_capability() -> str | None:
    """The instruction set the C++ CPU kernel uses now, or None without the library."""
    return str(torch.ops.mmtok.cpu_capability()) if has_cpu_kernel() else None


def set_cpu_capability(isa: str) -> None:
    torch.ops.mmtok.set_cpu_capability(isa)
