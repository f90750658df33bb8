"""Quantizer modules: the VQ-VAE/VQ-GAN codebook (on `mmtok.nearest_code`), the BEST-RQ random projection, and
the families beyond nearest-code VQ: FSQ (with the formulas checkpoints were trained with), LFQ, IBQ (maximum
inner product), residual VQ / FSQ, VAR's multi-scale residual VQ."""
from .fsq import FSQ
from .ibq import IBQ
from .lfq import LFQ
from .multiscale import MultiScaleResidualVQ
from .output import QuantizerOutput
from .random_projection import RandomProjectionQuantizer
from .residual import ResidualFSQ, ResidualVQ
from .vector_quantizer import VectorQuantizer

__all__ = ["VectorQuantizer", "QuantizerOutput", "RandomProjectionQuantizer", "FSQ", "LFQ", "IBQ", "ResidualVQ",
           "ResidualFSQ",
           "MultiScaleResidualVQ"]
