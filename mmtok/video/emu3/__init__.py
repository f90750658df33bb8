"""The Emu3 VQ-VAE (`transformers` `Emu3VQVAE`): video and images <-> codes, exact upstream numerics, streamed."""
from .config import Emu3Config
from .layers import TemporalState
from .model import Emu3VQVAE
from .tokenizer import Emu3ImageTokenizer, Emu3Tokenizer

__all__ = ["Emu3Config", "Emu3VQVAE", "Emu3Tokenizer", "Emu3ImageTokenizer", "TemporalState"]
