"""Qwen-VL conversation files -> token streams.

The file is a JSON list of `{"id": ..., "conversations": [{"from": role, "value": text}, ...]}`. A value
names images as `Picture N: <img>path</img>`: the `<img>..</img>` part becomes an Image segment tokenized
in place (relative paths resolve against the JSON file's folder), "Picture N: " stays text. Grounding
markup, `<ref>..</ref><box>(x1,y1),(x2,y2)</box>` with coordinates in [0, 1000), stays text (checked).
Each turn is wrapped as ChatML text (`<|im_start|>role\\n ... <|im_end|>\\n`), as Qwen-VL's chat format is.
"""
from __future__ import annotations

import json
import pathlib
import re

from .segments import Image, Text

IMAGE_TAG = re.compile(r"<img>(.*?)</img>", re.DOTALL)
BOX_TAG = re.compile(r"<box>(.*?)</box>", re.DOTALL)
BOX_BODY = re.compile(r"\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*,\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)")
TURN_PREFIX = "<|im_start|>{role}\n"
TURN_SUFFIX = "<|im_end|>\n"


def load_qwen_vl(path) -> list[dict]:
    """Read and validate the file's structure; errors name the file and the sample."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Qwen-VL conversation file not found: {path}")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of samples, got {type(records).__name__}")
    for n, record in enumerate(records):
        where = f"{path}: sample {n}"
        if not isinstance(record, dict) or "conversations" not in record:
            raise ValueError(f"{where} has no 'conversations' list")
        if not isinstance(record["conversations"], list):
            raise ValueError(f"{where}: 'conversations' must be a list")
        for turn in record["conversations"]:
            if not isinstance(turn, dict) or not isinstance(turn.get("from"), str) or \
                    not isinstance(turn.get("value"), str):
                raise ValueError(f"{where} (id {record.get('id')!r}): each turn needs string 'from' and 'value'")
    return records


def conversation_segments(record: dict, base_dir, *, image_size: int | None = None,
                          image_mode: str = "center_crop", turn_prefix: str = TURN_PREFIX,
                          turn_suffix: str = TURN_SUFFIX, source: str = "conversation") -> list:
    """One sample -> [Text, Image(source=path), Text, ...] (images not yet tokenized)."""
    base_dir = pathlib.Path(base_dir)
    where = f"{source} (id {record.get('id')!r})"
    segments: list = []
    text = ""
    for turn in record["conversations"]:
        value = turn["value"]
        _check_boxes(value, where)
        text += turn_prefix.format(role=turn["from"])
        cursor = 0
        for match in IMAGE_TAG.finditer(value):
            text += value[cursor: match.start()]
            segments += [Text(text)] if text else []
            text = ""
            segments.append(Image(source=_resolve(match.group(1).strip(), base_dir, where),
                                  size=image_size, mode=image_mode))
            cursor = match.end()
        text += value[cursor:] + turn_suffix
    if text:
        segments.append(Text(text))
    return segments


def encode_qwen_vl_file(stream, path, *, image_size: int | None = None, image_mode: str = "center_crop",
                        turn_prefix: str = TURN_PREFIX, turn_suffix: str = TURN_SUFFIX):
    """-> [(sample id, TokenIds)]; each referenced image is tokenized once per file."""
    path = pathlib.Path(path)
    cache: dict[tuple, object] = {}
    out = []
    for n, record in enumerate(load_qwen_vl(path)):
        segments = conversation_segments(record, path.parent, image_size=image_size, image_mode=image_mode,
                                         turn_prefix=turn_prefix, turn_suffix=turn_suffix, source=str(path))
        for segment in segments:
            if isinstance(segment, Image):
                key = (segment.source, image_size, image_mode)
                if key not in cache:
                    stream._tokenize_sources(segment)
                    cache[key] = segment.codes
                segment.codes = cache[key]
        out.append((record.get("id", n), stream.encode(segments)))
    return out


def _resolve(reference: str, base_dir: pathlib.Path, where: str) -> pathlib.Path:
    if re.match(r"^[a-z][a-z0-9+.-]*://", reference, re.IGNORECASE):
        raise ValueError(f"{where}: image {reference!r} is a URL; download it and reference the local file")
    image_path = pathlib.Path(reference).expanduser()
    if not image_path.is_absolute():
        image_path = base_dir / image_path
    if not image_path.is_file():
        raise FileNotFoundError(f"{where}: image not found: {image_path}")
    return image_path


def _check_boxes(value: str, where: str) -> None:
    for match in BOX_TAG.finditer(value):
        body = BOX_BODY.fullmatch(match.group(1).strip())
        if body is None:
            raise ValueError(f"{where}: malformed box {match.group(0)!r}, expected <box>(x1,y1),(x2,y2)</box>")
        coordinates = [int(v) for v in body.groups()]
        if any(not 0 <= v < 1000 for v in coordinates):
            raise ValueError(f"{where}: box {match.group(0)!r} has coordinates outside [0, 1000)")
