"""Quantizer modules built on `mmtok.nearest_code`: the VQ-VAE/VQ-GAN codebook and the BEST-RQ random projection."""
from .output import QuantizerOutput
from .random_projection import RandomProjectionQuantizer
from .vector_quantizer import VectorQuantizer

__all__ = ["VectorQuantizer", "QuantizerOutput", "RandomProjectionQuantizer"]
