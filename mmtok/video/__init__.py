"""Video files -> sampled frames' image tokens with timestamps (+ audio-track tokens), streamed."""
from .audio_track import iter_audio_chunks, tokenize_audio_track
from .reader import VideoInfo, iter_frames, probe
from .tokenizer import SampledFrame, VideoTokenizer, VideoTokens

__all__ = ["VideoTokenizer", "VideoTokens", "SampledFrame", "VideoInfo", "probe", "iter_frames",
           "iter_audio_chunks", "tokenize_audio_track"]
