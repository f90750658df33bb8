"""Choosing frames from a decoded stream: by rate, a fixed number spread uniformly, or every frame.

Each sampling time (target) takes the decoded frame whose timestamp is nearest to it (ties go to the
earlier frame); a frame is used at most once. Only the previous frame is held, so memory does not grow
with the video's length.
"""
from __future__ import annotations

import itertools
from typing import Iterable, Iterator, TypeVar

Item = TypeVar("Item")
TIE_TOLERANCE = 1e-9  # seconds: closer than this counts as a tie (timestamps are rounded rationals)


def fps_targets(fps: float) -> Iterator[float]:
    """0, 1/fps, 2/fps, ... (computed by multiplication, so no drift)."""
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return (k / fps for k in itertools.count())


def uniform_targets(num_frames: int, duration: float) -> Iterator[float]:
    """The centres of num_frames equal slices of [0, duration)."""
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    if not duration > 0:
        raise ValueError(f"cannot spread frames over a video of duration {duration}")
    return ((i + 0.5) * duration / num_frames for i in range(num_frames))


def nearest_to_targets(frames: Iterable[tuple[float, Item]], targets: Iterator[float]) \
        -> Iterator[tuple[float, Item]]:
    """For increasing targets, yield the (timestamp, item) nearest each target, each item at most once.
    Targets past the last frame are dropped."""
    target = next(targets, None)
    previous = None          # (timestamp, item) just before the current one
    previous_used = False
    for timestamp, item in frames:
        current_used = False
        while target is not None and timestamp >= target:
            if previous is not None and target - previous[0] <= timestamp - target + TIE_TOLERANCE:
                if not previous_used:
                    previous_used = True
                    yield previous
            elif not current_used:
                current_used = True
                yield timestamp, item
            target = next(targets, None)
        if target is None:
            return
        previous, previous_used = (timestamp, item), current_used


def every_frame(frames: Iterable[tuple[float, Item]]) -> Iterator[tuple[float, Item]]:
    return iter(frames)
