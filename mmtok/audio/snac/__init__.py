"""SNAC (hubertsiuzdak/snac; Orpheus TTS, mini-omni): a multi-rate residual VQ codec (levels at several time
rates, 7 codes per 85 ms frame at 24 kHz) loaded from its Hub folder (config.json + pytorch_model.bin)."""
from .model import SnacCodec

__all__ = ["SnacCodec"]
