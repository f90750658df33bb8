"""Offline dataset tokenization: inputs -> resumable token shards (`mmtok tokenize`), and the reader.

`tokenize_dataset` (the Python side of `mmtok tokenize`), `TokenShards` (memory-mapped reader for
training loops), `verify` and `merge_manifests`, `discover` (how inputs are found).
"""
from __future__ import annotations

import importlib

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


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mmtok.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
