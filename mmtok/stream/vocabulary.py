"""The layout of one id space shared by text, special tokens and every modality codebook.

Order: the text tokenizer's ids, then named special tokens (bos, eos, block begin/end, frame, end-of-row),
then the resolution tokens `<res_1>..<res_N>` that carry an image's grid size, then one contiguous range
per modality codebook ("image", or one per image codebook for factorised sub-tokens such as Open-MAGVIT2's
LFQ; each "audio" (BEST-RQ) codebook; each "audio_codec" codebook). A vocabulary for multi-scale codes (VAR)
also records its scale list ("image_scales"): the number and order of the tokens of every image.
The layout serialises to JSON with a content hash, so a stream is only ever decoded with the layout
that produced it.
"""
from __future__ import annotations

import hashlib
import json
import pathlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..paths import errors_naming
from .errors import VocabularyMismatchError
from .text import ByteTokenizer, as_text_tokenizer

SPECIAL_TOKENS = (
    "bos", "eos", "pad",
    "image_begin", "image_end", "end_of_row",
    "audio_begin", "audio_end",
    "audio_codec_begin", "audio_codec_end",
    "video_begin", "video_end", "frame",
)
MODALITIES = ("image", "audio", "audio_codec")
FORMAT_VERSION = 1

# categories returned by Vocabulary.classify
TEXT, SPECIAL, RESOLUTION, CODE, INVALID = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class CodeRange:
    """One codebook's contiguous id range: ids offset .. offset + size - 1 are codes 0 .. size - 1."""

    modality: str
    codebook: int
    offset: int
    size: int


class Vocabulary:
    """One id space: text ids, special tokens, resolution tokens, then per-codebook code ranges."""

    def __init__(
        self,
        text_tokenizer: Any = None,
        *,
        image_codes: int | Sequence[int] | None = None,
        image_scales: Sequence[Sequence[int]] | None = None,
        audio: tuple[int, int] | None = None,
        audio_codec: tuple[int, int] | None = None,
        max_grid: int = 64,
        end_of_row: bool = True,
        extra_special_tokens: Sequence[str] = (),
    ):
        """image_codes: codebook size of the image tokenizer, or the sizes of its codebooks in codebook order
        (factorised sub-tokens: each position carries one sub-token per codebook); image_scales: the (h, w) of
        each scale, coarse to fine, for tokenizers whose image codes are one flat multi-scale sequence (VAR);
        audio / audio_codec: (codebooks, codes per
        codebook); max_grid: largest grid side a resolution token can express; end_of_row: whether images
        carry an end-of-row token after each row (Emu3 / Lumina-mGPT layout)."""
        self.text = as_text_tokenizer(text_tokenizer)
        self.max_grid = _positive_int(max_grid, "max_grid")
        self.end_of_row = bool(end_of_row)
        names = list(SPECIAL_TOKENS) + [str(n) for n in extra_special_tokens]
        if len(set(names)) != len(names):
            raise ValueError(f"extra_special_tokens repeats a name: {list(extra_special_tokens)}")
        self.special_names = tuple(names)
        self._special = {name: self.text.size + i for i, name in enumerate(names)}
        self.resolution_offset = self.text.size + len(names)
        offset = self.resolution_offset + self.max_grid
        sizes = {
            "image": _image_sizes(image_codes),
            "audio": _codebook_sizes(audio, "audio"),
            "audio_codec": _codebook_sizes(audio_codec, "audio_codec"),
        }
        self.image_scales = _image_scales(image_scales, sizes["image"])
        self.ranges: dict[str, tuple[CodeRange, ...]] = {}
        for modality in MODALITIES:
            if sizes[modality] is None:
                continue
            ranges = []
            for k, size in enumerate(sizes[modality]):
                ranges.append(CodeRange(modality, k, offset, size))
                offset += size
            self.ranges[modality] = tuple(ranges)
        self.size = offset
        self._build_lookup()

    @classmethod
    def from_tokenizers(cls, text_tokenizer: Any = None, *, image_tokenizer=None, audio_tokenizer=None,
                        audio_codec=None, video_tokenizer=None, **options) -> "Vocabulary":
        """Take the code counts from tokenizers through the Tokenizer protocol (their `code_spec`): the
        "image" range from an image tokenizer and/or a spatio-temporal video tokenizer (whose latent frames are
        image grids; given both, they must share one codebook size), "audio" from a non-decodable audio
        tokenizer (BEST-RQ), "audio_codec" from a decodable one (a codec)."""
        return cls(text_tokenizer, **codebook_shapes(image_tokenizer=image_tokenizer, audio_tokenizer=audio_tokenizer,
                                                     audio_codec=audio_codec, video_tokenizer=video_tokenizer),
                   **options)

    @staticmethod
    def from_convention(name: str, text_tokenizer: Any = None, **options):
        """A released model's own id layout ("chameleon", "anole", "lumina_mgpt", "emu3", "anygpt", "janus")
        over that model's text tokenizer: a `mmtok.stream.conventions.Convention` with encode / decode."""
        from .conventions import convention

        return convention(name, text_tokenizer, **options)

    # ---- lookups -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.size

    def special(self, name: str) -> int:
        try:
            return self._special[name]
        except KeyError:
            raise ValueError(f"unknown special token {name!r}; known: {list(self._special)}") from None

    def special_name(self, token: int) -> str:
        index = int(token) - self.text.size
        if not 0 <= index < len(self.special_names):
            raise ValueError(f"id {token} is not a special token")
        return self.special_names[index]

    def resolution_token(self, n: int) -> int:
        if not 1 <= int(n) <= self.max_grid:
            raise ValueError(f"grid side {n} outside the vocabulary's resolution tokens 1..{self.max_grid}")
        return self.resolution_offset + int(n) - 1

    def codebooks(self, modality: str) -> tuple[CodeRange, ...]:
        if modality not in self.ranges:
            raise ValueError(f"this vocabulary has no {modality!r} codes (it has: {list(self.ranges)})")
        return self.ranges[modality]

    @property
    def image_tokens(self) -> int | None:
        """With image_scales: the number of tokens of every image (all scales); None for grid layouts."""
        return None if self.image_scales is None else sum(h * w for h, w in self.image_scales)

    def offsets(self, modality: str) -> np.ndarray:
        return np.array([r.offset for r in self.codebooks(modality)], dtype=np.int64)

    def _build_lookup(self) -> None:
        ranges = [r for modality in MODALITIES for r in self.ranges.get(modality, ())]
        self._range_list = ranges
        self._range_starts = np.array([r.offset for r in ranges], dtype=np.int64)
        self._range_sizes = np.array([r.size for r in ranges], dtype=np.int64)

    def classify(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per id: (category, detail, value). TEXT: value = id; SPECIAL: detail = index into
        special_names; RESOLUTION: value = grid side; CODE: detail = index into range_list, value = code."""
        ids = np.asarray(ids, dtype=np.int64)
        category = np.full(ids.shape, INVALID, dtype=np.int8)
        detail = np.zeros(ids.shape, dtype=np.int64)
        value = ids.copy()
        n_text, n_special = self.text.size, len(self.special_names)
        category[(ids >= 0) & (ids < n_text)] = TEXT
        is_special = (ids >= n_text) & (ids < self.resolution_offset)
        category[is_special] = SPECIAL
        detail[is_special] = ids[is_special] - n_text
        is_res = (ids >= self.resolution_offset) & (ids < self.resolution_offset + self.max_grid)
        category[is_res] = RESOLUTION
        value[is_res] = ids[is_res] - self.resolution_offset + 1
        if len(self._range_list):
            is_code = (ids >= self._range_starts[0]) & (ids < self.size)
            which = np.searchsorted(self._range_starts, ids[is_code], side="right") - 1
            category[is_code] = CODE
            detail[is_code] = which
            value[is_code] = ids[is_code] - self._range_starts[which]
        assert n_special == self.resolution_offset - n_text
        return category, detail, value

    @property
    def range_list(self) -> list[CodeRange]:
        return self._range_list

    # ---- serialisation -------------------------------------------------------------------------
    def layout(self) -> dict:
        """Everything that decides which id means what (the hash covers exactly this). "image_scales" is present
        only for multi-scale vocabularies, so every grid layout keeps its record and hash."""
        record = {
            "format_version": FORMAT_VERSION,
            "text": self.text.describe(),
            "special_tokens": {name: self._special[name] for name in self.special_names},
            "resolution_tokens": {"offset": self.resolution_offset, "max_grid": self.max_grid},
            "end_of_row": self.end_of_row,
            "modalities": {
                modality: [{"codebook": r.codebook, "offset": r.offset, "size": r.size} for r in ranges]
                for modality, ranges in self.ranges.items()
            },
            "size": self.size,
        }
        if self.image_scales is not None:
            record["image_scales"] = [list(s) for s in self.image_scales]
        return record

    @property
    def hash(self) -> str:
        canonical = json.dumps(self.layout(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()

    def to_dict(self) -> dict:
        return {**self.layout(), "hash": self.hash}

    def save(self, path: str | pathlib.Path) -> pathlib.Path:
        path = pathlib.Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))
        return path

    @classmethod
    def from_dict(cls, data: dict, text_tokenizer: Any = None, *, source: str = "vocabulary") -> "Vocabulary":
        """The vocabulary a `to_dict` record describes; ValueError naming `source` for any malformed record."""
        with errors_naming(source, "vocabulary record"):
            if not isinstance(data, dict):
                raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
            if not isinstance(data.get("end_of_row"), bool):
                raise ValueError(f"{source}: end_of_row must be true or false, got {data.get('end_of_row')!r}")
            return cls._from_record(data, text_tokenizer, source)

    @classmethod
    def _from_record(cls, data: dict, text_tokenizer: Any, source: str) -> "Vocabulary":
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{source}: unsupported vocabulary format_version {data.get('format_version')!r}")
        text_info = data["text"]
        if text_info["kind"] == "bytes":
            if text_tokenizer is not None and not isinstance(text_tokenizer, ByteTokenizer):
                raise ValueError(f"{source} uses the built-in byte tokenizer; do not pass text_tokenizer")
        elif text_tokenizer is None:
            raise ValueError(f"{source} was built with text tokenizer {text_info.get('name', text_info['class'])!r}:"
                             " pass it as text_tokenizer")
        standard = set(SPECIAL_TOKENS)
        extra = [n for n in sorted(data["special_tokens"], key=data["special_tokens"].get) if n not in standard]
        shape = {m: (len(r), r[0]["size"]) for m, r in data["modalities"].items()}
        image_sizes = [r["size"] for r in data["modalities"].get("image", ())]
        vocab = cls(
            text_tokenizer,
            image_codes=(image_sizes[0] if len(image_sizes) == 1 else image_sizes) if image_sizes else None,
            image_scales=data.get("image_scales"),
            audio=shape.get("audio"),
            audio_codec=shape.get("audio_codec"),
            max_grid=data["resolution_tokens"]["max_grid"],
            end_of_row=data["end_of_row"],
            extra_special_tokens=extra,
        )
        stored = data.get("hash")
        if stored is not None and stored != vocab.hash:
            raise VocabularyMismatchError(
                f"{source}: stored hash {stored[:16]}... does not match the rebuilt layout's {vocab.hash[:16]}..."
                " (different text tokenizer or edited file)"
            )
        return vocab

    @classmethod
    def load(cls, path: str | pathlib.Path, text_tokenizer: Any = None, *, expected_hash: str | None = None):
        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"vocabulary file not found: {path}")
        with errors_naming(path, "vocabulary file"):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ValueError(f"{path}: not valid JSON ({exc})") from None
        vocab = cls.from_dict(record, text_tokenizer, source=str(path))
        if expected_hash is not None:
            vocab.check_hash(expected_hash, source=str(path))
        return vocab

    def check_hash(self, expected_hash: str, *, source: str = "token stream") -> None:
        if expected_hash != self.hash:
            raise VocabularyMismatchError(
                f"{source} was encoded with vocabulary {expected_hash[:16]}..., this vocabulary is"
                f" {self.hash[:16]}...: refusing to decode with a different id layout"
            )

    def __repr__(self) -> str:
        parts = [f"text={self.text.size}", f"special={len(self.special_names)}", f"max_grid={self.max_grid}"]
        parts += [f"{m}={len(r)}x{r[0].size}" if len({c.size for c in r}) == 1 else
                  f"{m}={'+'.join(str(c.size) for c in r)}" for m, r in self.ranges.items()]
        if self.image_scales is not None:
            parts.append(f"image_scales={len(self.image_scales)}")
        return f"Vocabulary({', '.join(parts)}, size={self.size}, hash={self.hash[:12]})"


def codebook_shapes(*, image_tokenizer=None, audio_tokenizer=None, audio_codec=None, video_tokenizer=None) -> dict:
    """The Vocabulary arguments (image_codes, audio, audio_codec, and image_scales for multi-scale codes) the
    given tokenizers need, read from their code_spec; ValueError naming the argument for a tokenizer of the
    wrong kind or a code layout the stream cannot lay out."""
    from ..tokenizer.protocol import expect_modality

    image_codes = image_scales = None
    image_from = None
    for name, tok, modality in (("image_tokenizer", image_tokenizer, "image"),
                                ("video_tokenizer", video_tokenizer, "video")):
        if tok is None:
            continue
        spec = expect_modality(tok, modality, name)
        codes, scales = _image_layout(name, tok, spec)
        if image_from is not None and (codes, scales) != (image_codes, image_scales):
            raise ValueError(f"video_tokenizer: its codes ({_describe_codes(codes, scales)}) and the image "
                             f"tokenizer's ({_describe_codes(image_codes, image_scales)}) would share the "
                             f"vocabulary's image range; use tokenizers with one codebook layout (e.g. the video "
                             f"tokenizer's own image mode)")
        image_codes, image_scales, image_from = codes, scales, name
    shapes = {"image_codes": image_codes}
    if image_scales is not None:
        shapes["image_scales"] = image_scales
    for name, tok, decodable in (("audio_tokenizer", audio_tokenizer, False), ("audio_codec", audio_codec, True)):
        shapes[name.replace("_tokenizer", "")] = None
        if tok is None:
            continue
        spec = expect_modality(tok, "audio", name, decodable=decodable)
        if len(set(spec.codebook_sizes)) != 1:
            raise ValueError(f"{name}: the stream lays out equal-size codebooks, got {list(spec.codebook_sizes)}")
        shapes[name.replace("_tokenizer", "")] = (spec.num_codebooks, spec.codebook_size)
    return shapes


def _image_layout(name: str, tok, spec):
    """(image_codes, image_scales) for one image / video tokenizer's code_spec: one (h, w) codebook -> its size;
    an image ("codebook", "h", "w") -> the sizes of its codebooks (factorised sub-tokens); an image ("token",)
    with extra["scales"] -> (its size, the scales)."""
    axes = spec.axes
    if axes in (("h", "w"), ("t", "h", "w")):
        return spec.codebook_size, None
    if axes == ("codebook", "h", "w"):
        sizes = tuple(spec.codebook_sizes)
        return (sizes[0] if len(sizes) == 1 else sizes), None
    if axes == ("token",):
        scales = spec.extra.get("scales")
        if not scales or spec.num_codebooks != 1:
            raise ValueError(f"{name}: the stream lays out ('token',) image codes as multi-scale token maps, which "
                             f"needs one codebook and code_spec.extra['scales']; {type(tok).__name__} has "
                             f"{spec.num_codebooks} codebook(s) and extra {sorted(spec.extra)}")
        return spec.codebook_size, tuple((int(h), int(w)) for h, w in scales)
    raise ValueError(f"{name}: the stream lays out (h, w) grids (one or several codebooks) and multi-scale token "
                     f"sequences; {type(tok).__name__} has codes {axes} with {spec.num_codebooks} codebooks")


def _describe_codes(codes, scales) -> str:
    text = f"codebook sizes {list(codes)}" if isinstance(codes, tuple) else f"{codes} codes"
    return text if scales is None else f"{text} in {len(scales)} scales"


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _image_sizes(value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (_positive_int(value, "image_codes"),)
    try:
        sizes = tuple(value)
    except TypeError:
        raise ValueError(f"image_codes must be a positive int or a sequence of them, got {value!r}") from None
    if not sizes:
        raise ValueError("image_codes: an empty list of codebook sizes")
    return tuple(_positive_int(k, f"image_codes[{i}]") for i, k in enumerate(sizes))


def _image_scales(value: Any, image_sizes) -> tuple[tuple[int, int], ...] | None:
    if value is None:
        return None
    if image_sizes is None or len(image_sizes) != 1:
        raise ValueError("image_scales needs one image codebook (image_codes an int)")
    try:
        scales = tuple((_positive_int(h, "image_scales h"), _positive_int(w, "image_scales w")) for h, w in value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"image_scales must be (h, w) pairs coarse to fine, got {value!r} ({exc})") from None
    if not scales:
        raise ValueError("image_scales: an empty list of scales")
    return scales


def _codebook_sizes(value: Any, name: str) -> tuple[int, ...] | None:
    shape = _codebook_shape(value, name)
    return None if shape is None else (shape[1],) * shape[0]


def _codebook_shape(value: Any, name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        codebooks, size = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (num_codebooks, codes_per_codebook), got {value!r}") from None
    return _positive_int(codebooks, f"{name} num_codebooks"), _positive_int(size, f"{name} codebook size")
