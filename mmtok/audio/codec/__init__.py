"""DAC-compatible residual-VQ audio codec: 16 kHz waveforms <-> (n_codebooks, frames) codes and back."""
from .config import CodecConfig
from .model import AudioCodec

__all__ = ["AudioCodec", "CodecConfig"]
