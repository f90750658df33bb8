"""SpeechTokenizer (ZhangXInFD/SpeechTokenizer; AnyGPT): EnCodec's SEANet with a BiLSTM encoder around an 8-level
residual VQ whose first level is distilled from HuBERT, loaded from its release files (config.json + .pt)."""
from .model import SpeechTokenizerCodec

__all__ = ["SpeechTokenizerCodec"]
