"""Read and decode input files in DataLoader worker processes; a bad file becomes a failure record.

Workers do everything before the image model: image decode + resize/crop (the image tokenizer's own
preprocessing), audio read + resample + BEST-RQ tokens (cheap, so spread over the workers), video
demux/decode/sampling (+ the audio track's tokens), and Qwen-VL conversation parsing. The main process
batches the pixels through the image model. `__getitem__` never raises: any exception is returned as
a `Failure`.
"""
from __future__ import annotations

import io
import os
import pathlib
import re
import tempfile
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image as PILImage

from ..audio.io import SAMPLE_RATE, load_audio, prepare_waveform
from ..image.bitdepth import to_rgb
from ..image.preprocess import preprocess
from ..paths import regular_file
from .items import AUDIO, CONVERSATION, IMAGE, INVALID, VIDEO, Item, output_text


@dataclass
class DecodeOptions:
    """How inputs become tokenizer inputs (the same preprocessing the tokenizers' own encode applies)."""

    image_size: int | None = None        # None: the image tokenizer's image_size ("native": own size)
    image_mode: str = "center_crop"
    downsample_factor: int = 16
    video_tokenizer: object = None       # mmtok.video.VideoTokenizer (None: videos fail)
    audio_tokenizer: object = None       # AudioTokenizer or a codec (audio inputs fail without one)
    caption: tuple | None = None         # (metadata field, "before" | "after"): the item's text in its sample


@dataclass
class Work:
    """One item to decode: its place in the output (shard, slot) and the input itself."""

    shard: int
    slot: int
    item: Item


@dataclass
class Decoded:
    work: Work
    payload: dict = field(default_factory=dict)


@dataclass
class Failure:
    work: Work
    error: str


_ADDRESS = re.compile(r"<([A-Za-z_][\w.]*) object at 0x[0-9A-Fa-f]+>")


def describe_error(exc: BaseException) -> str:
    """`Type: message`, deterministic: object reprs lose their memory address (`<_io.BytesIO object>`)
    and names follow `output_text`, so two identical runs write identical failure records."""
    return output_text(_ADDRESS.sub(r"<\1 object>", f"{type(exc).__name__}: {exc}"))


class DecodingDataset(torch.utils.data.Dataset):
    """Map-style dataset over `Work` items; each decodes to a `Decoded` payload or a `Failure`."""

    def __init__(self, works: list[Work], options: DecodeOptions):
        self.works = works
        self.options = options

    def __len__(self) -> int:
        return len(self.works)

    def __getitem__(self, index: int):
        work = self.works[index]
        try:
            return Decoded(work, decode_item(work.item, self.options))
        except Exception as exc:  # noqa: BLE001 - a bad input must never stop the run
            return Failure(work, describe_error(exc))


class WorkerBatch:
    """DataLoader collate_fn, run inside the worker: keeps the items as a list, and tokenizes the batch's
    audio clips there with `AudioTokenizer.encode_batch` (per-clip normalisation, so the codes equal
    `encode` one clip at a time) so audio work is spread over the workers. A batch that raises is
    redone clip by clip, so only a bad clip fails."""

    def __init__(self, audio_tokenizer=None):
        self.audio_tokenizer = audio_tokenizer

    def __call__(self, batch: list) -> list:
        clips = [n for n, r in enumerate(batch) if isinstance(r, Decoded) and "waveform" in r.payload]
        if clips and self.audio_tokenizer is not None:
            try:
                codes = self._encode([batch[n].payload["waveform"] for n in clips])
            except Exception:  # noqa: BLE001 - find the bad clip(s)
                codes = [self._encode_one(batch[n].payload["waveform"], batch[n].work.item.where) for n in clips]
            for n, code in zip(clips, codes):
                batch[n] = Failure(batch[n].work, code) if isinstance(code, str) else Decoded(
                    batch[n].work, {"audio_codes": code})
        return batch

    def _encode(self, waveforms: list) -> list:
        tok = self.audio_tokenizer
        spec = tok.code_spec
        if spec.decodable:  # a codec (mmtok.load): the protocol's one-clip encode, at the rate it was read
            return [tok.encode(w, _audio_rate(tok)) for w in waveforms]
        codes, lengths = tok.encode_batch(waveforms, tok.code_spec.sample_rate)
        return [codes[i, :, : int(n)].clone() for i, n in enumerate(lengths)]

    def _encode_one(self, waveform, name: str):
        """One clip as a batch of one; its error names the file (encode_batch calls it `waveforms[0]`)."""
        try:
            return self._encode([waveform])[0]
        except Exception as exc:  # noqa: BLE001
            return describe_error(exc).replace("waveforms[0]", name)


def decode_item(item: Item, options: DecodeOptions) -> dict:
    if item.error is not None or item.modality == INVALID:
        raise ValueError(item.error.split(": ", 1)[-1] if item.error else f"{item.key}: invalid input")
    from .remote import is_url

    if item.modality != CONVERSATION and not is_url(item.source):  # named before opening: a FIFO would block forever
        kind = "tar file" if item.member is not None else "table file" if item.row is not None else f"{item.modality} file"
        regular_file(item.source, kind)
    if item.modality == IMAGE:
        return {"pixels": image_pixels(_image_source(item), options)}
    if item.modality == AUDIO:
        if options.audio_tokenizer is None:
            raise ValueError(f"{item.key}: audio input but no audio tokenizer was given (--audio-tokenizer)")
        return {"waveform": _audio(item, _audio_rate(options.audio_tokenizer))}
    if item.modality == VIDEO:
        return _video(item, options)
    if item.modality == CONVERSATION:
        return _conversation(item, options)
    raise ValueError(f"{item.key}: unknown modality {item.modality!r}")


def _member_bytes(item: Item) -> bytes:
    """A tar member's bytes, read in place; a GNU sparse member is rebuilt from its stored regions
    (holes are zeros), so its read never runs into the next member."""
    regions = [(0, item.size)] if item.sparse is None else item.sparse
    data = bytearray(item.size) if item.sparse is not None else None
    with open(item.source, "rb") as f:
        f.seek(item.offset)
        for start, length in regions:
            chunk = f.read(length)
            if len(chunk) != length:
                raise ValueError(f"{item.where}: member is truncated (the tar ends inside its data)")
            if data is None:
                return chunk
            if start + length > item.size:
                raise ValueError(f"{item.where}: sparse map reaches past the member's size {item.size}")
            data[start: start + length] = chunk
    return bytes(data)


def _stored_bytes(item: Item) -> bytes | str:
    """The bytes of a tar member or a table row (mmtok.data.tables), or a path a table row points to."""
    from .remote import is_url, read_url

    if item.row is None and item.member is None and is_url(item.source):
        try:
            return read_url(item.source)
        except Exception as exc:  # noqa: BLE001 - each backend raises its own
            raise ValueError(f"{item.where}: cannot read ({type(exc).__name__}: {exc})") from None
    if item.row is not None:
        from .tables import row_media

        media = row_media(item)
        if isinstance(media, str):
            regular_file(media, f"{item.modality} file (named by {item.where})")
        return media
    return _member_bytes(item)


def _local(item: Item) -> bool:
    """A plain local file (read by path); else its bytes come from a tar member, a table row or a URL."""
    from .remote import is_url

    return item.member is None and item.row is None and not is_url(item.source)


def _image_source(item: Item):
    if _local(item):
        return item.source
    data = _stored_bytes(item)
    if isinstance(data, str):
        return data
    try:
        with PILImage.open(io.BytesIO(data)) as img:
            return to_rgb(img, item.where)
    except PILImage.UnidentifiedImageError:
        raise ValueError(f"{item.where}: not a readable image (format not recognised)") from None
    except OSError as exc:
        raise ValueError(f"{item.where}: not a readable image ({exc})") from None


def image_pixels(source, options: DecodeOptions) -> torch.Tensor:
    """(3, H, W) float32 in [-1, 1], exactly as ImageTokenizer.encode([source], size, mode) prepares it."""
    size = options.image_size
    return preprocess([source], size=size, mode=options.image_mode, factor=options.downsample_factor)[0]


def _audio_rate(tokenizer) -> int:
    """The rate audio inputs are read at: the tokenizer's own (a codec's 24 kHz keeps its band), BEST-RQ's 16 kHz."""
    rate = tokenizer.code_spec.sample_rate if tokenizer is not None else None
    return int(rate) if rate else SAMPLE_RATE


def _audio(item: Item, rate: int = SAMPLE_RATE) -> torch.Tensor:
    if _local(item):
        return load_audio(item.source, rate)
    import soundfile

    stored = _stored_bytes(item)
    if isinstance(stored, str):
        return load_audio(stored, rate)
    try:
        data, source_rate = soundfile.read(io.BytesIO(stored), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, TypeError) as exc:
        raise ValueError(f"{item.key}: cannot read audio ({exc})") from None
    if data.shape[0] == 0:
        raise ValueError(f"{item.key}: audio file is empty (0 samples)")
    return prepare_waveform(data.T, source_rate, rate, name=item.key)


def _video(item: Item, options: DecodeOptions) -> dict:
    video_tok = options.video_tokenizer
    if video_tok is None:
        raise ValueError(f"{item.key}: video input but no image tokenizer for its frames")
    if _local(item):
        return video_frames(item.source, video_tok, options)
    suffix = os.path.splitext(item.member or item.source)[1]
    with tempfile.NamedTemporaryFile(suffix=suffix) as f:
        f.write(_stored_bytes(item))
        f.flush()
        try:
            return video_frames(f.name, video_tok, options)
        except Exception as exc:  # noqa: BLE001 - the random temporary name must not reach the record
            text = describe_error(exc).replace(f.name, item.where).replace(os.path.basename(f.name), item.where)
            raise ValueError(text) from None


def video_frames(path, video_tok, options: DecodeOptions) -> dict:
    """Sampled frames as tokenizer inputs (N, 3, S, S) with timestamps, plus the audio track's codes,
    the same frames and pixels VideoTokenizer.encode would feed the image (or video) tokenizer."""
    from ..video.tokenizer import audio_kind_of

    stamps, pixels = [], []
    for sampled in video_tok.sample(path):
        stamps.append(sampled.timestamp)
        if video_tok.mode == "center_crop":
            rgb = torch.from_numpy(np.ascontiguousarray(video_tok.square_rgb(sampled.frame)))
            pixels.append(rgb.permute(2, 0, 1).float().div_(127.5).sub_(1.0))
        else:
            frame_options = DecodeOptions(video_tok.size, video_tok.mode, options.downsample_factor)
            pixels.append(image_pixels(sampled.frame.to_image(), frame_options))
    if not pixels:
        raise ValueError(f"{path}: no frames were sampled")
    from ..video import probe

    audio_codes, audio_kind = None, None
    if video_tok.audio_tokenizer is not None and probe(path).has_audio:
        audio_codes = video_tok.encode_audio(path)
        audio_kind = audio_kind_of(video_tok.audio_tokenizer)
    return {"frames": pixels, "timestamps": stamps, "audio_codes": audio_codes, "audio_kind": audio_kind}


def _conversation(item: Item, options: DecodeOptions) -> dict:
    """Segments of a Qwen-VL record with every <img> already preprocessed to pixels (codes still to come)."""
    from ..stream.qwen_vl import conversation_segments
    from ..stream.segments import Image

    segments = conversation_segments(item.record, pathlib.Path(item.source).parent, image_size=options.image_size,
                                     image_mode=options.image_mode, source=item.source)
    pixels = {}
    for segment in segments:
        if isinstance(segment, Image):
            key = str(segment.source)
            if key not in pixels:
                regular_file(key, "image file")
                pixels[key] = image_pixels(key, options)
            segment.source = pixels[key]
    return {"segments": segments}
