"""Flat ids -> segments, for sequences a model generated (which may be malformed).

strict=True raises StreamDecodeError naming the first offending token position. strict=False returns what
it can: an incomplete grid is padded with `fill_code` (or cropped), a foreign code is replaced, a block
without its end token is closed where the next block/text starts, and every change is listed as a Repair.

Memory is bounded by the input in both modes: entries that are not integer ids are refused (strict) or treated
as foreign tokens (lenient); lenient padding of declared-but-missing grid cells draws on one budget per call,
max(len(ids), PAD_FLOOR) cells, and an image whose padding would exceed what is left is dropped (a Repair), so
neither `[image_begin, res64, res64, image_end] * N` nor a huge `max_grid` can make grids far larger than the
ids; at most MAX_REPAIRS repairs are listed, then one more that counts the rest.

Factorised sub-tokens (several image codebooks) are checked per position: the j-th sub-token of a row must come
from codebook j mod K (strict: an error; lenient: replaced by `fill_code`), and rows, padding and cropping count
sub-tokens, so a truncated position is padded. Multi-scale images (the vocabulary's image_scales) are a flat run
of exactly `image_tokens` codes; lenient decoding pads or crops to that length (or drops the image when the
padding budget is spent), and resolution tokens that disagree with the finest scale are reported.
"""
from __future__ import annotations

import math
import re

import torch

from .errors import Repair, StreamDecodeError
from .ids import as_ids
from .segments import Audio, AudioCodec, Frame, Image, Text, Video
from .vocabulary import CODE, INVALID, RESOLUTION, SPECIAL, TEXT, Vocabulary


PAD_FLOOR = 1 << 16  # cells any one call may pad regardless of its length (a truncated 256x256 grid)
MAX_REPAIRS = 10_000
_TIMESTAMP = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)")


class DecodedSegments(list):
    """The decoded segments (a list) plus `repairs`: what lenient decoding had to fix (empty when clean)."""

    def __init__(self, segments=(), repairs=()):
        super().__init__(segments)
        self.repairs: list[Repair] = list(repairs)


class _Parser:
    def __init__(self, vocab: Vocabulary, ids, *, strict: bool, fill_code: int):
        self.vocab = vocab
        self.ids, self.not_ids = as_ids(ids)
        if strict and self.not_ids:
            first = min(self.not_ids)
            raise StreamDecodeError(first, self.not_ids[first])
        category, detail, value = vocab.classify(self.ids)
        # plain lists: the parser reads one entry at a time, and list indexing is far cheaper than NumPy's
        self.category, self.detail, self.value = category.tolist(), detail.tolist(), value.tolist()
        self.strict = strict
        self.fill_code = int(fill_code)
        self.repairs: list[Repair] = []
        self.unlisted = 0
        self.pos = 0
        self.n = len(self.ids)
        self.pad_budget = max(self.n, PAD_FLOOR)

    # ---- helpers -------------------------------------------------------------------------------
    def problem(self, position: int, kind: str, message: str) -> None:
        """Raise in strict mode, else note the repair and carry on."""
        if self.strict:
            raise StreamDecodeError(position, message)
        self.note(Repair(position, kind, message))

    def note(self, repair: Repair) -> None:
        if len(self.repairs) < MAX_REPAIRS:
            self.repairs.append(repair)
        else:
            self.unlisted += 1

    def special_at(self, p: int) -> str | None:
        if p < self.n and self.category[p] == SPECIAL:
            return self.vocab.special_names[self.detail[p]]
        return None

    def describe(self, p: int) -> str:
        if p >= self.n:
            return "the end of the sequence"
        c = self.category[p]
        if c == TEXT:
            return f"text token {self.ids[p]}"
        if c == SPECIAL:
            return f"<{self.special_name(p)}>"
        if c == RESOLUTION:
            return f"resolution token <res_{self.value[p]}>"
        if c == CODE:
            r = self.vocab.range_list[self.detail[p]]
            return f"a code from the {r.modality!r} range (codebook {r.codebook}, code {self.value[p]})"
        if p in self.not_ids:
            return self.not_ids[p]
        return f"id {self.ids[p]} outside the vocabulary (size {self.vocab.size})"

    def special_name(self, p: int) -> str:
        return self.vocab.special_names[self.detail[p]]

    def is_code_of(self, p: int, modality: str, codebook: int = 0) -> bool:
        if self.category[p] != CODE:
            return False
        r = self.vocab.range_list[self.detail[p]]
        return r.modality == modality and r.codebook == codebook

    # ---- top level -----------------------------------------------------------------------------
    def parse(self) -> DecodedSegments:
        segments: list = []
        text_start = None
        if self.n and self.special_at(0) == "bos":
            self.pos = 1
        while self.pos < self.n:
            p = self.pos
            if self.category[p] == TEXT:
                text_start = p if text_start is None else text_start
                self.pos += 1
                continue
            if text_start is not None:
                segments.append(Text(self.vocab.text.decode(self.ids[text_start:p].tolist())))
                text_start = None
            name = self.special_at(p)
            if name == "image_begin":
                image = self.parse_image(Image)
                if image is not None:
                    segments.append(image)
            elif name in ("audio_begin", "audio_codec_begin"):
                audio = self.parse_audio()
                if audio is not None:
                    segments.append(audio)
            elif name == "video_begin":
                segments.append(self.parse_video())
            elif name == "eos":
                self.pos += 1
                self.check_tail()
                break
            elif name == "pad":
                self.pos += 1
            else:
                self.problem(p, "stray_token", f"{self.describe(p)} outside any block")
                self.pos += 1
        if text_start is not None:
            segments.append(Text(self.vocab.text.decode(self.ids[text_start:self.pos].tolist())))
        if self.unlisted:
            self.repairs.append(Repair(self.n, "unlisted_repairs", f"{self.unlisted} further repairs not listed"))
        return DecodedSegments(segments, self.repairs)

    def check_tail(self) -> None:
        rest = [p for p in range(self.pos, self.n) if self.special_at(p) != "pad"]
        if rest:
            self.problem(rest[0], "after_eos", f"{len(rest)} token(s) after <eos> (dropped)")
        self.pos = self.n

    # ---- images --------------------------------------------------------------------------------
    def parse_image(self, kind):
        if self.vocab.image_scales is not None:
            return self.parse_scales(kind)
        start = self.pos
        self.pos += 1
        size = []
        for what in ("height", "width"):
            if self.pos < self.n and self.category[self.pos] == RESOLUTION:
                size.append(int(self.value[self.pos]))
                self.pos += 1
            else:
                self.problem(self.pos, "missing_resolution", f"image begun at position {start} expects a resolution"
                             f" token (grid {what}), found {self.describe(self.pos)}")
                break
        h, w = size if len(size) == 2 else (None, None)
        rows: list[list[int]] = []
        row: list[int] = []
        eor = self.vocab.end_of_row
        k = len(self.vocab.codebooks("image"))
        while True:
            p = self.pos
            if p >= self.n:
                self.problem(p, "missing_end", f"image begun at position {start} is truncated: no <image_end>"
                             " before the end of the sequence")
                break
            c = self.category[p]
            if self.is_code_of(p, "image", len(row) % k):
                row.append(int(self.value[p]))
            elif c == CODE or c == INVALID:
                where = f" where image codebook {len(row) % k} was expected" if k > 1 else ""
                self.problem(p, "foreign_code", f"{self.describe(p)} inside the image begun at position {start}"
                             f"{where} (replaced by image code {self.fill_code})")
                row.append(self.fill_code)
            elif c == RESOLUTION:
                self.problem(p, "stray_token", f"{self.describe(p)} inside the image begun at position {start}")
            elif c == SPECIAL and self.special_name(p) == "end_of_row" and eor:
                if w is not None and len(row) != w * k:
                    self.problem(p, "row_length", f"row {len(rows)} of the image begun at position {start} has"
                                 f" {len(row)} codes, expected {w * k}")
                if h is not None and len(rows) == h:
                    self.problem(p, "extra_rows", f"image begun at position {start} has more than {h} rows")
                rows.append(row)
                row = []
            elif c == SPECIAL and self.special_name(p) == "image_end":
                self.pos += 1
                break
            elif c == SPECIAL and self.special_name(p) in ("pad", "end_of_row"):
                self.problem(p, "stray_token", f"{self.describe(p)} inside the image begun at position {start}")
            else:
                self.problem(p, "missing_end", f"image begun at position {start} has no <image_end>: found"
                             f" {self.describe(p)}")
                break  # leave this token for the enclosing level
            self.pos += 1
        end = self.pos - 1 if self.pos and self.special_at(self.pos - 1) == "image_end" else self.pos
        if eor:
            if row:
                self.problem(end, "row_length", f"last row of the image begun at position {start} has no"
                             " end-of-row token")
                rows.append(row)
        else:
            rows = [row]
        grid = self.assemble_grid(rows, h, w, start, end, k)
        if grid is None:
            return None
        if k > 1:  # (h, w * K) sub-tokens -> (K, h, w)
            grid = grid.reshape(grid.shape[0], -1, k).permute(2, 0, 1).contiguous()
        return kind(codes=grid)

    def assemble_grid(self, rows, h, w, start, end, k=1):
        """The (h, w * k) grid of sub-tokens (k per position) from the rows read, padded / cropped."""
        eor = self.vocab.end_of_row
        if h is None:  # lenient only: infer the grid the resolution tokens should have given
            if eor and rows:
                h, w = len(rows), max(1, -(-len(rows[0]) // k))
            else:
                count = -(-len(rows[0]) // k) if rows else 0
                if count == 0:
                    self.note(Repair(start, "dropped_image", "image with no codes and no size dropped"))
                    return None
                w = math.isqrt(count - 1) + 1
                h = -(-count // w)
            self.note(Repair(start, "inferred_grid", f"grid {h}x{w} inferred from the codes"))
        w *= k  # from here on w counts sub-tokens
        present = sum(min(len(row), w) for row in rows[:h]) if eor else min(len(rows[0]) if rows else 0, h * w)
        padding = h * w - present
        if padding > self.pad_budget and not self.strict:  # strict mode refuses any incomplete grid itself
            self.note(Repair(start, "dropped_image", f"image begun at position {start} declares a {h}x{w} grid but"
                             f" has {present} codes; padding {padding} cells exceeds the {self.pad_budget} left for"
                             f" this input of {self.n} ids (dropped)"))
            return None
        self.pad_budget -= padding
        if not eor:
            flat = rows[0]
            if len(flat) != h * w:
                self.problem(end, "truncated_grid" if len(flat) < h * w else "cropped_grid",
                             f"image begun at position {start} has {len(flat)} codes, expected {h}x{w}={h * w}"
                             f" ({'padded' if len(flat) < h * w else 'cropped'})")
            flat = (flat + [self.fill_code] * (h * w))[: h * w]
            return torch.tensor(flat, dtype=torch.int64).reshape(h, w)
        if len(rows) < h:
            self.problem(end, "truncated_grid", f"image begun at position {start} has {len(rows)} of {h} rows"
                         " (padded)")
        grid = torch.full((h, w), self.fill_code, dtype=torch.int64)
        for r, row in enumerate(rows[:h]):
            row = row[:w]
            if row:
                grid[r, : len(row)] = torch.tensor(row, dtype=torch.int64)
        return grid

    def parse_scales(self, kind):
        """A multi-scale image: <image_begin> <res h> <res w> exactly image_tokens codes <image_end>."""
        start = self.pos
        self.pos += 1
        final = self.vocab.image_scales[-1]
        size = []
        for what in ("height", "width"):
            if self.pos < self.n and self.category[self.pos] == RESOLUTION:
                size.append(int(self.value[self.pos]))
                self.pos += 1
            else:
                self.problem(self.pos, "missing_resolution", f"image begun at position {start} expects a resolution"
                             f" token (grid {what}), found {self.describe(self.pos)}")
                break
        if len(size) == 2 and tuple(size) != final:
            self.problem(start + 1, "wrong_resolution", f"image begun at position {start} declares a"
                         f" {size[0]}x{size[1]} grid; this vocabulary's finest scale is {final[0]}x{final[1]}")
        tokens: list[int] = []
        while True:
            p = self.pos
            if p >= self.n:
                self.problem(p, "missing_end", f"image begun at position {start} is truncated: no <image_end>"
                             " before the end of the sequence")
                break
            c = self.category[p]
            if self.is_code_of(p, "image"):
                tokens.append(int(self.value[p]))
            elif c == CODE or c == INVALID:
                self.problem(p, "foreign_code", f"{self.describe(p)} inside the image begun at position {start}"
                             f" (replaced by image code {self.fill_code})")
                tokens.append(self.fill_code)
            elif c == SPECIAL and self.special_name(p) == "image_end":
                self.pos += 1
                break
            elif c == RESOLUTION or (c == SPECIAL and self.special_name(p) in ("pad", "end_of_row")):
                self.problem(p, "stray_token", f"{self.describe(p)} inside the image begun at position {start}")
            else:
                self.problem(p, "missing_end", f"image begun at position {start} has no <image_end>: found"
                             f" {self.describe(p)}")
                break  # leave this token for the enclosing level
            self.pos += 1
        end = self.pos - 1 if self.pos and self.special_at(self.pos - 1) == "image_end" else self.pos
        want = self.vocab.image_tokens
        if not tokens and not self.strict:
            self.note(Repair(start, "dropped_image", f"image begun at position {start} has no codes (dropped)"))
            return None
        padding = max(0, want - len(tokens))
        if padding > self.pad_budget and not self.strict:
            self.note(Repair(start, "dropped_image", f"image begun at position {start} has {len(tokens)} of {want}"
                             f" tokens; padding {padding} exceeds the {self.pad_budget} left for this input of"
                             f" {self.n} ids (dropped)"))
            return None
        self.pad_budget -= padding
        if len(tokens) != want:
            self.problem(end, "truncated_grid" if len(tokens) < want else "cropped_grid",
                         f"image begun at position {start} has {len(tokens)} tokens, expected {want} over the"
                         f" scales {[list(s) for s in self.vocab.image_scales]}"
                         f" ({'padded' if len(tokens) < want else 'cropped'})")
        tokens = (tokens + [self.fill_code] * padding)[:want]
        return kind(codes=torch.tensor(tokens, dtype=torch.int64))

    # ---- audio ---------------------------------------------------------------------------------
    def parse_audio(self):
        start = self.pos
        modality = "audio" if self.special_at(start) == "audio_begin" else "audio_codec"
        end_name = f"{modality}_end"
        codebooks = len(self.vocab.codebooks(modality))
        codes: list[int] = []
        self.pos += 1
        while True:
            p = self.pos
            if p >= self.n:
                self.problem(p, "missing_end", f"{modality} block begun at position {start} is truncated: no"
                             f" <{end_name}> before the end of the sequence")
                break
            c = self.category[p]
            expected = len(codes) % codebooks
            if self.is_code_of(p, modality, expected):
                codes.append(int(self.value[p]))
            elif c == CODE or c == INVALID:
                self.problem(p, "foreign_code", f"{self.describe(p)} where {modality} codebook {expected} was"
                             f" expected (replaced by code {self.fill_code})")
                codes.append(self.fill_code)
            elif c == SPECIAL and self.special_name(p) == end_name:
                self.pos += 1
                break
            else:
                self.problem(p, "missing_end", f"{modality} block begun at position {start} has no <{end_name}>:"
                             f" found {self.describe(p)}")
                break
            self.pos += 1
        if len(codes) % codebooks:
            self.problem(self.pos - 1, "truncated_frame", f"{modality} block begun at position {start} ends inside"
                         f" a frame ({len(codes) % codebooks} of {codebooks} codebooks; partial frame dropped)")
            codes = codes[: len(codes) - len(codes) % codebooks]
        grid = torch.tensor(codes, dtype=torch.int64).reshape(-1, codebooks).T.contiguous()
        return (Audio if modality == "audio" else AudioCodec)(codes=grid)

    # ---- video ---------------------------------------------------------------------------------
    def parse_video(self) -> Video:
        start = self.pos
        video = Video()
        self.pos += 1
        while True:
            p = self.pos
            name = self.special_at(p)
            if name == "frame":
                frame = self.parse_frame()
                if frame is not None:
                    video.frames.append(frame)
            elif name == "image_begin":
                self.problem(p, "missing_frame", f"image at position {p} in the video begun at position {start}"
                             " has no <frame> marker (timestamp unknown)")
                frame = self.parse_image(Frame)
                if frame is not None:
                    video.frames.append(frame)
            elif name in ("audio_begin", "audio_codec_begin"):
                audio = self.parse_audio()
                if video.audio is not None:
                    self.problem(p, "extra_audio", f"second audio track in the video begun at position {start}"
                                 " (dropped)")
                else:
                    video.audio = audio
            elif name == "video_end":
                self.pos += 1
                return video
            else:
                what = "is truncated: no <video_end> before the end of the sequence" if p >= self.n else \
                    f"has no <video_end>: found {self.describe(p)}"
                self.problem(p, "missing_end", f"video begun at position {start} {what}")
                return video

    def parse_frame(self):
        start = self.pos
        self.pos += 1
        while self.pos < self.n and self.category[self.pos] == TEXT:
            self.pos += 1
        stamp_text = self.vocab.text.decode(self.ids[start + 1: self.pos].tolist()).strip()
        timestamp = None
        if stamp_text:
            value = float(stamp_text) if _TIMESTAMP.fullmatch(stamp_text) else math.nan
            if math.isfinite(value):
                timestamp = value
            else:
                shown = stamp_text if len(stamp_text) <= 40 else stamp_text[:37] + "..."
                self.problem(start + 1, "bad_timestamp", f"frame at position {start} has timestamp {shown!r},"
                             " not a finite decimal number of seconds")
        if self.special_at(self.pos) != "image_begin":
            self.problem(self.pos, "missing_image", f"frame at position {start} is not followed by an image: found"
                         f" {self.describe(self.pos)} (frame dropped)")
            return None
        frame = self.parse_image(Frame)
        if frame is not None:
            frame.timestamp = timestamp
        return frame


def decode_ids(vocab: Vocabulary, ids, *, strict: bool = True, fill_code: int = 0) -> DecodedSegments:
    return _Parser(vocab, ids, strict=strict, fill_code=fill_code).parse()
