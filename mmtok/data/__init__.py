"""Offline dataset tokenization: inputs -> resumable token shards (`mmtok tokenize`), and the reader.

`tokenize_dataset` (the Python side of `mmtok tokenize`), `TokenShards` (memory-mapped reader for
training loops), `verify` and `merge_manifests`, `discover` (how inputs are found).
"""
from __future__ import annotations

from .._lazy import lazy_attributes

_LAZY = {
    "TokenShards": "mmtok.data.reader",
    "TokenSample": "mmtok.data.reader",
    "tokenize_dataset": "mmtok.data.pipeline",
    "Summary": "mmtok.data.pipeline",
    "verify": "mmtok.data.verification",
    "merge_manifests": "mmtok.data.manifest",
    "discover": "mmtok.data.discovery",
    "Item": "mmtok.data.items",
}

__all__ = list(_LAZY)


__getattr__ = lazy_attributes(__name__, _LAZY, globals())
