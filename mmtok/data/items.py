"""What one input is: a sample key, where its bytes live, and which tokenizer it goes to.

Inputs are discovered once, in a deterministic order, before anything is decoded; the position of an
item in that order decides its shard, which is what makes runs resumable and partitionable.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".mp3", ".opus", ".aif", ".aiff"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v"})

IMAGE, AUDIO, VIDEO, CONVERSATION, INVALID = "image", "audio", "video", "conversation", "invalid"
MODALITIES = (IMAGE, AUDIO, VIDEO, CONVERSATION)


def output_text(text: str) -> str:
    """The one rule for names that go into an output (keys, sources, member names, error texts).

    Text is stored as UTF-8. A character UTF-8 cannot hold -- a byte of a file name that is not valid
    UTF-8 (Python reads it as U+DC80 + byte, "surrogateescape") or a lone surrogate in a JSON key -- is
    written as its backslash escape (`x_\\udcff.png`), so every input kind gets the same printable,
    deterministic name and the Parquet / JSON writers never meet an unencodable string. Reading the
    input itself always uses the original name.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def modality_of(name: str) -> str | None:
    """The modality a file name's extension implies, or None for files that are not media."""
    ext = os.path.splitext(name)[1].lower()
    if ext in IMAGE_EXTENSIONS:
        return IMAGE
    if ext in AUDIO_EXTENSIONS:
        return AUDIO
    if ext in VIDEO_EXTENSIONS:
        return VIDEO
    return None


@dataclass
class Item:
    """One input sample.

    key: unique name of the sample in the output index (relative path, manifest key, tar member...).
    source: the file to read (for a tar member: the .tar; for a conversation: the JSON file).
    member / offset / size: a webdataset member's name and the position of its bytes inside the tar.
    row / column: a Parquet / Arrow table row and the column holding its media (source: the table file).
    record: a Qwen-VL conversation record (modality "conversation").
    error: set when the input was already unusable at discovery (a malformed manifest line).
    """

    key: str
    source: str
    modality: str
    meta: dict | None = None
    member: str | None = None
    offset: int = 0
    size: int = -1
    record: dict | None = None
    error: str | None = field(default=None)
    sparse: list | None = None  # a GNU sparse tar member: [[offset, bytes], ...] of its stored data regions
    row: int | None = None      # a Parquet / Arrow table row (mmtok.data.tables): its number in the file
    column: str | None = None   # ... and the column holding its media

    def __post_init__(self):
        self.key = output_text(self.key)
        if self.error is not None:
            self.error = output_text(self.error)

    @property
    def where(self) -> str:
        """The input as written into outputs: the source path (or `tar:member`), per `output_text`."""
        if self.row is not None:
            return output_text(f"{self.source}#{self.row}")
        return output_text(self.source if self.member is None else f"{self.source}:{self.member}")

    def identity(self) -> list:
        """What must stay the same between a run and its resumption."""
        identity = [self.key, self.source, self.modality, self.member, self.offset, self.size, self.error,
                    self.record if self.record is None else json.dumps(self.record, sort_keys=True)]
        if self.sparse is not None:
            identity = identity + [self.sparse]
        return identity if self.row is None else identity + [self.row, self.column]


def items_hash(items: list[Item]) -> str:
    """sha256 over the ordered identities of the items: a changed input set changes the hash."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(json.dumps(item.identity(), separators=(",", ":")).encode("utf-8"))  # ASCII: escapes
        digest.update(b"\n")
    return digest.hexdigest()
