"""VideoTokenizer: a video file -> codes with timestamps, plus audio-track codes.

Two modes, chosen by the tokenizer's `code_spec.modality` (the Tokenizer protocol, `mmtok.tokenizer`):
- per-frame ("image" tokenizer): sampled frames' image codes (N, h, w), one timestamp per sampled frame;
- spatio-temporal ("video" tokenizer, codes (B, t, h, w), f_t frames per latent frame, e.g. Emu3): the sampled
  frames are one clip; codes (t, h, w) with one timestamp per latent frame (that of the first frame it covers).
  A clip whose length is not a multiple of f_t is completed by repeating its last frame.
Frames stream from the decoder through the sampler into fixed-size batches (per-frame) or chunks (fed to the
tokenizer's `encode_stream` when it has one, `StreamingVideoEncoder`), so memory stays flat however long the
video is (Gemini stops reading after 2 minutes; this does not). A spatio-temporal tokenizer without
`encode_stream` gets the whole clip in one `encode` call.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from ..tokenizer.protocol import StreamingVideoEncoder, code_spec_of, expect_modality
from . import reader, sampling
from .audio_track import tokenize_audio_track


@dataclass
class SampledFrame:
    index: int          # position among the sampled frames
    timestamp: float    # seconds
    frame: object       # av.VideoFrame


@dataclass
class VideoTokens:
    frame_codes: torch.Tensor        # (N, h, w) int64: sampled frames' codes, or latent frames' (spatio-temporal)
    timestamps: torch.Tensor         # (N,) float64, seconds
    audio_codes: torch.Tensor | None  # (num_codebooks, T) int64
    audio_kind: str | None           # "audio" (BEST-RQ) or "audio_codec"
    info: reader.VideoInfo

    def __len__(self) -> int:
        return len(self.timestamps)


class VideoTokenizer:
    """Sample frames (by `fps`; or `num_frames` uniformly; or `keyframes=True`; fps=None: every frame),
    tokenize them with `image_tokenizer` in batches (an image tokenizer: per frame; a video tokenizer:
    spatio-temporally, `batch_size` frames per chunk) and the audio track (if any) with `audio_tokenizer`
    (any audio tokenizer of the protocol: BEST-RQ or a codec). `max_frames` caps the frames taken.

    Frames are resized with swscale (area filter) so the short side is `size` (default: the image
    tokenizer's image_size) and centre-cropped to a square, then passed as tensors in [-1, 1]. For
    mode="pad" or "native" frames go to ImageTokenizer.encode as PIL images with that mode.
    """

    def __init__(self, image_tokenizer, audio_tokenizer=None, fps: float | None = 1.0, max_frames: int | None = None,
                 *, num_frames: int | None = None, keyframes: bool = False, size: int | None = None,
                 mode: str = "center_crop", batch_size: int = 8, audio_chunk_seconds: float = 30.0):
        spec = code_spec_of(image_tokenizer, "image_tokenizer")
        if spec.modality not in ("image", "video") or spec.grid_axes[-2:] != ("h", "w"):
            raise ValueError(f"image_tokenizer: expected an image or video tokenizer with (h, w) code grids, got "
                             f"{spec.modality} codes {spec.axes} ({type(image_tokenizer).__name__})")
        self.spatiotemporal = spec.modality == "video"
        self.temporal_factor = spec.temporal_downsample
        if audio_tokenizer is not None:
            expect_modality(audio_tokenizer, "audio", "audio_tokenizer")
        self.image_tokenizer = image_tokenizer
        self.audio_tokenizer = audio_tokenizer
        self.fps = fps
        self.max_frames = max_frames
        self.num_frames = num_frames
        self.keyframes = keyframes
        self.requested_size = size  # what "pad" / "native" pass on (None: the image tokenizer's default)
        if size is None and spec.image_size is None:
            raise ValueError(f"image_tokenizer: {type(image_tokenizer).__name__} has no default image_size; "
                             f"give size=")
        self.size = int(size or spec.image_size)
        if mode not in ("center_crop", "pad", "native"):
            raise ValueError(f"mode must be 'center_crop', 'pad' or 'native', got {mode!r}")
        if self.spatiotemporal and mode != "center_crop":
            raise ValueError(f"mode={mode!r}: a spatio-temporal video tokenizer takes center_crop frames "
                             f"(every frame of a clip has one size)")
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
        """Yield (timestamps (b,), codes (b, h, w)) batch by batch (latent frames for a video tokenizer)."""
        if self.spatiotemporal:
            yield from self._iter_encode_spatiotemporal(self.sample(path, **sampling_options))
            return
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
            audio_kind = audio_kind_of(self.audio_tokenizer)
        return VideoTokens(torch.cat(codes), torch.cat(stamps), audio_codes, audio_kind, info)

    def encode_audio(self, path) -> torch.Tensor:
        if self.audio_tokenizer is None:
            raise ValueError("VideoTokenizer has no audio_tokenizer")
        return tokenize_audio_track(path, self.audio_tokenizer, chunk_seconds=self.audio_chunk_seconds)

    def _frame_pixels(self, batch: list[SampledFrame]) -> torch.Tensor:
        """(b, 3, size, size) float32 in [-1, 1]: the centre-cropped frames."""
        pixels = torch.from_numpy(np.stack([self._square_rgb(s.frame) for s in batch]))
        return pixels.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)

    def _iter_encode_spatiotemporal(self, sampled: Iterator[SampledFrame]):
        """Chunks of about batch_size frames (a multiple of f_t) -> (latent timestamps, latent codes)."""
        frames = ((s.timestamp, self._frame_pixels([s])[0]) for s in sampled)
        yield from encode_frames_spatiotemporal(self.image_tokenizer, frames, self.batch_size)

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

    def square_rgb(self, frame) -> np.ndarray:
        """A decoded frame as this tokenizer's input pixels: (size, size, 3) uint8 (see `_square_rgb`)."""
        return self._square_rgb(frame)

    def _square_rgb(self, frame) -> np.ndarray:
        """(size, size, 3) uint8: short side scaled to size by swscale, then the centre square."""
        scale = self.size / min(frame.width, frame.height)
        width = max(self.size, round(frame.width * scale))
        height = max(self.size, round(frame.height * scale))
        rgb = frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA").to_ndarray()
        top, left = (height - self.size) // 2, (width - self.size) // 2
        return rgb[top: top + self.size, left: left + self.size]


def audio_kind_of(audio_tokenizer) -> str:
    """The stream segment kind of an audio tokenizer's codes: "audio_codec" for decodable codec tokens,
    "audio" for BEST-RQ-style tokens that cannot be decoded (from its code_spec)."""
    return "audio_codec" if expect_modality(audio_tokenizer, "audio", "audio_tokenizer").decodable else "audio"


def encode_frames_spatiotemporal(tokenizer, frames, chunk_frames: int = 16
                                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """A spatio-temporal video tokenizer over one clip of frames, with bounded memory.

    `frames` yields (timestamp, (3, H, W) float in [-1, 1]); yields (timestamps (t_i,) float64, codes
    (t_i, h, w) int64) per chunk: latent frame j covers input frames j*f_t .. j*f_t + f_t - 1 and carries the
    first one's timestamp. A clip whose length is not a multiple of f_t is completed by repeating its last
    frame (as callers of a causal video tokenizer pad). A causal tokenizer (`code_spec.extra["causal_first_frame"]`,
    e.g. Cosmos DV) codes the first frame alone and then groups of f_t: latent 0 is frame 0, latent j >= 1 covers
    frames 1 + (j-1)*f_t .. j*f_t, and the clip is completed to 1 + k*f_t frames. A tokenizer with `encode_stream`
    is fed chunks of `chunk_frames` frames (rounded to a multiple of f_t; a causal tokenizer's first chunk has
    the extra first frame) and the result equals one pass; one without it gets the whole clip in a single
    `encode` call."""
    spec = expect_modality(tokenizer, "video", "video tokenizer")
    ft = spec.temporal_downsample
    lead = 1 if spec.extra.get("causal_first_frame") else 0  # frames coded alone before the groups of f_t
    chunk_frames = max(ft, int(chunk_frames) - int(chunk_frames) % ft)
    starts: list[float] = []  # timestamps of the latent frames produced so far but not yet yielded
    count = [0]

    def chunks():
        pending, last, size = [], None, chunk_frames + lead
        for stamp, pixels in frames:
            if count[0] < lead or (count[0] - lead) % ft == 0:
                starts.append(float(stamp))
            count[0] += 1
            pending.append(pixels)
            last = pixels
            if len(pending) == size:
                yield torch.stack(pending).unsqueeze(0)
                pending, size = [], chunk_frames
        grouped = count[0] - lead
        if grouped > 0 and grouped % ft:
            pending += [last] * (ft - grouped % ft)
        if pending:
            yield torch.stack(pending).unsqueeze(0)

    def split(codes: torch.Tensor):
        codes = codes.to(torch.int64).cpu()[0]
        stamps = torch.tensor(starts[: codes.shape[0]], dtype=torch.float64)
        del starts[: codes.shape[0]]
        return stamps, codes

    with torch.no_grad():
        if isinstance(tokenizer, StreamingVideoEncoder):
            for codes in tokenizer.encode_stream(chunks()):
                if codes.shape[1]:
                    yield split(codes)
        else:
            clip = list(chunks())
            if clip:
                yield split(tokenizer.encode(torch.cat(clip, dim=1)))
