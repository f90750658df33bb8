"""The run plan (`run.json`) and the final `manifest.json` + `failures.jsonl`.

The plan fixes everything that decides the output: the tokenizers' configs and hashes, the vocabulary,
the options, the ordered inputs' hash and the shard size. A resumed run must present the same plan.
The manifest is the plan plus the shard records; it is built only from files on disk, so any process
(the last rank to finish, or `mmtok merge-manifests`) builds the same one, byte for byte.
"""
from __future__ import annotations

import json
import os
import pathlib

from .copies import folder_digests
from .outdir import write_atomic, writing
from .shards import read_record, record_problem

PLAN_FILE, MANIFEST_FILE, FAILURES_FILE = "run.json", "manifest.json", "failures.jsonl"
FORMAT = "mmtok.token_shards"
FORMAT_VERSION = 1


def num_shards(num_items: int, shard_size: int) -> int:
    return (num_items + shard_size - 1) // shard_size


def shard_slice(index: int, shard_size: int, num_items: int) -> range:
    """Items (positions in discovery order) of shard `index`: a fixed block, whatever fails."""
    return range(index * shard_size, min(num_items, (index + 1) * shard_size))


def shards_of_rank(total: int, rank: int, world_size: int) -> list[int]:
    """Shards a rank writes: every world_size-th, starting at its rank (disjoint, deterministic)."""
    return list(range(rank, total, world_size))


def _write_atomic(path: pathlib.Path, text: str) -> None:
    with writing(path):
        write_atomic(path, text)


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def differences(old, new, where: str = "") -> list[str]:
    """`field: old -> new` for every leaf that differs between two plans (dotted paths, lists by index)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{where}.{key}" if where else str(key)
            if key not in old:
                out.append(f"{path}: (absent) -> {_short(new[key])}")
            elif key not in new:
                out.append(f"{path}: {_short(old[key])} -> (absent)")
            else:
                out += differences(old[key], new[key], path)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for n, (a, b) in enumerate(zip(old, new)) for d in differences(a, b, f"{where}[{n}]")]
    return [] if old == new else [f"{where}: {_short(old)} -> {_short(new)}"]


def dumps(data) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def check_or_write_plan(out_dir: pathlib.Path, plan: dict) -> None:
    """Write run.json, or refuse to continue a run that was started with a different plan."""
    path = out_dir / PLAN_FILE
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = None
        if old is not None:
            if old != plan:
                differ = differences(old, plan)
                shown = "; ".join(differ[:6]) + (f"; and {len(differ) - 6} more" if len(differ) > 6 else "")
                raise ValueError(f"{out_dir} holds a run made with different settings (run.json -> this command: "
                                 f"{shown}); use another --out, or the same command as before to resume")
            return
    _write_atomic(path, dumps(plan))


def load_plan(out_dir: pathlib.Path) -> dict:
    path = out_dir / PLAN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not an mmtok tokenize output folder")
    try:
        return json.loads(path.read_bytes())
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


def missing_shards(out_dir: pathlib.Path, plan: dict) -> list[int]:
    """Shards without a complete record (sizes only; merge_manifests checks the digests)."""
    return [i for i in range(plan["num_shards"]) if read_record(out_dir, i, digests=False) is None]


def merge_manifests(out_dir, *, checked=None) -> dict:
    """Build manifest.json and failures.jsonl from run.json and every shard record; ValueError if a
    shard is missing (naming the ranks that still have to run). `out_dir` may be an fsspec URL (the
    output on object storage: records read from the store, file sizes checked there, the two files
    uploaded; mmtok.data.remote). `checked`: the (record, why-not) of every shard when the caller has
    them (the store's records), else each shard is checked on disk (record_problem)."""
    from .remote import is_url, local_path

    out_dir = local_path(os.fspath(out_dir))
    if is_url(out_dir):
        from .remote import RemoteOut

        return RemoteOut.existing(out_dir).merge()
    out_dir = pathlib.Path(out_dir)
    plan = load_plan(out_dir)
    if checked is None:
        checked = [record_problem(out_dir, i) for i in range(plan["num_shards"])]
    records = [record for record, _ in checked]
    missing = [why for _, why in checked if why is not None]
    if missing:
        names = "; ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ValueError(f"{out_dir}: {len(missing)} shard(s) not complete ({names}); run the missing ranks "
                         f"(shard i belongs to rank i % WORLD_SIZE) with the same command first (it redoes "
                         f"incomplete and corrupt shards)")
    counts = {"inputs": 0, "samples": 0, "failures": 0, "tokens": 0, "by_modality": {}}
    failures = []
    for record in records:
        counts["inputs"] += record["inputs"]
        counts["samples"] += record["samples"]
        counts["failures"] += len(record["failures"])
        counts["tokens"] += record["tokens"]
        failures += record["failures"]
        for modality, c in record["by_modality"].items():
            total = counts["by_modality"].setdefault(modality, {"samples": 0, "failures": 0, "tokens": 0})
            for key in total:
                total[key] += c[key]
    counts["by_modality"] = {k: counts["by_modality"][k] for k in sorted(counts["by_modality"])}
    shards = [{"name": r["name"], "samples": r["samples"], "failures": len(r["failures"]), "tokens": r["tokens"],
               "tokens_file": r["tokens_file"], "index_file": r["index_file"]} for r in records]
    copies = {name: folder_digests(out_dir / entry["path"]) for name, entry in sorted(plan["tokenizers"].items())
              if (out_dir / entry["path"]).is_dir()}
    manifest = {**plan, "counts": counts, "shards": shards, "tokenizer_files": copies}
    _write_atomic(out_dir / FAILURES_FILE, "".join(json.dumps(f, sort_keys=True) + "\n" for f in failures))
    _write_atomic(out_dir / MANIFEST_FILE, dumps(manifest))
    return manifest


def load_manifest(out_dir) -> dict:
    out_dir = pathlib.Path(os.fspath(out_dir))
    path = out_dir / MANIFEST_FILE
    if not path.is_file():
        hint = " (run `mmtok merge-manifests` once every rank has finished)" if (out_dir / PLAN_FILE).exists() else ""
        raise FileNotFoundError(f"{path} not found{hint}")
    try:
        data = json.loads(path.read_bytes())
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        data = data if isinstance(data, dict) else {}
        raise ValueError(f"{path}: not an mmtok token-shard manifest (format={data.get('format')!r})")
    if data.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported format_version {data.get('format_version')!r}")
    return data
