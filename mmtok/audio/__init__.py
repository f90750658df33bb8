"""16 kHz audio: the BEST-RQ tokenizer (understanding) and the DAC-style codec (tokens back to sound)."""
from __future__ import annotations

import importlib

_LAZY = {"AudioTokenizer": "mmtok.audio.tokenizer", "AudioCodec": "mmtok.audio.codec"}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mmtok.audio' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
