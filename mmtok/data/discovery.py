"""Find the inputs: a folder (media files by extension, recursively), a JSONL / JSON manifest (paths with
optional metadata, or a Qwen-VL conversation file), or webdataset `.tar` shards.

The result is a list of `Item`s in a deterministic order (sorted paths, manifest order, tar order). A
malformed manifest line does not stop discovery: it becomes an item with `error` set, so it ends up in
failures.jsonl like any other bad input.
"""
from __future__ import annotations

import json
import os
import pathlib
import tarfile

from .items import CONVERSATION, INVALID, Item, modality_of

MANIFEST_PATH_KEYS = ("path", "image", "audio", "video", "file")
METADATA_SUFFIXES = (".json", ".txt", ".cls")  # webdataset members stored as metadata, not tokenized


def discover(inputs) -> list[Item]:
    """Items of every input, in order (inputs: one path or a list of them)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    items: list[Item] = []
    for entry in inputs:
        path = pathlib.Path(os.fspath(entry))
        if not path.exists():
            raise FileNotFoundError(f"input not found: {path}")
        if path.is_dir():
            items += discover_folder(path)
        elif path.suffix.lower() == ".tar":
            items += discover_tar(path)
        elif path.suffix.lower() == ".jsonl":
            items += discover_jsonl(path)
        elif path.suffix.lower() == ".json":
            items += discover_json(path)
        elif modality_of(path.name) is not None:
            items.append(Item(key=path.name, source=str(path), modality=modality_of(path.name)))
        else:
            raise ValueError(f"{path}: not a folder, .tar, .jsonl/.json manifest or media file")
    return items


def discover_folder(root: pathlib.Path) -> list[Item]:
    """Media files under `root` (hidden entries skipped), keyed by their path relative to it."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            modality = modality_of(name)
            if name.startswith(".") or modality is None:
                continue
            path = pathlib.Path(folder) / name
            found.append((path.relative_to(root).as_posix(), str(path), modality))
    return [Item(key=key, source=source, modality=modality) for key, source, modality in sorted(found)]


def _entry_item(entry, base: pathlib.Path, where: str) -> Item:
    """A manifest entry (a path string, or an object naming a path plus metadata) -> Item."""
    if isinstance(entry, str):
        entry = {"path": entry}
    if not isinstance(entry, dict):
        return Item(key=where, source=where, modality=INVALID,
                    error=f"ValueError: {where}: expected a path or an object, got {type(entry).__name__}")
    field = next((k for k in MANIFEST_PATH_KEYS if isinstance(entry.get(k), str)), None)
    if field is None:
        return Item(key=str(entry.get("key", where)), source=where, modality=INVALID,
                    error=f"ValueError: {where}: no path (one of {list(MANIFEST_PATH_KEYS)})")
    path = pathlib.Path(entry[field]).expanduser()
    if not path.is_absolute():
        path = base / path
    modality = field if field in ("image", "audio", "video") else (entry.get("modality") or modality_of(path.name))
    meta = {k: v for k, v in entry.items() if k not in (field, "key", "modality")} or None
    key = str(entry.get("key", entry[field]))
    if modality not in ("image", "audio", "video"):
        return Item(key=key, source=str(path), modality=INVALID, meta=meta,
                    error=f"ValueError: {where}: cannot tell the modality of {path.name} (give \"modality\")")
    return Item(key=key, source=str(path), modality=modality, meta=meta)


def discover_jsonl(path: pathlib.Path) -> list[Item]:
    """One input per non-empty line: a JSON object / string, or a bare path."""
    items = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            where = f"{path}:{number}"
            if line[0] in "{[\"":
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError as exc:
                    items.append(Item(key=where, source=str(path), modality=INVALID,
                                      error=f"ValueError: {where}: not valid JSON ({exc})"))
                    continue
            else:
                entry = line
            items.append(_entry_item(entry, path.parent, where))
    return items


def discover_json(path: pathlib.Path) -> list[Item]:
    """A JSON list: Qwen-VL conversation records (one sample each) or manifest entries."""
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list (manifest entries or Qwen-VL conversations)")
    items = []
    for n, record in enumerate(records):
        where = f"{path}[{n}]"
        if isinstance(record, dict) and "conversations" in record:
            key = f"{path.name}#{record.get('id', n)}"
            items.append(Item(key=key, source=str(path), modality=CONVERSATION, record=record,
                              meta={"id": record.get("id", n)}))
        else:
            items.append(_entry_item(record, path.parent, where))
    return items


def _sample_key(member: str) -> tuple[str, str]:
    """webdataset convention: the key is the path up to the first dot of the file name."""
    folder, _, name = member.rpartition("/")
    stem, _, suffix = name.partition(".")
    return (f"{folder}/{stem}" if folder else stem), "." + suffix.lower()


def discover_tar(path: pathlib.Path) -> list[Item]:
    """Media members of a webdataset shard; .json/.txt/.cls members of the same key become metadata."""
    media, metadata = [], {}
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, suffix = _sample_key(member.name)
                if suffix in METADATA_SUFFIXES and member.size < 1 << 20:
                    text = tar.extractfile(member).read().decode("utf-8", errors="replace")
                    try:
                        value = json.loads(text) if suffix == ".json" else text.strip()
                    except json.JSONDecodeError:
                        value = text
                    metadata.setdefault(key, {})[suffix[1:]] = value
                elif modality_of(member.name) is not None:
                    media.append((key, member))
    except (tarfile.TarError, OSError) as exc:
        return [Item(key=path.name, source=str(path), modality=INVALID,
                     error=f"ValueError: {path}: not a readable tar file ({exc})")]
    return [Item(key=f"{path.name}/{member.name}", source=str(path), modality=modality_of(member.name),
                 meta=metadata.get(key), member=member.name, offset=member.offset_data, size=member.size)
            for key, member in media]
