"""diffusers `VQModel` checkpoints (aMUSEd, VQ-Diffusion, Kandinsky MoVQ): config, network and tokenizer."""
from .config import DiffusersVQConfig
from .model import DiffusersVQModel
from .tokenizer import DiffusersVQTokenizer

__all__ = ["DiffusersVQConfig", "DiffusersVQModel", "DiffusersVQTokenizer"]
