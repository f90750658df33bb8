"""Untrusted token ids -> one int64 array, without guessing.

Generated sequences arrive as lists, NumPy arrays or tensors. Only integers are ids: a float (97.9, or even
97.0), a numeric string, a bool, or an integer outside int64 is not silently converted (NumPy would truncate
97.9 to 97 and raise OverflowError for 2**63). Each such entry is reported by position; the decoder refuses it
in strict mode and treats it as a foreign token in lenient mode.
"""
from __future__ import annotations

import numpy as np
import torch

_LOW, _HIGH = -(2**63), 2**63 - 1
PLACEHOLDER = -1  # what a rejected entry becomes in the array (an id outside every vocabulary)


def _describe(value) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{text} ({type(value).__name__})"


def _element(value) -> str | None:
    """None for a valid id, else why not."""
    if isinstance(value, (bool, np.bool_)):
        return f"{_describe(value)} is a bool, not a token id"
    if isinstance(value, (int, np.integer)):
        if not _LOW <= int(value) <= _HIGH:
            return f"{_describe(value)} is outside the int64 range of token ids"
        return None
    return f"{_describe(value)} is not an integer token id"


def as_ids(ids) -> tuple[np.ndarray, dict[int, str]]:
    """(flat int64 ids, {position: why the entry there is not an id}); rejected entries hold PLACEHOLDER."""
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu()
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            flat = ids.reshape(-1).tolist()
            return np.full(len(flat), PLACEHOLDER, np.int64), {i: _element(v) for i, v in enumerate(flat)}
        ids = ids.numpy()
    if isinstance(ids, np.ndarray):
        flat = ids.reshape(-1)
        if flat.dtype.kind == "i":
            return flat.astype(np.int64), {}
        if flat.dtype.kind == "u":
            too_big = np.flatnonzero(flat > np.uint64(_HIGH)) if flat.dtype.itemsize == 8 else ()
            out = flat.astype(np.int64)
            out[too_big] = PLACEHOLDER
            return out, {int(i): _element(int(flat[i])) for i in too_big}
        values = flat.tolist()
    else:
        values = list(ids)
    if all(type(v) is int for v in values):  # the common case: plain ints
        try:
            return np.array(values, dtype=np.int64).reshape(-1), {}
        except OverflowError:
            pass
    out = np.full(len(values), PLACEHOLDER, np.int64)
    bad = {}
    for i, v in enumerate(values):
        why = _element(v)
        if why is None:
            out[i] = int(v)
        else:
            bad[i] = why
    return out, bad
