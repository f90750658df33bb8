"""mmtok: images, video frames and 16 kHz audio to discrete tokens and back.

The core op `nearest_code` is imported eagerly; the tokenizers load on first use so that
`import mmtok` stays light.
"""
from __future__ import annotations

from ._lazy import lazy_attributes

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
    "load": "mmtok.tokenizer",
    "Tokenizer": "mmtok.tokenizer",
    "CodeSpec": "mmtok.tokenizer",
}

__all__ = ["nearest_code", "info", "__version__", *_LAZY]


__getattr__ = lazy_attributes(__name__, _LAZY, globals())
