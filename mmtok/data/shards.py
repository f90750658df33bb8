"""Shard files: a flat token file, a Parquet index and a small JSON record, written crash-safely.

`shard-00012.bin` holds the token ids of every sample of shard 12, back to back (uint16 when the
vocabulary fits, else int32, little-endian); `shard-00012.parquet` has one row per sample (key, source,
modality, offset, length, grid, timestamps, meta); `shard-00012.json` lists the shard's failures and the
size and sha256 of both files. Each file is written under a temporary name and renamed when complete,
the JSON record last: a shard exists exactly when its record exists and the sizes match it.
"""
from __future__ import annotations

import hashlib
import json
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .assembler import SampleRecord
from .decoding import Failure
from .outdir import commit, remove, stale_temporaries, temporary, write_atomic

INDEX_SCHEMA = pa.schema([
    ("key", pa.string()), ("source", pa.string()), ("modality", pa.string()),
    ("offset", pa.int64()), ("length", pa.int64()),
    ("grid", pa.list_(pa.int32())), ("timestamps", pa.list_(pa.float64())), ("meta", pa.string()),
])


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<i4")


def file_sha256(path: pathlib.Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks (shard files can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def failure_record(failure: Failure) -> dict:
    item = failure.work.item
    return {"key": item.key, "source": item.where, "modality": item.modality, "shard": failure.work.shard,
            "slot": failure.work.slot, "error": failure.error}


def write_shard(out_dir: pathlib.Path, index: int, results: list, dtype: np.dtype, *, kill_hook=None) -> dict:
    """Write shard `index` from its results in slot order (SampleRecord or Failure); returns its record."""
    name = shard_name(index)
    samples = [r for r in results if isinstance(r, SampleRecord)]
    failures = [failure_record(r) for r in results if isinstance(r, Failure)]
    lengths = np.array([len(s.ids) for s in samples], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(samples) else lengths
    tokens = np.concatenate([s.ids for s in samples]) if samples else np.zeros(0, dtype=np.int64)
    if tokens.size and (tokens.min() < 0 or tokens.max() > np.iinfo(dtype).max):
        raise ValueError(f"{name}: token ids outside the range of {dtype}")
    record_path = out_dir / f"{name}.json"
    if record_path.exists():  # rewriting (retry): the shard is incomplete until the new record lands
        record_path.unlink()

    bin_path = out_dir / f"{name}.bin"
    write_atomic(bin_path, tokens.astype(dtype).tobytes())
    if kill_hook is not None:
        kill_hook("write", index)

    index_path = out_dir / f"{name}.parquet"
    index_tmp = temporary(index_path)
    table = pa.table({
        "key": [s.key for s in samples], "source": [s.source for s in samples],
        "modality": [s.modality for s in samples], "offset": offsets, "length": lengths,
        "grid": [s.grid for s in samples], "timestamps": [s.timestamps for s in samples],
        "meta": [None if s.meta is None else json.dumps(s.meta, sort_keys=True) for s in samples],
    }, schema=INDEX_SCHEMA)
    try:
        pq.write_table(table, index_tmp, compression="zstd")
        commit(index_tmp, index_path)
    except BaseException:
        index_tmp.unlink(missing_ok=True)
        raise

    record = {
        "name": name, "shard": index, "inputs": len(results), "samples": len(samples), "failures": failures,
        "tokens": int(tokens.size), "dtype": dtype.name,
        "tokens_file": {"path": bin_path.name, "bytes": bin_path.stat().st_size, "sha256": file_sha256(bin_path)},
        "index_file": {"path": index_path.name, "bytes": index_path.stat().st_size, "sha256": file_sha256(index_path)},
        "by_modality": _by_modality(samples, failures),
    }
    record["check"] = record_check(record)
    write_atomic(record_path, json.dumps(record, indent=1, sort_keys=True))
    return record


def record_check(record: dict) -> str:
    """sha256 of a shard record's canonical JSON without its own "check" field: a record with a flipped
    bit that still parses is caught too."""
    rest = {k: v for k, v in record.items() if k != "check"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def record_intact(record: dict) -> bool:
    """False when the record's check does not match its content (records written before the check: True)."""
    return "check" not in record or record["check"] == record_check(record)


def _by_modality(samples: list[SampleRecord], failures: list[dict]) -> dict:
    counts: dict = {}
    for s in samples:
        entry = counts.setdefault(s.modality, {"samples": 0, "failures": 0, "tokens": 0})
        entry["samples"] += 1
        entry["tokens"] += int(len(s.ids))
    for f in failures:
        counts.setdefault(f["modality"], {"samples": 0, "failures": 0, "tokens": 0})["failures"] += 1
    return {k: counts[k] for k in sorted(counts)}


RECORD_KEYS = ("name", "shard", "inputs", "samples", "failures", "tokens", "dtype", "tokens_file", "index_file",
               "by_modality")


def parse_record(name: str, data: bytes) -> tuple[dict | None, str | None]:
    """(record, None) when a shard record's bytes parse, have every field, match their own check digest and
    name both files well; else (None, why not). The files themselves are not looked at."""
    try:
        record = json.loads(data)
    except ValueError as exc:
        return None, f"{name}: record {name}.json unreadable ({type(exc).__name__})"
    if not isinstance(record, dict) or any(k not in record for k in RECORD_KEYS):
        return None, f"{name}: record {name}.json lacks fields"
    if not record_intact(record):
        return None, f"{name}: record {name}.json does not match its check (corrupt)"
    for key in ("tokens_file", "index_file"):
        entry = record[key]
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), t) for k, t in
                                                  (("path", str), ("bytes", int), ("sha256", str))):
            return None, f"{name}: record {name}.json has a malformed {key}"
    return record, None


def record_files(record: dict) -> list[dict]:
    """The record's file entries ({"path", "bytes", "sha256"}): the token file, then the index."""
    return [record["tokens_file"], record["index_file"]]


def record_problem(out_dir: pathlib.Path, index: int, *, digests: bool = True) -> tuple[dict | None, str | None]:
    """(record, None) for a complete shard: its record parses, has every field, and both files have the
    recorded size and (with `digests`) sha256; else (None, why not). A shard that fails this is redone."""
    name = shard_name(index)
    path = out_dir / f"{name}.json"
    if not path.exists():
        return None, f"{name}: no record"
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, f"{name}: record {path.name} unreadable ({type(exc).__name__})"
    record, why = parse_record(name, data)
    if record is None:
        return None, why
    for entry in record_files(record):
        file = out_dir / entry["path"]
        try:
            if file.stat().st_size != entry["bytes"]:
                return None, f"{name}: {entry['path']} has the wrong size"
            if digests and file_sha256(file) != entry["sha256"]:
                return None, f"{name}: {entry['path']} sha256 differs from its record (corrupt)"
        except OSError:
            return None, f"{name}: {entry['path']} is missing"
    return record, None


def read_record(out_dir: pathlib.Path, index: int, *, digests: bool = True) -> dict | None:
    """The shard's record if the shard is complete (see record_problem), else None."""
    return record_problem(out_dir, index, digests=digests)[0]


def remove_leftovers(out_dir: pathlib.Path, index: int) -> None:
    """Delete temporary files of a shard that a killed run left behind (their process is gone)."""
    for path in stale_temporaries(out_dir, f"{shard_name(index)}.*"):
        remove(path)


def read_samples(out_dir: pathlib.Path, record: dict) -> list[SampleRecord]:
    """The samples of a complete shard, back as SampleRecords (used to keep them when retrying failures)."""
    table = pq.read_table(out_dir / record["index_file"]["path"]).to_pylist()
    tokens = np.fromfile(out_dir / record["tokens_file"]["path"], dtype=np.dtype(record["dtype"]).newbyteorder("<"))
    return [SampleRecord(row["key"], row["source"], row["modality"],
                         tokens[row["offset"]: row["offset"] + row["length"]].astype(np.int64), row["grid"],
                         row["timestamps"], None if row["meta"] is None else json.loads(row["meta"]))
            for row in table]
