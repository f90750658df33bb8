"""mmtok: images, video frames and 16 kHz audio to discrete tokens and back.

The core op `nearest_code` is imported eagerly; the tokenizers load on first use so that
`import mmtok` stays light.
"""
from __future__ import annotations

import importlib

from .ops import info, nearest_code

__version__ = "0.1.0"

# public name -> module that defines it (imported on first attribute access)
_LAZY = {
    "VectorQuantizer": "mmtok.quantize",
    "QuantizerOutput": "mmtok.quantize",
    "RandomProjectionQuantizer": "mmtok.quantize",
    "ImageTokenizer": "mmtok.image",
    "AudioTokenizer": "mmtok.audio",
    "AudioCodec": "mmtok.audio",
    "VideoTokenizer": "mmtok.video",
    "Vocabulary": "mmtok.stream",
    "TokenStream": "mmtok.stream",
    "TokenShards": "mmtok.data",
}

__all__ = ["nearest_code", "info", "__version__", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mmtok' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
