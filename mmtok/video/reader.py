"""Streaming video decoding with PyAV: frames one at a time with their timestamps, never the whole video.

Timestamps are seconds from the start of the video stream (pts minus the stream's start time, times its
time base), the presentation times a player would show.
"""
from __future__ import annotations

import pathlib
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import av


@dataclass(frozen=True)
class VideoInfo:
    path: str
    width: int
    height: int
    fps: float | None          # average frame rate from the container, if it says
    duration: float | None     # seconds, from stream or container metadata, if present
    num_frames: int | None     # from metadata, if present (0/unknown -> None)
    has_audio: bool


def _open(path) -> av.container.InputContainer:
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    try:
        return av.open(str(path))
    except av.error.FFmpegError as error:
        raise ValueError(f"{path}: cannot be opened as a media file ({error})") from None


def _video_stream(container, path):
    if not container.streams.video:
        raise ValueError(f"{path}: has no video stream")
    return container.streams.video[0]


def probe(path) -> VideoInfo:
    """Metadata only (no decoding)."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        rate = stream.average_rate or stream.guessed_rate
        return VideoInfo(
            path=str(path), width=stream.codec_context.width, height=stream.codec_context.height,
            fps=float(rate) if rate else None, duration=duration, num_frames=stream.frames or None,
            has_audio=bool(container.streams.audio),
        )


def scan_duration(path) -> float:
    """Duration from the packets' timestamps (a demux pass, no decoding), for files without metadata."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        start = stream.start_time or 0
        end = None
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            stop = packet.pts + (packet.duration or 0)
            end = stop if end is None else max(end, stop)
        if end is None:
            raise ValueError(f"{path}: no timestamped video packets")
        return float((end - start) * stream.time_base)


def iter_frames(path, *, keyframes_only: bool = False) -> Iterator[tuple[float, av.VideoFrame]]:
    """Yield (timestamp_seconds, frame) in presentation order; keyframes_only asks the decoder to skip
    every non-key frame (fast: the others are never decoded)."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        if keyframes_only:
            stream.codec_context.skip_frame = "NONKEY"
        start = stream.start_time or 0
        time_base = stream.time_base or Fraction(1, 1)
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            yield float((frame.pts - start) * time_base), frame
