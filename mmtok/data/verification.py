"""`verify`: check an output folder against its manifest: every shard's files, sizes, hashes, index
offsets and lengths, token ranges, the counts of samples, tokens and failures, and the tokenizer copies.

Whatever is damaged -- a file, a shard record, the manifest itself -- is reported as a problem, never as
a traceback; only a folder that is not an `mmtok tokenize` output at all raises `NotAnOutput`.
"""
from __future__ import annotations

import json
import os
import pathlib
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .copies import copy_problems
from .manifest import FAILURES_FILE, FORMAT, FORMAT_VERSION, MANIFEST_FILE, PLAN_FILE
from .remote import RemoteOutput, is_url, local_path
from .shards import file_sha256, record_intact

_FILE_ENTRY = (("path", str), ("bytes", int), ("sha256", str))
_SHARD_ENTRY = (("name", str), ("samples", int), ("failures", int), ("tokens", int), ("tokens_file", dict),
                ("index_file", dict))
_MANIFEST = (("format", str), ("format_version", int), ("dtype", str), ("vocabulary", dict), ("counts", dict),
             ("shards", list), ("num_shards", int), ("inputs", dict), ("tokenizers", dict))


class NotAnOutput(ValueError):
    """The folder is not an mmtok tokenize output (no manifest and no run plan)."""


def _lacks(data, fields) -> list[str]:
    """Fields of `fields` that `data` lacks or holds with the wrong type."""
    if not isinstance(data, dict):
        return ["(not an object)"]
    return [name for name, kind in fields
            if not isinstance(data.get(name), kind) or (kind is int and isinstance(data.get(name), bool))]


def _check_file(directory: pathlib.Path, entry, what: str, problems: list) -> bool:
    lacking = _lacks(entry, _FILE_ENTRY)
    if lacking:
        problems.append(f"{what}: file entry lacks {', '.join(lacking)}")
        return False
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


def _check_record(directory: pathlib.Path, shard: dict, problems: list) -> None:
    name = shard["name"]
    record_path = directory / f"{name}.json"
    if not record_path.is_file():
        problems.append(f"{name}: {record_path.name} is missing")
        return
    try:
        record = json.loads(record_path.read_bytes())
    except ValueError:
        problems.append(f"{name}: {record_path.name} is not valid JSON (corrupted record)")
        return
    if not isinstance(record, dict) or record.get("tokens_file") != shard["tokens_file"] or \
            record.get("index_file") != shard["index_file"]:
        problems.append(f"{name}: {record_path.name} disagrees with the manifest")
    elif not record_intact(record):
        problems.append(f"{name}: {record_path.name} does not match its check (corrupted record)")


def _check_shard(directory: pathlib.Path, shard, dtype: np.dtype, vocab: dict, problems: list) -> None:
    lacking = _lacks(shard, _SHARD_ENTRY)
    if lacking:
        problems.append(f"manifest: a shard entry lacks {', '.join(lacking)}")
        return
    name = shard["name"]
    bin_ok = _check_file(directory, shard["tokens_file"], name, problems)
    index_ok = _check_file(directory, shard["index_file"], name, problems)
    _check_record(directory, shard, problems)
    if not index_ok:
        return
    try:
        index = pq.read_table(directory / shard["index_file"]["path"], columns=["offset", "length"])
    except (pa.ArrowException, OSError) as exc:
        problems.append(f"{name}: index {shard['index_file']['path']} is not a readable Parquet file "
                        f"({type(exc).__name__})")
        return
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
    starts = tokens[offsets[(offsets >= 0) & (offsets < tokens.size)]] if tokens.size else tokens
    last = offsets + lengths - 1
    ends = tokens[last[(last >= 0) & (last < tokens.size)]] if tokens.size else tokens
    if (starts != bos).any() or (ends != eos).any():
        problems.append(f"{name}: a sample does not start with <bos> and end with <eos> (misaligned index)")


def _load(directory: pathlib.Path) -> tuple[dict | None, list[str]]:
    path = directory / MANIFEST_FILE
    if not directory.is_dir():
        raise NotAnOutput(f"{directory} is not a folder")
    if not path.is_file():
        if (directory / PLAN_FILE).is_file():
            return None, [f"{path} not found (run `mmtok merge-manifests` once every rank has finished)"]
        raise NotAnOutput(f"{directory}: no {MANIFEST_FILE} or {PLAN_FILE}: not an mmtok tokenize output")
    try:
        manifest = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        return None, [f"{MANIFEST_FILE} is unreadable ({type(exc).__name__}: {exc})"]
    lacking = _lacks(manifest, _MANIFEST)
    if lacking:
        return None, [f"{MANIFEST_FILE} lacks {', '.join(lacking)} (damaged or not an mmtok manifest)"]
    if manifest["format"] != FORMAT or manifest["format_version"] != FORMAT_VERSION:
        return None, [f"{MANIFEST_FILE}: format {manifest['format']!r} version {manifest['format_version']!r}, "
                      f"expected {FORMAT!r} version {FORMAT_VERSION}"]
    vocab, counts = manifest["vocabulary"], manifest["counts"]
    lacking = ([f"vocabulary.{k}" for k, t in (("size", int), ("special_tokens", dict)) if not isinstance(vocab.get(k), t)] +
               [f"counts.{k}" for k, t in (("samples", int), ("tokens", int), ("failures", int))
                if not isinstance(counts.get(k), t)] +
               ([] if isinstance(manifest["inputs"].get("count"), int) else ["inputs.count"]))
    if not lacking and not all(isinstance(vocab["special_tokens"].get(k), int) for k in ("bos", "eos")):
        lacking.append("vocabulary.special_tokens.bos/eos")
    try:
        np.dtype(manifest["dtype"])
    except TypeError:
        lacking.append("dtype (not a numpy dtype)")
    if lacking:
        return None, [f"{MANIFEST_FILE} lacks {', '.join(lacking)} (damaged)"]
    return manifest, []


def verify(directory) -> list[str]:
    """Problems found (empty when the output is intact). NotAnOutput if `directory` is no output at all.
    `directory` may be an fsspec URL: the output on the store is checked, one shard at a time downloaded
    into a temporary folder (so the disk needed is one shard's, whatever the output's size)."""
    directory = local_path(os.fspath(directory))
    if is_url(directory):
        return _verify_remote(directory)
    return _verify(pathlib.Path(directory))


def _verify_remote(url: str) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="mmtok-verify-") as tmp:
        remote = RemoteOutput(url, tmp)
        try:
            folder = remote.open()
        except FileNotFoundError as exc:
            raise NotAnOutput(str(exc)) from None

        def fetch(shard: dict) -> None:
            for key in ("tokens_file", "index_file"):
                path = shard.get(key, {}).get("path") if isinstance(shard.get(key), dict) else None
                if isinstance(path, str) and path in remote.sizes:
                    remote.fetch(path, fresh=True)

        def drop(shard: dict) -> None:
            for key in ("tokens_file", "index_file"):
                if isinstance(shard.get(key), dict) and isinstance(shard[key].get("path"), str):
                    remote.drop(shard[key]["path"])

        names = [name for name in remote.sizes if "/" not in name and name.startswith("shard-")
                 and name.endswith(".bin")]
        return _verify(folder, before=fetch, after=drop, token_files=names)


def _verify(directory: pathlib.Path, *, before=None, after=None, token_files=None) -> list[str]:
    """verify() on a local folder; `before` / `after` are called around each shard's checks (a store's
    shard files fetched and dropped), `token_files` lists the output's shard-*.bin names (default: globbed)."""
    manifest, problems = _load(directory)
    if manifest is None:
        return problems
    dtype = np.dtype(manifest["dtype"]).newbyteorder("<")
    for shard in manifest["shards"]:
        if before is not None and isinstance(shard, dict):
            before(shard)
        try:
            _check_shard(directory, shard, dtype, manifest["vocabulary"], problems)
        finally:
            if after is not None and isinstance(shard, dict):
                after(shard)
    counts = manifest["counts"]
    shards = [s for s in manifest["shards"] if not _lacks(s, _SHARD_ENTRY)]
    for key in ("samples", "tokens"):
        total = sum(s[key] for s in shards)
        if total != counts[key]:
            problems.append(f"manifest: shards hold {total} {key}, counts say {counts[key]}")
    if len(manifest["shards"]) != manifest["num_shards"]:
        problems.append(f"manifest lists {len(manifest['shards'])} shards of {manifest['num_shards']}")
    failures_path = directory / FAILURES_FILE
    lines = failures_path.read_bytes().splitlines() if failures_path.is_file() else None
    if lines is None:
        problems.append(f"{FAILURES_FILE} is missing")
    elif len(lines) != counts["failures"]:
        problems.append(f"{FAILURES_FILE} has {len(lines)} records, the manifest says {counts['failures']}")
    if counts["samples"] + counts["failures"] != manifest["inputs"]["count"]:
        problems.append(f"manifest: {counts['samples']} samples + {counts['failures']} failures != "
                        f"{manifest['inputs']['count']} inputs (inputs lost or duplicated)")
    problems += copy_problems(directory, manifest)
    known = {s["name"] for s in shards}
    names = sorted(p.name for p in directory.glob("shard-*.bin")) if token_files is None else sorted(token_files)
    for name in names:
        if name[:-len(".bin")] not in known:
            problems.append(f"{name} is not in the manifest")
    return problems
