"""VideoTokenizer: a video file -> sampled frames' image codes with timestamps, plus audio-track codes.

Frames stream from the decoder through the sampler into fixed-size batches for the ImageTokenizer, so
memory stays flat however long the video is (Gemini stops reading after 2 minutes; this does not).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from . import reader, sampling
from .audio_track import tokenize_audio_track


@dataclass
class SampledFrame:
    index: int          # position among the sampled frames
    timestamp: float    # seconds
    frame: object       # av.VideoFrame


@dataclass
class VideoTokens:
    frame_codes: torch.Tensor        # (N, h, w) int64
    timestamps: torch.Tensor         # (N,) float64, seconds
    audio_codes: torch.Tensor | None  # (num_codebooks, T) int64
    audio_kind: str | None           # "audio" (BEST-RQ) or "audio_codec"
    info: reader.VideoInfo

    def __len__(self) -> int:
        return len(self.timestamps)


class VideoTokenizer:
    """Sample frames (by `fps`; or `num_frames` uniformly; or `keyframes=True`; fps=None: every frame),
    tokenize them with `image_tokenizer` in batches and the audio track (if any) with `audio_tokenizer`
    (an AudioTokenizer or an AudioCodec). `max_frames` caps the frames taken.

    Frames are resized with swscale (area filter) so the short side is `size` (default: the image
    tokenizer's image_size) and centre-cropped to a square, then passed as tensors in [-1, 1]. For
    mode="pad" or "native" frames go to ImageTokenizer.encode as PIL images with that mode.
    """

    def __init__(self, image_tokenizer, audio_tokenizer=None, fps: float | None = 1.0, max_frames: int | None = None,
                 *, num_frames: int | None = None, keyframes: bool = False, size: int | None = None,
                 mode: str = "center_crop", batch_size: int = 8, audio_chunk_seconds: float = 30.0):
        self.image_tokenizer = image_tokenizer
        self.audio_tokenizer = audio_tokenizer
        self.fps = fps
        self.max_frames = max_frames
        self.num_frames = num_frames
        self.keyframes = keyframes
        self.requested_size = size  # what "pad" / "native" pass on (None: the image tokenizer's default)
        self.size = int(size or image_tokenizer.image_size)
        if mode not in ("center_crop", "pad", "native"):
            raise ValueError(f"mode must be 'center_crop', 'pad' or 'native', got {mode!r}")
        self.mode = mode
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.batch_size = int(batch_size)
        self.audio_chunk_seconds = audio_chunk_seconds
        self._check_sampling(fps, num_frames, keyframes, max_frames)

    @staticmethod
    def _check_sampling(fps, num_frames, keyframes, max_frames) -> None:
        if num_frames is not None and num_frames <= 0:
            raise ValueError(f"num_frames must be positive, got {num_frames}")
        if fps is not None and not fps > 0:
            raise ValueError(f"fps must be positive or None (every frame), got {fps}")
        if max_frames is not None and max_frames <= 0:
            raise ValueError(f"max_frames must be positive, got {max_frames}")
        if num_frames is not None and keyframes:
            raise ValueError("choose one of num_frames and keyframes")

    # ---- sampling ------------------------------------------------------------------------------
    def sample(self, path, *, fps: float | None = ..., num_frames: int | None = ..., keyframes: bool | None = None,
               max_frames: int | None = ...) -> Iterator[SampledFrame]:
        """The sampled frames, streamed. Keyword arguments override the constructor's settings."""
        fps = self.fps if fps is ... else fps
        num_frames = self.num_frames if num_frames is ... else num_frames
        keyframes = self.keyframes if keyframes is None else keyframes
        max_frames = self.max_frames if max_frames is ... else max_frames
        self._check_sampling(fps, num_frames, keyframes, max_frames)
        frames = reader.iter_frames(path, keyframes_only=keyframes)
        if num_frames is not None:
            info = reader.probe(path)
            duration = info.duration if info.duration else reader.scan_duration(path)
            chosen = sampling.nearest_to_targets(frames, sampling.uniform_targets(num_frames, duration))
        elif keyframes or fps is None:
            chosen = sampling.every_frame(frames)
        else:
            chosen = sampling.nearest_to_targets(frames, sampling.fps_targets(fps))
        try:
            for index, (timestamp, frame) in enumerate(chosen):
                if max_frames is not None and index >= max_frames:
                    break
                yield SampledFrame(index, timestamp, frame)
        finally:
            frames.close()  # closes the container even when the caller stops early

    # ---- tokenizing ------------------------------------------------------------------------------
    def iter_encode(self, path, **sampling_options) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (timestamps (b,), codes (b, h, w)) batch by batch."""
        batch: list[SampledFrame] = []
        for sampled in self.sample(path, **sampling_options):
            batch.append(sampled)
            if len(batch) == self.batch_size:
                yield self._encode_batch(batch)
                batch = []
        if batch:
            yield self._encode_batch(batch)

    def encode(self, path, *, audio: bool = True, **sampling_options) -> VideoTokens:
        """All sampled frames' codes with timestamps, plus the audio track's codes when there is an
        audio tokenizer and the file has audio (audio=False skips it)."""
        info = reader.probe(path)
        stamps, codes = [], []
        for batch_stamps, batch_codes in self.iter_encode(path, **sampling_options):
            stamps.append(batch_stamps)
            codes.append(batch_codes)
        if not codes:
            raise ValueError(f"{path}: no frames were sampled")
        audio_codes = audio_kind = None
        if audio and self.audio_tokenizer is not None and info.has_audio:
            audio_codes = self.encode_audio(path)
            audio_kind = "audio_codec" if hasattr(self.audio_tokenizer, "codebook_size") else "audio"
        return VideoTokens(torch.cat(codes), torch.cat(stamps), audio_codes, audio_kind, info)

    def encode_audio(self, path) -> torch.Tensor:
        if self.audio_tokenizer is None:
            raise ValueError("VideoTokenizer has no audio_tokenizer")
        return tokenize_audio_track(path, self.audio_tokenizer, chunk_seconds=self.audio_chunk_seconds)

    def _encode_batch(self, batch: list[SampledFrame]) -> tuple[torch.Tensor, torch.Tensor]:
        stamps = torch.tensor([s.timestamp for s in batch], dtype=torch.float64)
        with torch.no_grad():
            if self.mode == "center_crop":
                pixels = torch.from_numpy(np.stack([self._square_rgb(s.frame) for s in batch]))
                images = pixels.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
                codes = self.image_tokenizer.encode(images)
            else:
                images = [s.frame.to_image() for s in batch]
                codes = self.image_tokenizer.encode(images, size=self.requested_size, mode=self.mode)
        return stamps, codes.to(torch.int64).cpu()

    def _square_rgb(self, frame) -> np.ndarray:
        """(size, size, 3) uint8: short side scaled to size by swscale, then the centre square."""
        scale = self.size / min(frame.width, frame.height)
        width = max(self.size, round(frame.width * scale))
        height = max(self.size, round(frame.height * scale))
        rgb = frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA").to_ndarray()
        top, left = (height - self.size) // 2, (width - self.size) // 2
        return rgb[top: top + self.size, left: left + self.size]
