"""16 kHz audio: the BEST-RQ tokenizer (understanding) and the DAC-style codec (tokens back to sound)."""
from __future__ import annotations

from .._lazy import lazy_attributes

_LAZY = {"AudioTokenizer": "mmtok.audio.tokenizer", "AudioCodec": "mmtok.audio.codec"}


__getattr__ = lazy_attributes(__name__, _LAZY, globals())
