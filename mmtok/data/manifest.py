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

from .shards import read_record, shard_name

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
    temporary = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    temporary.write_text(text)
    with open(temporary, "rb") as f:
        os.fsync(f.fileno())
    os.replace(temporary, path)


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
                differ = sorted(k for k in set(old) | set(plan) if old.get(k) != plan.get(k))
                raise ValueError(f"{out_dir} holds a run made with different settings ({', '.join(differ)} "
                                 f"differ); use another --out, or the same command as before to resume")
            return
    _write_atomic(path, dumps(plan))


def load_plan(out_dir: pathlib.Path) -> dict:
    path = out_dir / PLAN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not an mmtok tokenize output folder")
    return json.loads(path.read_text())


def missing_shards(out_dir: pathlib.Path, plan: dict) -> list[int]:
    return [i for i in range(plan["num_shards"]) if read_record(out_dir, i) is None]


def merge_manifests(out_dir) -> dict:
    """Build manifest.json and failures.jsonl from run.json and every shard record; ValueError if a
    shard is missing (naming the ranks that still have to run)."""
    out_dir = pathlib.Path(os.fspath(out_dir))
    plan = load_plan(out_dir)
    records = [read_record(out_dir, i) for i in range(plan["num_shards"])]
    missing = [i for i, r in enumerate(records) if r is None]
    if missing:
        names = ", ".join(shard_name(i) for i in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ValueError(f"{out_dir}: {len(missing)} shard(s) not complete ({names}); run the missing ranks "
                         f"(shard i belongs to rank i % WORLD_SIZE) with the same command first")
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
    manifest = {**plan, "counts": counts, "shards": shards}
    _write_atomic(out_dir / FAILURES_FILE, "".join(json.dumps(f, sort_keys=True) + "\n" for f in failures))
    _write_atomic(out_dir / MANIFEST_FILE, dumps(manifest))
    return manifest


def load_manifest(out_dir) -> dict:
    out_dir = pathlib.Path(os.fspath(out_dir))
    path = out_dir / MANIFEST_FILE
    if not path.is_file():
        hint = " (run `mmtok merge-manifests` once every rank has finished)" if (out_dir / PLAN_FILE).exists() else ""
        raise FileNotFoundError(f"{path} not found{hint}")
    data = json.loads(path.read_text())
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: not an mmtok token-shard manifest (format={data.get('format')!r})")
    if data.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported format_version {data.get('format_version')!r}")
    return data
