"""EnCodec (Meta; MusicGen, AudioGen, Bark): SEANet encoder / decoder with LSTMs around a residual VQ, loaded from
the `transformers` `EncodecModel` layout."""
from .model import EncodecCodec

__all__ = ["EncodecCodec"]
