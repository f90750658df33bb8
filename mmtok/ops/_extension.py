"""Loads the compiled extension `mmtok._C` once; if it is missing or broken, records why and warns once.

Import of mmtok never fails because of the extension: the op falls back to the torch reference.
"""
from __future__ import annotations

import functools
import warnings


@functools.lru_cache(maxsize=None)
def load():
    """(module or None, reason it is unavailable or None)."""
    try:
        from mmtok import _C  # noqa: F401  (loading it registers torch.ops.mmtok_C.*)
    except Exception as exc:  # ImportError, or an undefined symbol from a torch mismatch
        reason = f"mmtok._C failed to load ({type(exc).__name__}: {exc}); rebuild with `make install`"
        warnings.warn(f"mmtok: compiled kernels unavailable, using the torch reference: {reason}", RuntimeWarning, stacklevel=3)
        return None, reason
    return _C, None


def has_cpu_kernel() -> bool:
    return load()[0] is not None


def has_cuda_kernel() -> bool:
    mod = load()[0]
    return mod is not None and bool(getattr(mod, "with_cuda", lambda: False)())
