"""Mimi (Kyutai; Moshi, Sesame CSM, Kyutai STT / TTS): causal SEANet + transformers around a split residual VQ (one
semantic level, then acoustic levels) at 12.5 frames/s, loaded from the `transformers` `MimiModel` layout."""
from .model import MimiCodec

__all__ = ["MimiCodec"]
