"""Loads the compiled extension `mmtok._C` once; if it is missing or broken, records why and warns once.

Import of mmtok never fails because of the extension: the op falls back to the torch reference.
The result is kept in a plain module global (not an lru_cache) so `torch.compile` reads it as a constant.
"""
from __future__ import annotations

import warnings

_STATE: tuple | None = None  # (module or None, reason it is unavailable or None)


def _load():
    try:
        from mmtok import _C  # noqa: F401  (loading it registers torch.ops.mmtok_C.*)
    except Exception as exc:  # ImportError, or an undefined symbol from a torch mismatch
        reason = f"mmtok._C failed to load ({type(exc).__name__}: {exc}); rebuild with `make install`"
        warnings.warn(f"mmtok: compiled kernels unavailable, using the torch reference: {reason}", RuntimeWarning, stacklevel=4)
        return None, reason
    return _C, None


def load():
    """(module or None, reason it is unavailable or None)."""
    global _STATE
    if _STATE is None:
        _STATE = _load()
    return _STATE


def has_cpu_kernel() -> bool:
    return load()[0] is not None


def has_cuda_kernel() -> bool:
    mod = load()[0]
    return mod is not None and bool(mod.with_cuda())
