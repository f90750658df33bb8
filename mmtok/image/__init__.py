"""VQ-GAN image tokenizer: taming-transformers / Chameleon and LlamaGen checkpoints, images <-> code grids."""
from .autoencoder import Decoder, Encoder, VQAutoencoder
from .config import VQGANConfig
from .tokenizer import ImageTokenizer

__all__ = ["ImageTokenizer", "VQGANConfig", "VQAutoencoder", "Encoder", "Decoder"]
