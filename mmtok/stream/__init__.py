"""Interleaved multimodal token streams: one id space (Vocabulary), segments <-> ids (TokenStream)."""
from .decoder import DecodedSegments
from .errors import Repair, StreamDecodeError, VocabularyMismatchError
from .segments import Audio, AudioCodec, Frame, Image, Text, Video
from .text import ByteTokenizer
from .token_stream import TokenIds, TokenStream
from .vocabulary import Vocabulary

__all__ = [
    "Vocabulary", "TokenStream", "TokenIds", "DecodedSegments",
    "Text", "Image", "Frame", "Audio", "AudioCodec", "Video",
    "ByteTokenizer", "StreamDecodeError", "VocabularyMismatchError", "Repair",
]
