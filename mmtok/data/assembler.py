"""Main-process side: batch decoded inputs through the tokenizers and turn each sample into token ids.

Images (and video frames, and conversation images) of the same size are pooled into batches of
`batch_size` for the image tokenizer, which gives exactly the codes of one-at-a-time calls (each image's
codes do not depend on the rest of the batch). If a batch raises, its members are retried one by one so
only the bad input fails. Audio arrives already tokenized by the workers (decoding.WorkerBatch). A
finished sample becomes its token-stream ids in the run's vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..stream.encoder import encode_segments
from ..stream.segments import Audio, AudioCodec, Frame, Image, Text, Video
from .decoding import Failure, Work, describe_error
from .items import AUDIO, CONVERSATION, IMAGE, VIDEO

CAPTION_POSITIONS = ("before", "after")


def with_caption(segments: list, meta: dict | None, field: str, position: str) -> list:
    """The sample's segments with its caption (the string in metadata `field`: a table column, a JSONL
    field, a webdataset .txt member; dotted for nested fields: "json.caption") as a Text segment before or
    after them; unchanged when the item has none."""
    text = meta or {}
    for part in field.split("."):  # "json.caption": a field inside a webdataset .json member
        text = text.get(part) if isinstance(text, dict) else None
    if not isinstance(text, str) or not text:
        return segments
    return [Text(text), *segments] if position == "before" else [*segments, Text(text)]

@dataclass
class SampleRecord:
    """A tokenized sample as it goes into a shard."""

    key: str
    source: str
    modality: str
    ids: np.ndarray                         # int64 token-stream ids
    grid: list[int]                         # image/video: [h, w]; audio: [K, T]; conversation: h, w per image
    timestamps: list[float] | None = None   # video frames, seconds
    meta: dict | None = None


@dataclass
class _Pending:
    work: Work
    payload: dict
    waiting: int = 0
    codes: dict = field(default_factory=dict)
    error: str | None = None


class ShardAssembler:
    """Collects decoded items of one shard, runs the models in batches, and yields results by slot."""

    def __init__(self, vocab, *, image_tokenizer=None, audio_tokenizer=None, video_tokenizer=None,
                 batch_size: int = 32, caption: tuple | None = None):
        self.vocab = vocab
        self.caption = caption  # (metadata field, "before" | "after") or None
        self.image_tokenizer = image_tokenizer
        self.video_tokenizer = video_tokenizer  # spatio-temporal: a video's frames are encoded as one clip
        self.audio_tokenizer = audio_tokenizer
        self.batch_size = max(1, int(batch_size))
        self.results: dict[int, SampleRecord | Failure] = {}
        self._images: dict[tuple, list] = {}   # shape -> [(pending, part, pixels)]

    # ---- intake ----------------------------------------------------------------------------------
    def add(self, result) -> None:
        if isinstance(result, Failure):
            self.results[result.work.slot] = result
            return
        pending = _Pending(result.work, result.payload)
        modality = result.work.item.modality
        try:
            if modality == IMAGE:
                self._want_image(pending, "image", result.payload["pixels"])
            elif modality == AUDIO:
                pending.codes["audio"] = result.payload["audio_codes"]
            elif modality == VIDEO and self.video_tokenizer is not None:
                self._encode_clip(pending)
            elif modality == VIDEO:
                for n, frame in enumerate(result.payload["frames"]):
                    self._want_image(pending, n, frame)
            elif modality == CONVERSATION:
                for n, segment in enumerate(result.payload["segments"]):
                    if isinstance(segment, Image):
                        self._want_image(pending, n, segment.source)
        except Exception as exc:  # noqa: BLE001
            pending.error = describe_error(exc)
        if pending.waiting == 0:
            self._finish(pending)
        self._flush(final=False)

    def _want_image(self, pending: _Pending, part, pixels: torch.Tensor) -> None:
        if self.image_tokenizer is None:
            raise ValueError(f"{pending.work.item.key}: needs an image tokenizer (--image-tokenizer)")
        pending.waiting += 1
        self._images.setdefault(tuple(pixels.shape), []).append((pending, part, pixels))

    def _encode_clip(self, pending: _Pending) -> None:
        """A video through the spatio-temporal tokenizer: latent frames' codes and timestamps replace the
        sampled frames' (the pixels are released once encoded)."""
        from ..video.tokenizer import encode_frames_spatiotemporal

        payload = pending.payload
        frames = zip(payload["timestamps"], payload.pop("frames"))
        stamps = []
        for chunk_stamps, codes in encode_frames_spatiotemporal(self.video_tokenizer, frames, self.batch_size):
            for stamp, grid in zip(chunk_stamps.tolist(), codes):
                pending.codes[len(stamps)] = grid
                stamps.append(stamp)
        payload["timestamps"] = stamps

    # ---- model calls -----------------------------------------------------------------------------
    def _flush(self, final: bool) -> None:
        for shape in list(self._images):
            queue = self._images[shape]
            while len(queue) >= self.batch_size or (final and queue):
                batch, queue[:] = queue[: self.batch_size], queue[self.batch_size:]
                self._run(batch, self._encode_images)
            if not queue:
                del self._images[shape]

    def _encode_images(self, pixels: list[torch.Tensor]) -> list[torch.Tensor]:
        codes = self.image_tokenizer.encode(torch.stack(pixels))
        return list(codes.to(torch.int64).cpu())

    def _run(self, batch: list, encode) -> None:
        inputs = [x for _, _, x in batch]
        try:
            outputs = encode(inputs)
        except Exception:  # noqa: BLE001 - find the bad member(s)
            outputs = []
            for x in inputs:
                try:
                    outputs.append(encode([x])[0])
                except Exception as exc:  # noqa: BLE001
                    outputs.append(exc)
        for (pending, part, _), out in zip(batch, outputs):
            if isinstance(out, Exception):
                pending.error = pending.error or describe_error(out)
            else:
                pending.codes[part] = out
            pending.waiting -= 1
            if pending.waiting == 0:
                self._finish(pending)

    # ---- samples -----------------------------------------------------------------------------------
    def _finish(self, pending: _Pending) -> None:
        work = pending.work
        if pending.error is None:
            try:
                self.results[work.slot] = self._record(pending)
                return
            except Exception as exc:  # noqa: BLE001
                pending.error = describe_error(exc)
        self.results[work.slot] = Failure(work, pending.error)

    def _record(self, pending: _Pending) -> SampleRecord:
        item, payload, codes = pending.work.item, pending.payload, pending.codes
        timestamps = None
        if item.modality == IMAGE:
            segments, grid = [Image(codes=codes["image"])], list(codes["image"].shape)
        elif item.modality == AUDIO:
            if codes["audio"].shape[1] == 0:
                raise ValueError(f"{item.key}: audio too short to give a single token")
            codec = self.audio_tokenizer is not None and self.audio_tokenizer.code_spec.decodable
            kind = AudioCodec if codec else Audio  # a codec's tokens go in the codec block
            segments, grid = [kind(codes=codes["audio"])], list(codes["audio"].shape)
        elif item.modality == VIDEO:
            timestamps = [float(t) for t in payload["timestamps"]]
            frames = [Frame(codes=codes[n], timestamp=t) for n, t in enumerate(timestamps)]
            audio = None
            if payload.get("audio_codes") is not None:
                kind = AudioCodec if payload["audio_kind"] == "audio_codec" else Audio
                audio = kind(codes=payload["audio_codes"])
            segments, grid = [Video(frames=frames, audio=audio)], list(codes[0].shape)
        else:
            segments, grid = payload["segments"], []
            for n, segment in enumerate(segments):
                if isinstance(segment, Image):
                    segment.codes, segment.source = codes[n], None
                    grid += list(segment.codes.shape)
        if self.caption is not None and item.modality != CONVERSATION:
            segments = with_caption(segments, item.meta, *self.caption)
        ids = encode_segments(self.vocab, segments)
        return SampleRecord(item.key, item.where, item.modality, ids, [int(g) for g in grid], timestamps, item.meta)

    def finish(self) -> dict[int, SampleRecord | Failure]:
        """Run what is still pending; returns every result by slot."""
        self._flush(final=True)
        return self.results
