"""TokenStream: interleaved segments <-> one id sequence, with the tokenizers that fill and decode codes."""
from __future__ import annotations

import pathlib
from typing import Any, Iterable, Sequence

import torch

from .decoder import DecodedSegments, decode_ids
from .encoder import encode_segments
from .errors import VocabularyMismatchError
from .segments import Audio, AudioCodec, Image, Video
from .vocabulary import Vocabulary, codebook_shapes

DECODE_BATCH = 16  # images decoded to pixels per tokenizer call (bounds memory for long videos)


class TokenIds(list):
    """Encoded ids (a plain list of ints) that remember the hash of the vocabulary that made them."""

    def __init__(self, ids: Iterable[int] = (), vocab_hash: str | None = None):
        super().__init__(int(i) for i in ids)
        self.vocab_hash = vocab_hash


class TokenStream:
    """Builds `<bos> text <image> codes </image> ... <eos>` sequences and takes generated ones apart.

    The tokenizers (any of the Tokenizer protocol, `mmtok.tokenizer`) are optional: they are needed only to
    tokenize segments given as sources (image paths / pixels, waveforms) and to decode codes back to pixels or
    audio. A spatio-temporal `video_tokenizer` (codes (B, t, h, w)) shares the image range: its latent frames
    are the Frames of a Video segment, and decode_images turns a whole Video's frames back into `Video.pixels`.
    """

    def __init__(self, vocabulary: Vocabulary, *, image_tokenizer=None, audio_tokenizer=None, audio_codec=None,
                 video_tokenizer=None):
        self.vocab = vocabulary
        self.image_tokenizer = image_tokenizer
        self.audio_tokenizer = audio_tokenizer
        self.audio_codec = audio_codec
        self.video_tokenizer = video_tokenizer
        for name, tokenizer in (("image_tokenizer", image_tokenizer), ("video_tokenizer", video_tokenizer),
                                ("audio_tokenizer", audio_tokenizer), ("audio_codec", audio_codec)):
            if tokenizer is not None:
                _check_fits(vocabulary, name, tokenizer)

    @classmethod
    def from_tokenizers(cls, text_tokenizer: Any = None, *, image_tokenizer=None, audio_tokenizer=None,
                        audio_codec=None, video_tokenizer=None, **vocab_options) -> "TokenStream":
        vocab = Vocabulary.from_tokenizers(text_tokenizer, image_tokenizer=image_tokenizer,
                                           audio_tokenizer=audio_tokenizer, audio_codec=audio_codec,
                                           video_tokenizer=video_tokenizer, **vocab_options)
        return cls(vocab, image_tokenizer=image_tokenizer, audio_tokenizer=audio_tokenizer, audio_codec=audio_codec,
                   video_tokenizer=video_tokenizer)

    @property
    def vocab_hash(self) -> str:
        return self.vocab.hash

    # ---- encode --------------------------------------------------------------------------------
    def encode(self, segments: Sequence, *, add_bos: bool = True, add_eos: bool = True) -> TokenIds:
        """Segments (Text/str, Image, Audio, AudioCodec, Video) -> ids. Segments given as sources are
        tokenized first (their codes are filled in place)."""
        for segment in segments:
            self._tokenize_sources(segment)
        ids = encode_segments(self.vocab, segments, add_bos=add_bos, add_eos=add_eos)
        return TokenIds(ids.tolist(), self.vocab.hash)

    def _tokenize_sources(self, segment) -> None:
        if isinstance(segment, Image) and segment.codes is None:
            if self.image_tokenizer is None:
                raise ValueError("an Image segment has no codes: give TokenStream an image_tokenizer")
            source = segment.source
            if isinstance(source, pathlib.Path):
                source = str(source)
            if isinstance(source, torch.Tensor) and source.ndim == 3:
                source = source.unsqueeze(0)
            batch = source if isinstance(source, torch.Tensor) else [source]
            codes = self.image_tokenizer.encode(batch, size=segment.size, mode=segment.mode)
            segment.codes = codes[0].to(torch.int64).cpu()
        elif isinstance(segment, (Audio, AudioCodec)) and segment.codes is None:
            tokenizer = self.audio_tokenizer if isinstance(segment, Audio) else self.audio_codec
            if tokenizer is None:
                need = "audio_tokenizer" if isinstance(segment, Audio) else "audio_codec"
                raise ValueError(f"a {type(segment).__name__} segment has no codes: give TokenStream an {need}")
            if segment.sample_rate is None:
                raise ValueError(f"{type(segment).__name__} waveform needs its sample_rate")
            segment.codes = tokenizer.encode(segment.waveform, segment.sample_rate).to(torch.int64).cpu()
        elif isinstance(segment, Video):
            for frame in segment.frames:
                self._tokenize_sources(frame)
            if segment.audio is not None:
                self._tokenize_sources(segment.audio)

    # ---- decode --------------------------------------------------------------------------------
    def decode(self, ids, *, strict: bool = True, decode_images: bool = False, decode_audio: bool = False,
               vocab_hash: str | None = None, fill_code: int = 0) -> DecodedSegments:
        """ids -> segments (a list with `.repairs`). The vocabulary hash of the encoder (from TokenIds or
        `vocab_hash=`) must match. decode_images fills Image/Frame `.pixels`; decode_audio fills the
        `.waveform` of AudioCodec segments through the codec (BEST-RQ tokens cannot be turned back)."""
        expected = vocab_hash if vocab_hash is not None else getattr(ids, "vocab_hash", None)
        if expected is not None:
            self.vocab.check_hash(expected)
        if isinstance(ids, torch.Tensor):
            ids = ids.cpu().numpy()
        smallest = min((r.size for r in self.vocab.range_list), default=1)
        if not 0 <= int(fill_code) < smallest:
            raise ValueError(f"fill_code must be a valid code in every codebook, 0 <= fill_code < {smallest}")
        segments = decode_ids(self.vocab, ids, strict=strict, fill_code=fill_code)
        if decode_images:
            self._decode_pixels(segments)
        if decode_audio:
            self._decode_waveforms(segments)
        return segments

    def _decode_pixels(self, segments) -> None:
        if self.video_tokenizer is not None:
            videos = [s for s in segments if isinstance(s, Video) and s.frames]
            with torch.no_grad():
                for video in videos:
                    codes = torch.stack([frame.codes for frame in video.frames]).unsqueeze(0)
                    video.pixels = self.video_tokenizer.decode(codes)[0]
            images = [s for s in segments if isinstance(s, Image)]  # latent frames are decoded with their video
        else:
            images = [s for s in _walk(segments) if isinstance(s, Image)]
        if not images:
            return
        if self.image_tokenizer is None:
            raise ValueError("decode_images=True needs an image_tokenizer")
        by_grid: dict[tuple, list[Image]] = {}
        for image in images:
            by_grid.setdefault(tuple(image.codes.shape), []).append(image)
        with torch.no_grad():
            for group in by_grid.values():
                for i in range(0, len(group), DECODE_BATCH):
                    chunk = group[i: i + DECODE_BATCH]
                    pixels = self.image_tokenizer.decode(torch.stack([im.codes for im in chunk]))
                    for image, picture in zip(chunk, pixels):
                        image.pixels = picture

    def _decode_waveforms(self, segments) -> None:
        clips = [s for s in _walk(segments) if isinstance(s, AudioCodec)]
        if clips and self.audio_codec is None:
            raise ValueError("decode_audio=True needs an audio_codec")
        with torch.no_grad():
            for clip in clips:
                if clip.codes.shape[1] == 0:
                    clip.waveform = torch.zeros(0)
                else:
                    clip.waveform = self.audio_codec.decode(clip.codes)
                clip.sample_rate = int(self.audio_codec.code_spec.sample_rate)

    # ---- conversation files ------------------------------------------------------------------------
    def encode_qwen_vl(self, path, **options):
        """A Qwen-VL conversation JSON file -> [(sample id, TokenIds)]; see mmtok.stream.qwen_vl."""
        from .qwen_vl import encode_qwen_vl_file

        return encode_qwen_vl_file(self, path, **options)


def _walk(segments):
    for segment in segments:
        yield segment
        if isinstance(segment, Video):
            yield from segment.frames
            if segment.audio is not None:
                yield segment.audio


def _check_fits(vocab: Vocabulary, name: str, tokenizer) -> None:
    """The tokenizer's codes (its code_spec) fill exactly the vocabulary range they are laid out in."""
    shapes = codebook_shapes(**{name: tokenizer})
    modality = {"image_tokenizer": "image", "video_tokenizer": "image", "audio_tokenizer": "audio",
                "audio_codec": "audio_codec"}[name]
    if modality not in vocab.ranges:
        raise ValueError(f"a {name} was given but the vocabulary has no {modality!r} codes")
    ranges = vocab.ranges[modality]
    if modality == "image":
        want = shapes["image_codes"]
        want = tuple(want) if isinstance(want, tuple) else (want,)
        have = tuple(r.size for r in ranges)
        if have != want:
            show = (lambda x: f"1x{x[0]}" if len(x) == 1 else "+".join(map(str, x)))
            raise VocabularyMismatchError(f"{name.replace('_', ' ')} has {show(want)} codes but the vocabulary"
                                          f" reserves {show(have)}")
        scales = shapes.get("image_scales")
        if scales != vocab.image_scales:
            show = (lambda x: "none" if x is None else [list(s) for s in x])
            raise VocabularyMismatchError(f"{name.replace('_', ' ')} has image scales {show(scales)} but the"
                                          f" vocabulary lays out {show(vocab.image_scales)}")
        return
    want = shapes[modality]
    have = (len(ranges), ranges[0].size)
    if have != tuple(want):
        raise VocabularyMismatchError(f"{name.replace('_', ' ')} has {want[0]}x{want[1]} codes but the vocabulary"
                                      f" reserves {have[0]}x{have[1]}")
