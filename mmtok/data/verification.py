"""`verify`: check an output folder against its manifest: every shard's files, sizes, hashes, index
offsets and lengths, token ranges, and the counts of samples, tokens and failures."""
from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pyarrow.parquet as pq

from .manifest import FAILURES_FILE, load_manifest
from .shards import file_sha256


def _check_file(directory: pathlib.Path, entry: dict, what: str, problems: list) -> bool:
    path = directory / entry["path"]
    if not path.is_file():
        problems.append(f"{what}: {entry['path']} is missing")
        return False
    if path.stat().st_size != entry["bytes"]:
        problems.append(f"{what}: {entry['path']} has {path.stat().st_size} bytes, the manifest says {entry['bytes']}")
        return False
    if file_sha256(path) != entry["sha256"]:
        problems.append(f"{what}: {entry['path']} sha256 differs from the manifest (corrupted)")
        return False
    return True


def _check_shard(directory: pathlib.Path, shard: dict, dtype: np.dtype, vocab: dict, problems: list) -> None:
    name = shard["name"]
    bin_ok = _check_file(directory, shard["tokens_file"], name, problems)
    index_ok = _check_file(directory, shard["index_file"], name, problems)
    record_path = directory / f"{name}.json"
    if not record_path.is_file():
        problems.append(f"{name}: {record_path.name} is missing")
    elif json.loads(record_path.read_text()).get("tokens_file") != shard["tokens_file"]:
        problems.append(f"{name}: {record_path.name} disagrees with the manifest")
    if not index_ok:
        return
    index = pq.read_table(directory / shard["index_file"]["path"])
    offsets = np.asarray(index.column("offset").to_pylist(), dtype=np.int64)
    lengths = np.asarray(index.column("length").to_pylist(), dtype=np.int64)
    if index.num_rows != shard["samples"]:
        problems.append(f"{name}: index has {index.num_rows} rows, the manifest says {shard['samples']} samples")
    expected = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else lengths
    if (lengths <= 0).any() or not np.array_equal(offsets, expected):
        problems.append(f"{name}: index offsets/lengths are not contiguous")
    if int(lengths.sum()) != shard["tokens"]:
        problems.append(f"{name}: index lengths sum to {int(lengths.sum())}, the manifest says {shard['tokens']} tokens")
    if not bin_ok:
        return
    tokens = np.fromfile(directory / shard["tokens_file"]["path"], dtype=dtype)
    if tokens.size and int(tokens.max()) >= vocab["size"]:
        problems.append(f"{name}: token id {int(tokens.max())} is outside the vocabulary (size {vocab['size']})")
    bos, eos = vocab["special_tokens"]["bos"], vocab["special_tokens"]["eos"]
    starts = tokens[offsets[offsets < tokens.size]] if tokens.size else tokens
    ends = tokens[(offsets + lengths - 1)[(offsets + lengths - 1) < tokens.size]] if tokens.size else tokens
    if (starts != bos).any() or (ends != eos).any():
        problems.append(f"{name}: a sample does not start with <bos> and end with <eos> (misaligned index)")


def verify(directory) -> list[str]:
    """Problems found (empty when the output is intact)."""
    directory = pathlib.Path(os.fspath(directory))
    try:
        manifest = load_manifest(directory)
    except (OSError, ValueError) as exc:
        return [str(exc)]
    problems: list[str] = []
    dtype = np.dtype(manifest["dtype"]).newbyteorder("<")
    for shard in manifest["shards"]:
        _check_shard(directory, shard, dtype, manifest["vocabulary"], problems)
    counts = manifest["counts"]
    for key in ("samples", "tokens"):
        total = sum(s[key] for s in manifest["shards"])
        if total != counts[key]:
            problems.append(f"manifest: shards hold {total} {key}, counts say {counts[key]}")
    if len(manifest["shards"]) != manifest["num_shards"]:
        problems.append(f"manifest lists {len(manifest['shards'])} shards of {manifest['num_shards']}")
    failures_path = directory / FAILURES_FILE
    lines = failures_path.read_text().splitlines() if failures_path.is_file() else None
    if lines is None:
        problems.append(f"{FAILURES_FILE} is missing")
    elif len(lines) != counts["failures"]:
        problems.append(f"{FAILURES_FILE} has {len(lines)} records, the manifest says {counts['failures']}")
    if counts["samples"] + counts["failures"] != manifest["inputs"]["count"]:
        problems.append(f"manifest: {counts['samples']} samples + {counts['failures']} failures != "
                        f"{manifest['inputs']['count']} inputs (inputs lost or duplicated)")
    known = {s["name"] for s in manifest["shards"]}
    for path in sorted(directory.glob("shard-*.bin")):
        if path.stem not in known:
            problems.append(f"{path.name} is not in the manifest")
    return problems
