"""The id layouts of released native multimodal models, over their own text tokenizers.

A user fine-tuning or evaluating Chameleon, Emu3, Lumina-mGPT, AnyGPT or Janus needs that model's ids, not
mmtok's layout. Each convention here emits (and strictly parses back) the ids the model's own processing
produces, finding every special and code token by its *name* in the model's tokenizer table:

| name | image block | audio |
|---|---|---|
| chameleon (Anole) | `<racm3:break>` + h*w codes mapped by the `IMGIMG..Z` token names + `<eoss>` | - |
| lumina_mgpt | `<racm3:break>` `<reservedNNNNN>` x2 (grid counts, 8800 + rows/2, 8800 + columns/2) + rows of codes each ended by `<reserved08799>` + `<eoss>` | - |
| emu3 | `<\\|image start\\|>` "H*W" (text) `<\\|image token\\|>` + rows of `<\\|visual token NNNNNN\\|>` each ended by `<\\|extra_200\\|>` + `<\\|extra_201\\|>` `<\\|image end\\|>` | - |
| anygpt | `<soim>` `<👀i>`.. `<eoim>` (1-D codes) | speech `<sosp>` `<🗣️i>`.. `<eosp>`; music `<somu>` `<🎶{c + 2048 k}>` frame-major `<eomu>` |
| janus | `<begin_of_image>` + n `<image_placeholder>` + `<end_of_image>`; the codes themselves are ids of the separate image head (0..codebook-1), carried in `TokenIds.images` | - |

`Vocabulary.from_convention(name, text_tokenizer=...)` (or `convention(...)`) returns one of these; it has
`encode(segments)`, `decode(ids, strict=True)`, `size` (the model's vocabulary) and `hash`.
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Sequence

import numpy as np
import torch

from .decoder import DecodedSegments
from .errors import StreamDecodeError
from .segments import Audio, AudioCodec, Image, Text
from .text import as_text_tokenizer
from .token_stream import TokenIds


class Convention:
    """Segments <-> one released model's ids. Subclasses define the blocks."""

    name = ""
    bos_token: str | None = None
    eos_token: str | None = None

    def __init__(self, text_tokenizer: Any):
        if text_tokenizer is None:
            raise ValueError(f"the {self.name} convention needs the model's text tokenizer (text_tokenizer=...)")
        get_vocab = getattr(text_tokenizer, "get_vocab", None)
        if not callable(get_vocab):
            raise ValueError(f"text_tokenizer {type(text_tokenizer).__name__} has no get_vocab(): the {self.name}"
                             " convention finds its tokens by name")
        self.text = as_text_tokenizer(text_tokenizer)
        self.table: dict[str, int] = {str(k): int(v) for k, v in get_vocab().items()}
        self.size = max(self.text.size, max(self.table.values()) + 1)
        self.bos = self.token_id(self.bos_token) if self.bos_token else None
        self.eos = self.token_id(self.eos_token) if self.eos_token else None

    def token_id(self, name: str) -> int:
        try:
            return self.table[name]
        except KeyError:
            raise ValueError(f"the {self.name} convention needs token {name!r}, which the text tokenizer lacks")

    def code_table(self, pattern: str, what: str) -> np.ndarray:
        """code -> id from the token names matching `pattern` (one group: the code as text)."""
        regex = re.compile(pattern)
        pairs = []
        for name, token in self.table.items():
            match = regex.fullmatch(name)
            if match:
                pairs.append((self.parse_code(match.group(1)), token))
        if not pairs:
            raise ValueError(f"the text tokenizer has no {what} tokens (names like {pattern!r}) for the {self.name}"
                             " convention")
        codes = np.full(max(c for c, _ in pairs) + 1, -1, dtype=np.int64)
        for code, token in pairs:
            codes[code] = token
        if (codes < 0).any():
            raise ValueError(f"{self.name}: {what} codes {np.flatnonzero(codes < 0)[:5].tolist()} have no token")
        return codes

    @staticmethod
    def parse_code(text: str) -> int:
        return int(text)

    def inverse(self, table: np.ndarray) -> dict[int, int]:
        return {int(token): code for code, token in enumerate(table.tolist())}

    # ---- encode -----------------------------------------------------------------------------------
    def encode(self, segments: Sequence, *, add_bos: bool = True, add_eos: bool = False) -> TokenIds:
        ids = [self.bos] if add_bos and self.bos is not None else []
        images = []
        for segment in segments:
            if isinstance(segment, str):
                segment = Text(segment)
            if isinstance(segment, Text):
                ids += self.text.encode(segment.text)
            else:
                ids += self.encode_block(segment, images)
        if add_eos:
            if self.eos is None:
                raise ValueError(f"the {self.name} convention has no end-of-sequence token")
            ids.append(self.eos)
        out = TokenIds(ids, self.hash)
        out.images = images
        return out

    def encode_block(self, segment, images: list) -> list[int]:
        raise ValueError(f"the {self.name} convention cannot encode a {type(segment).__name__} segment")

    # ---- decode -----------------------------------------------------------------------------------
    def decode(self, ids, *, strict: bool = True, images=None) -> DecodedSegments:
        """ids -> segments; raises StreamDecodeError at the first token that breaks the layout."""
        if not strict:
            raise ValueError("conventions decode strictly only (use the mmtok layout for lenient repair)")
        images = list(images if images is not None else (getattr(ids, "images", None) or []))
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        ids = [int(i) for i in ids]
        segments, text, p = [], [], 0
        if ids and self.bos is not None and ids[0] == self.bos:
            p = 1
        begins = self.block_begins()
        while p < len(ids):
            token = ids[p]
            if token in begins:
                if text:
                    segments.append(Text(self.text.decode(text)))
                    text = []
                segment, p = begins[token](ids, p, images)
                segments.append(segment)
            elif self.eos is not None and token == self.eos:
                if p != len(ids) - 1:
                    raise StreamDecodeError(p + 1, f"{len(ids) - p - 1} token(s) after the end-of-sequence token")
                p += 1
            elif self.is_block_token(token):
                raise StreamDecodeError(p, f"{self.describe(token)} outside any block")
            else:
                text.append(token)
                p += 1
        if text:
            segments.append(Text(self.text.decode(text)))
        return DecodedSegments(segments)

    def block_begins(self) -> dict:
        return {}

    def is_block_token(self, token: int) -> bool:
        return False

    def describe(self, token: int) -> str:
        names = getattr(self, "_names", None)
        if names is None:
            names = self._names = {v: k for k, v in self.table.items()}
        return f"token {token} ({names.get(token, '?')!r})"

    def expect(self, ids, p: int, token: int, what: str) -> int:
        if p >= len(ids):
            raise StreamDecodeError(p, f"{what} expected, found the end of the sequence")
        if ids[p] != token:
            raise StreamDecodeError(p, f"{what} expected, found {self.describe(ids[p])}")
        return p + 1

    def codes(self, ids, p: int, n: int, inverse: dict[int, int], what: str) -> tuple[list[int], int]:
        out = []
        for q in range(p, p + n):
            code = inverse.get(ids[q]) if q < len(ids) else None
            if code is None:
                found = "the end of the sequence" if q >= len(ids) else self.describe(ids[q])
                raise StreamDecodeError(q, f"{what} expected, found {found}")
            out.append(code)
        return out, p + n

    # ---- identity ---------------------------------------------------------------------------------
    def describe_layout(self) -> dict:
        return {"convention": self.name, "text": self.text.describe(), "size": self.size}

    @property
    def hash(self) -> str:
        canonical = json.dumps(self.describe_layout(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, hash={self.hash[:12]})"


def _grid(segment, what: str) -> np.ndarray:
    if segment.codes is None:
        raise ValueError(f"{what}: the Image segment has no codes (tokenize its source first)")
    return np.asarray(segment.codes.cpu(), dtype=np.int64)


def _mapped(table: np.ndarray, codes: np.ndarray, what: str) -> np.ndarray:
    bad = (codes < 0) | (codes >= len(table))
    if bad.any():
        raise ValueError(f"{what}: code {codes[bad][0]} outside the model's {len(table)} codes")
    return table[codes]


class Chameleon(Convention):
    """Chameleon / Anole: a fixed grid of codes mapped onto BPE tokens named IMGIMG<digits as A-J>Z."""

    name = "chameleon"
    bos_token, eos_token = "<s>", "</s>"
    image_begin, image_end, sep_token = "<racm3:break>", "<eoss>", "<reserved08706>"
    letters = {chr(ord("A") + i): str(i) for i in range(10)}

    def __init__(self, text_tokenizer, *, grid: tuple[int, int] = (32, 32)):
        super().__init__(text_tokenizer)
        self.grid = (int(grid[0]), int(grid[1]))
        self.begin, self.end = self.token_id(self.image_begin), self.token_id(self.image_end)
        self.image_ids = self.code_table(r"IMGIMG([A-J]+)Z", "IMGIMG image")
        self.image_codes = self.inverse(self.image_ids)

    def parse_code(self, text: str) -> int:
        return int("".join(self.letters[c] for c in text))

    def encode_block(self, segment, images):
        if not isinstance(segment, Image):
            return super().encode_block(segment, images)
        codes = _grid(segment, self.name)
        if codes.shape != self.grid:
            raise ValueError(f"{self.name}: image grid {codes.shape} but the model's grid is {self.grid}")
        return [self.begin, *_mapped(self.image_ids, codes, self.name).reshape(-1).tolist(), self.end]

    def block_begins(self):
        return {self.begin: self.parse_image}

    def is_block_token(self, token):
        return token == self.end or token in self.image_codes

    def parse_image(self, ids, p, images):
        h, w = self.grid
        codes, q = self.codes(ids, p + 1, h * w, self.image_codes, f"image code of the image begun at {p}")
        q = self.expect(ids, q, self.end, f"{self.image_end} closing the image begun at {p}")
        return Image(codes=torch.tensor(codes).reshape(h, w)), q

    def describe_layout(self):
        return {**super().describe_layout(), "grid": list(self.grid)}


class LuminaMGPT(Chameleon):
    """Lumina-mGPT: Chameleon's image tokens with grid-count tokens and a new-line token after each row."""

    name = "lumina_mgpt"
    new_line = "<reserved08799>"

    def __init__(self, text_tokenizer):
        super().__init__(text_tokenizer)
        self.eol = self.token_id(self.new_line)
        self.count_ids = {int(m.group(1)) - 8800: v for k, v in self.table.items()
                          if (m := re.fullmatch(r"<reserved(\d{5})>", k)) and 8800 < int(m.group(1)) <= 8800 + 512}
        self.counts = {v: n for n, v in self.count_ids.items()}

    def count_token(self, n: int) -> int:
        if n not in self.count_ids:
            raise ValueError(f"lumina_mgpt: no grid-count token for {n} (the tokenizer lacks <reserved{8800 + n:05d}>)")
        return self.count_ids[n]

    def encode_block(self, segment, images):
        if not isinstance(segment, Image):
            return Convention.encode_block(self, segment, images)
        codes = _grid(segment, self.name)
        h, w = codes.shape
        if h % 2 or w % 2:
            raise ValueError(f"lumina_mgpt: grid {h}x{w} must have even sides (grid counts are in 32-pixel patches"
                             " of 2x2 codes)")
        body = np.concatenate([_mapped(self.image_ids, codes, self.name), np.full((h, 1), self.eol)], axis=1)
        return [self.begin, self.count_token(h // 2), self.count_token(w // 2), *body.reshape(-1).tolist(),
                self.end]

    def is_block_token(self, token):
        return super().is_block_token(token) or token == self.eol

    def parse_image(self, ids, p, images):
        sizes = []
        for q in (p + 1, p + 2):
            if q >= len(ids) or ids[q] not in self.counts:
                raise StreamDecodeError(q, f"grid-count token expected in the image begun at {p}")
            sizes.append(2 * self.counts[ids[q]])
        h, w = sizes
        q, rows = p + 3, []
        for r in range(h):
            row, q = self.codes(ids, q, w, self.image_codes, f"code of row {r} of the image begun at {p}")
            q = self.expect(ids, q, self.eol, f"new-line token ending row {r} of the image begun at {p}")
            rows.append(row)
        q = self.expect(ids, q, self.end, f"{self.image_end} closing the image begun at {p}")
        return Image(codes=torch.tensor(rows)), q

    def describe_layout(self):
        return Convention.describe_layout(self)


class Emu3(Convention):
    """Emu3: visual-token names, the grid as "H*W" text, end-of-line after every row, end-of-frame, end-of-image."""

    name = "emu3"
    bos_token, eos_token = "<|extra_203|>", "<|extra_204|>"
    tokens = {"begin": "<|image start|>", "wrapper": "<|image token|>", "eol": "<|extra_200|>",
              "eof": "<|extra_201|>", "end": "<|image end|>"}

    def __init__(self, text_tokenizer):
        super().__init__(text_tokenizer)
        self.ids = {k: self.token_id(v) for k, v in self.tokens.items()}
        self.image_ids = self.code_table(r"<\|visual token (\d{6})\|>", "visual")
        self.image_codes = self.inverse(self.image_ids)

    def size_text(self, h: int, w: int) -> list[int]:
        return self.text.encode(f"{h}*{w}")

    def image_prompt(self, h: int, w: int) -> list[int]:
        """What Emu3's processor appends to a prompt for generating an h x w-code image."""
        return [self.ids["begin"], *self.size_text(h, w), self.ids["wrapper"]]

    def encode_block(self, segment, images):
        if not isinstance(segment, Image):
            return super().encode_block(segment, images)
        codes = _grid(segment, self.name)
        h, w = codes.shape
        body = np.concatenate([_mapped(self.image_ids, codes, self.name), np.full((h, 1), self.ids["eol"])], axis=1)
        return [*self.image_prompt(h, w), *body.reshape(-1).tolist(), self.ids["eof"], self.ids["end"]]

    def block_begins(self):
        return {self.ids["begin"]: self.parse_image}

    def is_block_token(self, token):
        return token in self.image_codes or token in self.ids.values()

    def parse_image(self, ids, p, images):
        q = p + 1
        while q < len(ids) and ids[q] != self.ids["wrapper"] and not self.is_block_token(ids[q]):
            q += 1
        size = self.text.decode(ids[p + 1: q])
        match = re.fullmatch(r"\s*(\d+)\s*\*\s*(\d+)\s*", size)
        if not match:
            raise StreamDecodeError(p + 1, f"image begun at {p}: size text {size!r} is not 'H*W'")
        h, w = int(match.group(1)), int(match.group(2))
        q = self.expect(ids, q, self.ids["wrapper"], f"<|image token|> after the size of the image begun at {p}")
        rows = []
        for r in range(h):
            row, q = self.codes(ids, q, w, self.image_codes, f"visual token of row {r} of the image begun at {p}")
            q = self.expect(ids, q, self.ids["eol"], f"end-of-line ending row {r} of the image begun at {p}")
            rows.append(row)
        q = self.expect(ids, q, self.ids["eof"], f"end-of-frame of the image begun at {p}")
        q = self.expect(ids, q, self.ids["end"], f"<|image end|> closing the image begun at {p}")
        return Image(codes=torch.tensor(rows).reshape(h, w)), q


class AnyGPT(Convention):
    """AnyGPT: per-modality begin/end tags; images and speech 1-D; music frame-major with per-level offsets."""

    name = "anygpt"
    bos_token, eos_token = "<s>", "</s>"
    modalities = {  # segment kind: (begin, end, prefix, codebooks, codes per codebook)
        "image": ("<soim>", "<eoim>", "👀", 1, 8192),
        "speech": ("<sosp>", "<eosp>", "🗣️", 1, 1024),
        "music": ("<somu>", "<eomu>", "🎶", 4, 2048),
    }

    def __init__(self, text_tokenizer):
        super().__init__(text_tokenizer)
        self.blocks = {}
        for kind, (begin, end, prefix, k, n) in self.modalities.items():
            table = self.code_table("<" + re.escape(prefix) + r"(\d+)>", f"{kind} ({prefix})")
            if len(table) != k * n:
                raise ValueError(f"anygpt: {len(table)} {kind} tokens, expected {k} x {n}")
            self.blocks[kind] = (self.token_id(begin), self.token_id(end), table, self.inverse(table), k, n)
        self._begins = {b[0]: kind for kind, b in self.blocks.items()}
        self._special = {b[1] for b in self.blocks.values()} | set(self._begins)
        self._codes = set().union(*(b[3] for b in self.blocks.values()))

    def encode_block(self, segment, images):
        if isinstance(segment, Image):
            kind, codes = "image", _grid(segment, self.name).reshape(1, -1)
        elif isinstance(segment, Audio):
            kind, codes = "speech", np.asarray(segment.codes, dtype=np.int64)
        elif isinstance(segment, AudioCodec):
            kind, codes = "music", np.asarray(segment.codes, dtype=np.int64)
        else:
            return super().encode_block(segment, images)
        begin, end, table, _, k, n = self.blocks[kind]
        if codes.shape[0] != k:
            raise ValueError(f"anygpt {kind}: codes must have {k} codebook(s), got {codes.shape[0]}")
        if ((codes < 0) | (codes >= n)).any():
            raise ValueError(f"anygpt {kind}: codes must lie in [0, {n})")
        flat = (codes + n * np.arange(k)[:, None]).T.reshape(-1)  # frame by frame, level l offset by l * n
        return [begin, *table[flat].tolist(), end]

    def block_begins(self):
        return {token: self.parse_block for token in self._begins}

    def is_block_token(self, token):
        return token in self._special or token in self._codes

    def parse_block(self, ids, p, images):
        kind = self._begins[ids[p]]
        _, end, _, inverse, k, n = self.blocks[kind]
        q, flat = p + 1, []
        while q < len(ids) and ids[q] != end:
            code = inverse.get(ids[q])
            level = len(flat) % k
            if code is None or code // n != level:
                raise StreamDecodeError(q, f"{kind} code of level {level} expected in the block begun at {p}, found"
                                        f" {self.describe(ids[q])}")
            flat.append(code - level * n)
            q += 1
        if q >= len(ids):
            raise StreamDecodeError(q, f"{kind} block begun at {p} has no end tag")
        if len(flat) % k:
            raise StreamDecodeError(q, f"{kind} block begun at {p} ends inside a frame")
        codes = torch.tensor(flat, dtype=torch.int64).reshape(-1, k).T.contiguous()
        segment = Image(codes=codes) if kind == "image" else (Audio if kind == "speech" else AudioCodec)(codes=codes)
        return segment, q + 1


class Janus(Convention):
    """Janus / Janus-Pro: image codes are ids of a separate generation head; the text stream holds
    `<begin_of_image>`, one `<image_placeholder>` per code, `<end_of_image>` (as JanusProcessor)."""

    name = "janus"
    bos_token, eos_token = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
    begin_token, end_token, placeholder_token = "<begin_of_image>", "<end_of_image>", "<image_placeholder>"

    def __init__(self, text_tokenizer, *, num_image_tokens: int = 576, codebook_size: int = 16384):
        self.num_image_tokens, self.codebook_size = int(num_image_tokens), int(codebook_size)
        side = int(round(self.num_image_tokens ** 0.5))
        if side * side != self.num_image_tokens:
            raise ValueError(f"janus: num_image_tokens={num_image_tokens} is not a square grid")
        self.grid = (side, side)
        super().__init__(text_tokenizer)
        self.begin, self.end = self.token_id(self.begin_token), self.token_id(self.end_token)
        self.placeholder = self.token_id(self.placeholder_token)

    def encode_block(self, segment, images):
        if not isinstance(segment, Image):
            return super().encode_block(segment, images)
        codes = _grid(segment, self.name)
        if codes.shape != self.grid:
            raise ValueError(f"janus: image grid {codes.shape} but the model's grid is {self.grid}")
        if ((codes < 0) | (codes >= self.codebook_size)).any():
            raise ValueError(f"janus: image codes must lie in [0, {self.codebook_size})")
        images.append(codes.reshape(-1).tolist())  # the image head's ids
        return [self.begin, *[self.placeholder] * self.num_image_tokens, self.end]

    def block_begins(self):
        return {self.begin: self.parse_image}

    def is_block_token(self, token):
        return token in (self.end, self.placeholder)

    def parse_image(self, ids, p, images):
        q = p + 1
        for q in range(p + 1, p + 1 + self.num_image_tokens):
            if q >= len(ids) or ids[q] != self.placeholder:
                raise StreamDecodeError(q, f"<image_placeholder> expected in the image begun at {p}")
        q = self.expect(ids, p + 1 + self.num_image_tokens, self.end, f"<end_of_image> closing the image begun at {p}")
        if not images:
            raise StreamDecodeError(p, "janus image block without its image-head ids (pass images=[...])")
        codes = images.pop(0)
        if len(codes) != self.num_image_tokens:
            raise StreamDecodeError(p, f"janus image-head ids: {len(codes)} codes, expected {self.num_image_tokens}")
        return Image(codes=torch.tensor(codes, dtype=torch.int64).reshape(self.grid)), q

    def describe_layout(self):
        return {**super().describe_layout(), "num_image_tokens": self.num_image_tokens,
                "codebook_size": self.codebook_size}


CONVENTIONS = {c.name: c for c in (Chameleon, LuminaMGPT, Emu3, AnyGPT, Janus)}
CONVENTIONS["anole"] = Chameleon


def convention(name: str, text_tokenizer: Any, **options) -> Convention:
    """The named convention ("chameleon", "anole", "lumina_mgpt", "emu3", "anygpt", "janus") over the model's
    own text tokenizer (a `transformers` or `tokenizers` tokenizer with get_vocab)."""
    try:
        cls = CONVENTIONS[str(name).lower().replace("-", "_")]
    except KeyError:
        raise ValueError(f"unknown convention {name!r}; known: {sorted(CONVENTIONS)}") from None
    return cls(text_tokenizer, **options)
