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

from ..paths import regular_file
from .items import CONVERSATION, INVALID, Item, modality_of, output_text
from .remote import is_url, list_input, redact
from .tables import TableColumns, datasets_folder_tables, discover_table, is_datasets_folder, is_table

MANIFEST_PATH_KEYS = ("path", "image", "audio", "video", "file")
METADATA_SUFFIXES = (".json", ".txt", ".cls")  # webdataset members stored as metadata, not tokenized


def discover(inputs, columns: TableColumns | None = None) -> list[Item]:
    """Items of every input, in order (inputs: one path or a list of them). An input that is missing or
    not a folder / regular file is refused (it is an argument error); a key given twice becomes a
    failure record for the later input (keys are unique in a run; the first one wins). Parquet / Arrow
    tables and `datasets` folders give one item per row, their columns chosen by `columns`
    (mmtok.data.tables)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    columns = TableColumns() if columns is None else columns
    items: list[Item] = []
    for entry in inputs:
        if is_url(os.fspath(entry)):
            items += discover_url(os.fspath(entry), columns)
            continue
        path = pathlib.Path(os.fspath(entry))
        if not path.exists():
            raise FileNotFoundError(f"input not found: {output_text(str(path))}")
        if path.is_dir() and is_datasets_folder(path):
            for table in datasets_folder_tables(path):
                items += discover_table(table, columns, table.relative_to(path).as_posix())
            continue
        if path.is_dir():
            items += discover_folder(path, columns)
            continue
        problem = not_regular(path)
        if problem is not None:
            raise ValueError(output_text(problem.split(": ", 1)[1]))
        if is_table(path):
            items += discover_table(path, columns)
        elif path.suffix.lower() == ".tar":
            items += discover_tar(path)
        elif path.suffix.lower() == ".jsonl":
            items += discover_jsonl(path)
        elif path.suffix.lower() == ".json":
            items += discover_json(path)
        elif modality_of(path.name) is not None:
            items.append(Item(key=path.name, source=str(path), modality=modality_of(path.name)))
        else:
            raise ValueError(f"{output_text(str(path))}: not a folder, .tar, .jsonl/.json manifest, .parquet / .arrow "
                             f"table or media file")
    return refuse_duplicate_keys(items)


def discover_url(url: str, columns: TableColumns) -> list[Item]:
    """A URL input (mmtok.data.remote): a folder's media files and tables keyed by their path relative
    to it (as for a local folder), or one table / media file. Manifests and tars are local-only."""
    folder, entries = list_input(url)
    media, tables = [], []
    for relative, full in entries:
        name = relative.rsplit("/", 1)[-1]
        if is_table(pathlib.Path(name)):
            tables.append((relative, full))
        elif modality_of(name) is not None:
            media.append(Item(key=relative, source=full, modality=modality_of(name)))
        elif not folder:
            raise ValueError(f"{redact(url)}: a URL input must be a folder, a .parquet / .arrow table or a media file")
    items = media
    for relative, full in tables:
        items += discover_table(full, columns, relative)
    return items


def refuse_duplicate_keys(items: list[Item]) -> list[Item]:
    """The documented rule for a key seen twice: the first input keeps it, every later one becomes a
    failure record naming both inputs (an index with two samples of one key would be ambiguous)."""
    first: dict[str, Item] = {}
    out = []
    for item in items:
        earlier = first.setdefault(item.key, item)
        if earlier is not item and item.error is None:
            item = Item(key=item.key, source=item.source, modality=item.modality, member=item.member,
                        error=f"ValueError: {item.where}: duplicate key {item.key!r} (first given by {earlier.where}); "
                              f"keys must be unique in a run")
        out.append(item)
    return out


def not_regular(path) -> str | None:
    """None for a readable regular file (symlinks followed); else why not, naming the path, found with
    stat() alone (mmtok.paths.regular_file): a FIFO or device is never opened."""
    try:
        regular_file(path, "media file")
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def discover_folder(root: pathlib.Path, columns: TableColumns | None = None) -> list[Item]:
    """Media files under `root` (hidden entries skipped), keyed by their path relative to it, and the
    rows of its .parquet / .arrow tables (keys `<relative path>#<row>` without a key column; the Hub's
    data/train-00000-of-00002.parquet layout). A media name that is not a regular file (FIFO, device,
    broken link) and a subfolder that cannot be listed become failure records."""
    found, tables = [], []

    def unreadable(exc: OSError) -> None:
        relative = pathlib.Path(exc.filename).relative_to(root).as_posix() + "/"
        found.append((relative, exc.filename, INVALID,
                      f"ValueError: {exc.filename}: folder cannot be listed ({exc.strerror or type(exc).__name__})"))

    for folder, dirs, files in os.walk(root, onerror=unreadable):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            modality = modality_of(name)
            if not name.startswith(".") and is_table(pathlib.Path(name)):
                tables.append(pathlib.Path(folder) / name)
            if name.startswith(".") or modality is None:
                continue
            path = pathlib.Path(folder) / name
            problem = not_regular(path)
            found.append((path.relative_to(root).as_posix(), str(path), modality, problem))
    items = [Item(key=key, source=source, modality=modality, error=error)
             for key, source, modality, error in sorted(found, key=lambda f: f[0])]
    for table in sorted(tables, key=lambda t: t.relative_to(root).as_posix()):
        items += discover_table(table, TableColumns() if columns is None else columns, table.relative_to(root).as_posix())
    return items


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
    """One input per non-empty line: a JSON object / string, or a bare path. A line that is not UTF-8
    or not JSON becomes a failure record naming the file and line."""
    items = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                items.append(Item(key=where, source=str(path), modality=INVALID,
                                  error=f"ValueError: {where}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at "
                                        f"column {exc.start + 1})"))
                continue
            if not line:
                continue
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
        records = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{output_text(str(path))}: not valid UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{output_text(str(path))}: not valid JSON ({exc})") from None
    if not isinstance(records, list):
        raise ValueError(f"{output_text(str(path))}: expected a JSON list (manifest entries or Qwen-VL conversations)")
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


MAX_SPARSE_BYTES = 1 << 30  # a sparse tar member may expand to at most this many bytes (1 GiB)
_LINK_KINDS = ((tarfile.TarInfo.issym, "a symbolic link"), (tarfile.TarInfo.islnk, "a hard link"),
               (tarfile.TarInfo.ischr, "a character device"), (tarfile.TarInfo.isblk, "a block device"),
               (tarfile.TarInfo.isfifo, "a FIFO"))


def _member_problem(member: tarfile.TarInfo, tar_bytes: int) -> str | None:
    """Why a regular member's data cannot be read from the tar (None if it can)."""
    stored = sum(n for _, n in member.sparse) if member.sparse is not None else member.size
    if member.offset_data + stored > tar_bytes:
        have = max(0, tar_bytes - member.offset_data)
        return f"member {member.name} is truncated ({have} of {stored} bytes in the file)"
    if member.sparse is not None and member.size > MAX_SPARSE_BYTES:
        return f"sparse member {member.name} expands to {member.size} bytes (more than {MAX_SPARSE_BYTES})"
    return None


def discover_tar(path: pathlib.Path) -> list[Item]:
    """Media members of a webdataset shard; .json/.txt/.cls members of the same key become metadata.

    Read header by header, so a damaged tar keeps every member before the damage: a member whose data
    runs past the end of the file, a link / device member with a media name (never followed), and
    unreadable bytes after the last good header each become a failure record. GNU sparse members are
    read through their map of stored regions. Only plain (uncompressed) tars: members are read in place.
    """
    media, metadata = [], {}
    tar_bytes = path.stat().st_size
    problem, end = None, 0
    try:
        tar = tarfile.open(path, mode="r:")
    except (tarfile.TarError, OSError) as exc:
        return [Item(key=path.name, source=str(path), modality=INVALID,
                     error=f"ValueError: {path}: not a readable (uncompressed) tar file ({exc})")]
    with tar:
        while True:
            try:
                member = tar.next()
            except (tarfile.TarError, OSError, EOFError) as exc:
                problem = f"unreadable after byte {tar.offset} ({exc})"
                break
            if member is None:
                break
            end = tar.offset
            key, suffix = _sample_key(member.name)
            modality = modality_of(member.name)
            if member.isdir():
                continue
            if not member.isfile():
                kind = next((name for test, name in _LINK_KINDS if test(member)), "not a regular file")
                if modality is not None:
                    media.append((key, member, f"{member.name} is {kind} member, not a regular file (not followed)"))
                continue
            trouble = _member_problem(member, tar_bytes)
            if suffix in METADATA_SUFFIXES and member.size < 1 << 20:
                if trouble is None:
                    text = tar.extractfile(member).read().decode("utf-8", errors="replace")
                    try:
                        value = json.loads(text) if suffix == ".json" else text.strip()
                    except json.JSONDecodeError:
                        value = text
                    metadata.setdefault(key, {})[suffix[1:]] = value
            elif modality is not None:
                media.append((key, member, trouble))
    if problem is None and end < tar_bytes:
        with open(path, "rb") as f:
            f.seek(end)
            rest = f.read(1 << 16)
        if rest.strip(b"\0"):
            problem = f"bytes after offset {end} are not a tar header or the end-of-archive marker (corrupt or truncated)"
    items = [Item(key=f"{path.name}/{member.name}", source=str(path), modality=modality_of(member.name),
                  meta=metadata.get(key), member=member.name, offset=member.offset_data, size=member.size,
                  sparse=None if member.sparse is None else [[int(o), int(n)] for o, n in member.sparse],
                  error=None if trouble is None else f"ValueError: {path}: {trouble}")
             for key, member, trouble in media]
    truncated_member = any(trouble is not None and "truncated" in trouble for _, _, trouble in media)
    if problem is not None and not truncated_member:
        items.append(Item(key=f"{path.name}#end", source=str(path), modality=INVALID,
                          error=f"ValueError: {path}: {problem}; the members before it were kept"))
    return items
