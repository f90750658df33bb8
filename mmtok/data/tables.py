"""Tabular inputs: Parquet files (Hub dataset repositories' `data/train-00000-of-00002.parquet` layout),
`datasets` `save_to_disk` folders (Arrow IPC stream files listed in state.json) and plain Arrow files.

Every row is one item. Its media is one column: the `datasets` Image / Audio struct (`{"bytes", "path"}`)
or raw binary; every scalar column (text, caption, numbers, booleans) goes into the item's metadata.
Discovery reads only the key and metadata columns, a record batch at a time; the media bytes are read in
the decoding workers, one row group (Parquet) or one memory-mapped record batch (Arrow) at a time, so no
file is ever held in memory whole. Which column is the media / key is `TableColumns`, detected from the
schema when not given (docs/data.md, "Parquet and datasets inputs").
"""
from __future__ import annotations

import json
import os
import pathlib
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from .items import AUDIO, IMAGE, INVALID, Item, output_text

TABLE_SUFFIXES = (".parquet", ".arrow")
KEY_NAMES = ("__key__", "key", "id")        # detected key columns, in this order
AUDIO_WORDS = ("audio", "speech", "wav", "sound", "voice")
BATCH_ROWS = 4096                           # rows per record batch read at discovery


class ColumnError(ValueError):
    """A table's columns do not fit the options (missing / ambiguous column): refused before work."""


@dataclass(frozen=True)
class TableColumns:
    """--image-column / --audio-column / --key-column (None: detected from each table's schema)."""

    image: str | None = None
    audio: str | None = None
    key: str | None = None


def is_table(path: pathlib.Path) -> bool:
    return path.suffix.lower() in TABLE_SUFFIXES


def is_datasets_folder(path: pathlib.Path) -> bool:
    """A `datasets` save_to_disk folder: a Dataset (state.json + dataset_info.json) or a DatasetDict."""
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def datasets_folder_tables(folder: pathlib.Path) -> list[pathlib.Path]:
    """The Arrow files of a save_to_disk folder in the dataset's own order (state.json's _data_files;
    a DatasetDict: its splits in dataset_dict.json order)."""
    if (folder / "dataset_dict.json").is_file():
        splits = _json(folder / "dataset_dict.json").get("splits")
        if not isinstance(splits, list):
            raise ValueError(f"{output_text(str(folder))}/dataset_dict.json: no \"splits\" list")
        return [table for split in splits for table in datasets_folder_tables(folder / split)]
    files = _json(folder / "state.json").get("_data_files")
    if not isinstance(files, list) or not all(isinstance(f, dict) and isinstance(f.get("filename"), str) for f in files):
        raise ValueError(f"{output_text(str(folder))}/state.json: no \"_data_files\" list of filenames")
    return [folder / f["filename"] for f in files]


def _json(path: pathlib.Path) -> dict:
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{output_text(str(path))}: unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{output_text(str(path))}: expected a JSON object")
    return value


# ---- opening a table -------------------------------------------------------------------------------------
def _source(path: str):
    """What pyarrow reads: the local path, or a lazily read fsspec file for a URL (mmtok.data.remote)."""
    from .remote import is_url, open_url

    return open_url(path) if is_url(path) else path


def _parquet(path: str) -> pq.ParquetFile:
    return pq.ParquetFile(_source(path))


def _open_arrow(path: str):
    """An Arrow reader (memory-mapped when local): the IPC stream format (datasets' save_to_disk) or the
    file format."""
    from .remote import is_url, open_url

    def source():
        return pa.PythonFile(open_url(path), mode="r") if is_url(path) else pa.memory_map(path, "r")
    try:
        return pa.ipc.open_stream(source())
    except pa.ArrowInvalid:
        return pa.ipc.open_file(source())


def _arrow_batches(path: str):
    reader = _open_arrow(path)
    if isinstance(reader, pa.ipc.RecordBatchFileReader):
        for n in range(reader.num_record_batches):
            yield reader.get_batch(n)
    else:
        yield from reader


def table_schema(path: str) -> pa.Schema:
    if path.lower().endswith(".parquet"):
        return _parquet(path).schema_arrow
    return _open_arrow(path).schema


def table_batches(path: str, columns: list[str]):
    """Record batches of `columns` only (Parquet: only those columns are read; Arrow: memory-mapped)."""
    if path.lower().endswith(".parquet"):
        yield from _parquet(path).iter_batches(batch_size=BATCH_ROWS, columns=columns)
        return
    for batch in _arrow_batches(path):
        yield batch.select(columns)


# ---- which column is what ----------------------------------------------------------------------------------
def _features(schema: pa.Schema) -> dict:
    """`datasets` feature types by column name, from the schema's "huggingface" metadata ({} if none)."""
    raw = (schema.metadata or {}).get(b"huggingface")
    try:
        features = json.loads(raw)["info"]["features"] if raw else {}
    except (ValueError, KeyError, TypeError):
        return {}
    return {name: f.get("_type") for name, f in features.items() if isinstance(f, dict)}


def media_struct(field: pa.Field) -> bool:
    t = field.type
    if not pa.types.is_struct(t):
        return False
    names = {t.field(i).name: t.field(i).type for i in range(t.num_fields)}
    return "bytes" in names and (pa.types.is_binary(names["bytes"]) or pa.types.is_large_binary(names["bytes"]))


def _binary(field: pa.Field) -> bool:
    return pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type)


def _scalar(field: pa.Field) -> bool:
    t = field.type
    return (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t)
            or pa.types.is_floating(t) or pa.types.is_boolean(t))


@dataclass(frozen=True)
class Layout:
    """What a table's columns are: the media column and its modality, the key column, the metadata."""

    media: str
    modality: str
    key: str | None
    meta: tuple[str, ...]


def layout_of(path: str, schema: pa.Schema, columns: TableColumns) -> Layout:
    """The media / key / metadata columns of one table, from the options or detected; a missing or
    ambiguous column is a ColumnError naming the file and the columns it has."""
    where = output_text(path)
    names = schema.names
    present = ", ".join(names) or "none"
    for option, name in (("--image-column", columns.image), ("--audio-column", columns.audio),
                         ("--key-column", columns.key)):
        if name is not None and name not in names:
            raise ColumnError(f"{where}: no column {name!r} ({option}); its columns: {present}")
    if columns.image is not None and columns.audio is not None:
        raise ColumnError("give one media column per run: --image-column or --audio-column, not both")
    given = columns.image or columns.audio
    if given is not None:
        field = schema.field(given)
        if not (media_struct(field) or _binary(field)):
            raise ColumnError(f"{where}: column {given!r} is {field.type}, not binary or a struct with \"bytes\"")
        media, modality = given, IMAGE if columns.image is not None else AUDIO
    else:
        media, modality = _detect_media(where, schema, present)
    key = columns.key
    if key is None:
        key = next((n for n in KEY_NAMES if n in names and n != media and _scalar(schema.field(n))), None)
    meta = tuple(n for n in names if n not in (media, key) and _scalar(schema.field(n)))
    return Layout(media, modality, key, meta)


def _detect_media(where: str, schema: pa.Schema, present: str) -> tuple[str, str]:
    features = _features(schema)
    typed = [(n, IMAGE if features[n] == "Image" else AUDIO) for n in schema.names
             if features.get(n) in ("Image", "Audio")]
    candidates = typed or [(n, AUDIO if any(w in n.lower() for w in AUDIO_WORDS) else IMAGE)
                           for n in schema.names if media_struct(schema.field(n)) or _binary(schema.field(n))]
    if not candidates:
        raise ColumnError(f"{where}: no image or audio column (a datasets Image / Audio struct or a binary column); "
                          f"its columns: {present}; name one with --image-column / --audio-column")
    if len(candidates) > 1:
        named = ", ".join(f"{n} ({m})" for n, m in candidates)
        raise ColumnError(f"{where}: several media columns could be the input: {named}; choose one with "
                          f"--image-column or --audio-column")
    return candidates[0]


# ---- discovery ----------------------------------------------------------------------------------------------
def discover_table(path, columns: TableColumns, name: str | None = None) -> list[Item]:
    """One item per row of a Parquet / Arrow file; `name` (default: the file name) prefixes row keys
    `<name>#<row>` when there is no key column. An unreadable file is one failure record (like a bad
    tar); a row with a null key is a failure record; a missing / ambiguous column raises ColumnError."""
    source = path if isinstance(path, str) else str(path)
    name = source.rsplit("/", 1)[-1] if name is None else name
    try:
        schema = table_schema(source)
    except (pa.ArrowException, OSError) as exc:
        return [Item(key=name, source=source, modality=INVALID,
                     error=f"ValueError: {source}: not a readable {_kind(source)} file ({exc})")]
    layout = layout_of(source, schema, columns)
    wanted = ([layout.key] if layout.key else []) + list(layout.meta)
    items, row = [], 0
    try:
        if not wanted:
            rows = _parquet(source).metadata.num_rows if source.lower().endswith(".parquet") else sum(
                b.num_rows for b in _arrow_batches(source))
            return [_row_item(source, name, r, layout, None, None) for r in range(rows)]
        for batch in table_batches(source, wanted):
            values = batch.to_pydict()
            for n in range(batch.num_rows):
                key = values[layout.key][n] if layout.key else None
                meta = {c: values[c][n] for c in layout.meta if values[c][n] is not None} or None
                items.append(_row_item(source, name, row, layout, key, meta))
                row += 1
    except (pa.ArrowException, OSError) as exc:
        items.append(Item(key=f"{name}#{row}", source=source, modality=INVALID,
                          error=f"ValueError: {source}: unreadable from row {row} ({exc}); the rows before it were kept"))
    return items


def _row_item(source, name, row, layout: Layout, key, meta) -> Item:
    error = None
    if layout.key is not None and key is None:
        error = f"ValueError: {source}#{row}: null key (column {layout.key!r})"
    return Item(key=f"{name}#{row}" if key is None else str(key), source=source, modality=layout.modality,
                meta=meta, row=row, column=layout.media, error=error)


def _kind(source: str) -> str:
    return "Parquet" if source.lower().endswith(".parquet") else "Arrow"


# ---- reading one row's media (in the decoding workers) ------------------------------------------------------
class RowReader:
    """A row's media value, reading one Parquet row group / Arrow record batch of the media column at a
    time and keeping the last one (items of a shard are consecutive rows, so each block is read once)."""

    def __init__(self):
        self._file: tuple | None = None    # (source, column) -> (block starts, opener)
        self._starts: list[int] = []
        self._block: tuple | None = None   # (source, column, block) -> column values
        self._values = None

    def _index(self, source: str, column: str):
        if self._file != (source, column):
            if source.lower().endswith(".parquet"):
                meta = _parquet(source).metadata
                sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
            else:
                sizes = [b.num_rows for b in _arrow_batches(source)]
            starts, total = [], 0
            for size in sizes:
                starts.append(total)
                total += size
            self._file, self._starts, self._total = (source, column), starts, total

    def value(self, source: str, column: str, row: int):
        import bisect

        self._index(source, column)
        if not 0 <= row < self._total:
            raise ValueError(f"{output_text(source)}#{row}: the file has {self._total} rows (changed since discovery?)")
        block = bisect.bisect_right(self._starts, row) - 1
        if self._block != (source, column, block):
            self._values = None
            if source.lower().endswith(".parquet"):
                table = _parquet(source).read_row_group(block, columns=[column])
                self._values = table.column(column)
            else:
                batch = next(b for n, b in enumerate(_arrow_batches(source)) if n == block)
                self._values = batch.column(column)
            self._block = (source, column, block)
        return self._values[row - self._starts[block]].as_py()


_READER = RowReader()


def row_media(item: Item) -> bytes | str:
    """The bytes of a row's media, or the local path a datasets struct points to when it has no bytes."""
    where = item.where
    try:
        value = _READER.value(item.source, item.column, item.row)
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{where}: row unreadable ({exc})") from None
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data:
            return bytes(data)
        if path:
            path = path if os.path.isabs(path) else os.path.join(os.path.dirname(item.source), path)
            return path
        raise ValueError(f"{where}: column {item.column!r} has neither bytes nor a path")
    if not value:
        raise ValueError(f"{where}: column {item.column!r} is null or empty")
    return bytes(value)
