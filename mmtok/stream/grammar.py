"""The grammar of a token stream as a small state machine over ids (used by mmtok.stream.constraints).

The grammar is the one the strict decoder accepts (see mmtok.stream.encoder for the layout):

    [<bos>] (text | image | audio | codec | video)* [<eos> <pad>*]
    image  <image_begin> <res_h> <res_w> (w codes [<end_of_row>]) x h <image_end>
    audio  <audio_begin> (code of codebook 0, 1, .., K-1) x frames <audio_end>     (same for audio_codec)
    video  <video_begin> (<frame> timestamp image)* [audio | codec] <video_end>
    timestamp: digit text tokens with at most one '.', e.g. "12.500"

A state is a `GrammarState` (a few ints). For a state, `allowed_key` names the set of allowed next ids as
a tuple of *atoms* (all text ids, one special token, some resolution tokens, one codebook's range, the
timestamp tokens); the constraint turns each distinct key into one cached id mask, so a step costs a few
Python operations and one table lookup whatever the vocabulary size. `advance` moves a state by one
(already allowed) id in O(1).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
import numpy as np

from .vocabulary import Vocabulary

# modes
TOP, IMG_H, IMG_W, IMG_BODY, AUDIO, VIDEO, STAMP, DONE = range(8)
# timestamp phases: nothing yet, digits before the point, after the point
STAMP_START, STAMP_INT, STAMP_FRAC = range(3)
BLOCKS = ("image", "audio", "audio_codec", "video")
_DOT = re.compile(r"^[0-9]*\.[0-9]*$")
_DOT_LEAD = re.compile(r"^[0-9]+\.[0-9]*$")


@dataclass(frozen=True)
class Rules:
    """What a grammar allows beyond the bare layout (None = no limit). Built by Constraint from its options."""

    text: bool = True
    blocks: tuple[str, ...] = BLOCKS
    grids: tuple[tuple[int, int], ...] | None = None   # allowed (h, w) image grids; None: any up to max_grid
    audio_frames: tuple[int, int | None] = (1, None)     # (min, max) frames of an audio block
    codec_frames: tuple[int, int | None] = (1, None)
    video_frames: tuple[int, int | None] = (1, None)
    video_audio: bool = True                            # a video may carry one audio / codec track
    timestamps: bool = True                             # every video frame carries a timestamp
    min_blocks: int = 0                                 # <eos> only after this many blocks
    max_blocks: int | None = None
    prompt: bool = False                                # also accept <bos> / <pad> at the top level


class GrammarState:
    """Where one sequence is in the grammar. Plain ints, so copying is cheap."""

    __slots__ = ("mode", "h", "w", "row", "col", "codebook", "frames", "modality", "in_video",
                 "video_frames", "video_audio", "stamp", "blocks", "position")

    def __init__(self):
        self.mode = TOP
        self.h = self.w = self.row = self.col = self.codebook = self.frames = 0
        self.modality = ""
        self.in_video = False
        self.video_frames = 0
        self.video_audio = False
        self.stamp = STAMP_START
        self.blocks = 0      # blocks completed at the top level (the limits count these)
        self.position = 0    # ids consumed

    def copy(self) -> "GrammarState":
        other = GrammarState.__new__(GrammarState)
        for name in self.__slots__:
            setattr(other, name, getattr(self, name))
        return other

    def __repr__(self) -> str:
        names = ("TOP", "IMG_H", "IMG_W", "IMG_BODY", "AUDIO", "VIDEO", "STAMP", "DONE")
        return (f"GrammarState({names[self.mode]}, grid={self.h}x{self.w}, row={self.row}, col={self.col},"
                f" codebook={self.codebook}, frames={self.frames}, blocks={self.blocks}, position={self.position})")


class Grammar:
    """The transition function and allowed-set keys of one vocabulary under one set of rules."""

    def __init__(self, vocab: Vocabulary, rules: Rules):
        self.vocab = vocab
        self.rules = rules
        if len(vocab.ranges.get("image", ())) > 1 or vocab.image_scales is not None:
            what = "multi-scale (image_scales)" if vocab.image_scales is not None else \
                f"{len(vocab.ranges['image'])}-codebook (factorised sub-token)"
            raise ValueError(f"constraints: this vocabulary's {what} image layout is not supported by the"
                             " generation grammar yet (it would mis-constrain); decode such streams with"
                             " TokenStream.decode")
        self.sp = {name: vocab.special(name) for name in vocab.special_names}
        self.sp_name = {i: name for name, i in self.sp.items()}
        self.n_text = vocab.text.size
        self.res0 = vocab.resolution_offset
        self.max_grid = vocab.max_grid
        self.end_of_row = vocab.end_of_row
        self.codebooks = {m: len(r) for m, r in vocab.ranges.items()}
        self.image_offset = vocab.ranges["image"][0].offset if "image" in vocab.ranges else -1
        self.image_size = vocab.ranges["image"][0].size if "image" in vocab.ranges else 0
        self.sides = tuple(range(1, self.max_grid + 1))
        if rules.grids is None:
            self.heights, self.widths = self.sides, {h: self.sides for h in self.sides}
        else:
            self.heights = tuple(sorted({h for h, _ in rules.grids}))
            self.widths = {h: tuple(sorted({w for hh, w in rules.grids if hh == h})) for h in self.heights}
        self._stamp_kind: np.ndarray | None = None
        self._keys: dict = {}

    # ---- the allowed set of a state, as a key of atoms ----------------------------------------------
    def allowed_key(self, s: GrammarState) -> tuple:
        mode = s.mode
        if mode == IMG_BODY:
            if self.end_of_row:
                if s.row == s.h:
                    return (("sp", "image_end"),)
                return (("code", "image", 0),) if s.col < s.w else (("sp", "end_of_row"),)
            return (("code", "image", 0),) if s.col < s.h * s.w else (("sp", "image_end"),)
        if mode == AUDIO:
            k = s.codebook
            if k:
                return (("code", s.modality, k),)
            low, high = self.rules.audio_frames if s.modality == "audio" else self.rules.codec_frames
            key = ()
            if high is None or s.frames < high:
                key += (("code", s.modality, 0),)
            if s.frames >= low:
                key += (("sp", f"{s.modality}_end"),)
            return key
        if mode == TOP:
            return self._top_key(s.blocks, s.position == 0)
        if mode == IMG_H:
            return (("res", self.heights),)
        if mode == IMG_W:
            return (("res", self.widths.get(s.h, self.sides)),)
        if mode == STAMP:
            if s.stamp == STAMP_START:
                key = (("stamp", "digit"), ("stamp", "dot_lead"))
                return key if self.rules.timestamps else key + (("sp", "image_begin"),)
            if s.stamp == STAMP_INT:
                return (("stamp", "digit"), ("stamp", "dot"), ("sp", "image_begin"))
            return (("stamp", "digit"), ("sp", "image_begin"))
        if mode == VIDEO:
            low, high = self.rules.video_frames
            key = ()
            if not s.video_audio and (high is None or s.video_frames < high):
                key += (("sp", "frame"),)
            if s.video_frames >= low:
                if self.rules.video_audio and not s.video_audio:
                    key += tuple(("sp", f"{m}_begin") for m in ("audio", "audio_codec") if m in self.codebooks)
                key += (("sp", "video_end"),)
            return key
        return (("sp", "pad"),)  # DONE

    def _top_key(self, blocks: int, first: bool) -> tuple:
        key = self._keys.get((blocks, first))
        if key is None:
            rules = self.rules
            key = (("text",),) if rules.text else ()
            if rules.prompt:
                key += (("sp", "bos"), ("sp", "pad"))
            elif first:  # a sequence may open with <bos>
                key += (("sp", "bos"),)
            if rules.max_blocks is None or blocks < rules.max_blocks:
                for block in rules.blocks:
                    key += (("sp", f"{block}_begin"),)
            if blocks >= rules.min_blocks:
                key += (("sp", "eos"),)
            self._keys[(blocks, first)] = key
        return key

    # ---- atoms -> id masks ---------------------------------------------------------------------------
    def atom_mask(self, atom: tuple, out: np.ndarray) -> None:
        """Set the ids of one atom in the bool vector `out`."""
        kind = atom[0]
        if kind == "text":
            out[: self.n_text] = True
        elif kind == "sp":
            out[self.sp[atom[1]]] = True
        elif kind == "res":
            out[self.res0 + np.asarray(atom[1], dtype=np.int64) - 1] = True
        elif kind == "code":
            r = self.vocab.ranges[atom[1]][atom[2]]
            out[r.offset: r.offset + r.size] = True
        elif kind == "stamp":
            kinds = self.stamp_kinds()
            want = {"digit": (1,), "dot_lead": (2,), "dot": (2, 3)}[atom[1]]
            out[: self.n_text] |= np.isin(kinds, want)
        else:
            raise AssertionError(atom)

    def stamp_kinds(self) -> np.ndarray:
        """Per text id: 1 digits only, 2 digits '.' digits (a digit first), 3 '.' first, 0 anything else."""
        if self._stamp_kind is None:
            kinds = np.zeros(self.n_text, dtype=np.int8)
            for i in range(self.n_text):
                try:
                    piece = self.vocab.text.decode([i])
                except Exception:  # noqa: BLE001 - an id the text tokenizer cannot decode alone is no digit
                    continue
                if piece.isascii() and piece.isdigit():
                    kinds[i] = 1
                elif _DOT_LEAD.match(piece):
                    kinds[i] = 2
                elif _DOT.match(piece) and piece != ".":
                    kinds[i] = 3
                elif piece == ".":
                    kinds[i] = 3
            if not (kinds == 1).any():
                raise ValueError("video timestamps need digit tokens, but no text id decodes to digits only")
            self._stamp_kind = kinds
        return self._stamp_kind

    # ---- transitions ---------------------------------------------------------------------------------
    def advance(self, s: GrammarState, token: int) -> None:
        """Move `s` by one id that the state allows (the caller checked that)."""
        s.position += 1
        mode = s.mode
        if mode == IMG_BODY:
            if self.end_of_row:
                if s.row == s.h:
                    return self._close_image(s)
                if s.col < s.w:
                    s.col += 1
                else:
                    s.row += 1
                    s.col = 0
                return
            if s.col < s.h * s.w:
                s.col += 1
                return
            return self._close_image(s)
        if mode == AUDIO:
            if s.codebook == 0 and token == self.sp[f"{s.modality}_end"]:
                return self._close_audio(s)
            s.codebook += 1
            if s.codebook == self.codebooks[s.modality]:
                s.codebook = 0
                s.frames += 1
            return
        if mode == TOP:
            if token < self.n_text:
                return
            name = self.sp_name.get(token)
            if name in ("bos", "pad"):
                return
            if name == "eos":
                s.mode = DONE
                return
            return self._open(s, name)
        if mode == IMG_H:
            s.h = token - self.res0 + 1
            s.mode = IMG_W
            return
        if mode == IMG_W:
            s.w = token - self.res0 + 1
            s.mode = IMG_BODY
            s.row = s.col = 0
            return
        if mode == STAMP:
            if token < self.n_text:
                if self.stamp_kinds()[token] != 1:
                    s.stamp = STAMP_FRAC
                elif s.stamp == STAMP_START:
                    s.stamp = STAMP_INT
                return
            s.mode = IMG_H  # <image_begin>
            return
        if mode == VIDEO:
            name = self.sp_name[token]
            if name == "frame":
                s.mode = STAMP
                s.stamp = STAMP_START
            elif name == "video_end":
                s.in_video = False
                s.mode = TOP
                s.blocks += 1
            else:  # an audio track
                s.mode = AUDIO
                s.modality = name[: -len("_begin")]
                s.codebook = s.frames = 0
            return
        # DONE: padding

    def _close_image(self, s: GrammarState) -> None:
        if s.in_video:
            s.mode = VIDEO
            s.video_frames += 1
        else:
            s.mode = TOP
            s.blocks += 1

    def _close_audio(self, s: GrammarState) -> None:
        if s.in_video:
            s.mode = VIDEO
            s.video_audio = True
        else:
            s.mode = TOP
            s.blocks += 1

    def _open(self, s: GrammarState, name: str) -> None:
        if name == "image_begin":
            s.mode = IMG_H
        elif name == "video_begin":
            s.mode = VIDEO
            s.in_video = True
            s.video_frames = 0
            s.video_audio = False
        else:  # audio_begin / audio_codec_begin
            s.mode = AUDIO
            s.modality = name[: -len("_begin")]
            s.codebook = s.frames = 0


def block_names(vocab: Vocabulary) -> tuple[str, ...]:
    """The block kinds a vocabulary can hold (video needs image codes)."""
    have = [m for m in ("image", "audio", "audio_codec") if m in vocab.ranges]
    if "image" in vocab.ranges:
        have.append("video")
    return tuple(have)


__all__ = ["Grammar", "GrammarState", "Rules", "BLOCKS", "block_names"]
