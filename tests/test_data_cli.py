"""`mmtok tokenize` end to end, through the CLI in subprocesses: real photos, speech, a generated video and
planted bad files; SIGKILL mid-run then resume; two ranks; `mmtok verify` on a corrupted shard."""
from __future__ import annotations

import json
import os
import pathlib
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from data_fixtures import build_dataset, save_tiny_image_tokenizer

pytestmark = pytest.mark.timeout(240)
ROOT = pathlib.Path(__file__).resolve().parents[1]


def mmtok(*args, env=None, check=True):
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "mmtok", *map(str, args)], capture_output=True, text=True,
                          env=full_env, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"mmtok {args} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def tokenize_args(dataset, out):
    return ["tokenize", dataset["media"], dataset["manifest"], "--out", out, "--image-tokenizer",
            dataset["image_tokenizer_dir"], "--audio-tokenizer", "bestrq:seed=3", "--shard-size", 3,
            "--batch-size", 4, "--workers", 1, "--no-progress"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    seed = int(os.environ.get("MMTOK_TEST_SEED", random.SystemRandom().randrange(2**31)))
    print(f"seed={seed}")
    root = tmp_path_factory.mktemp("dataset")
    data = build_dataset(root, np.random.default_rng(seed))
    data["image_tokenizer_dir"] = root / "image_tokenizer"
    data["image_tokenizer"] = save_tiny_image_tokenizer(data["image_tokenizer_dir"])
    data["root"] = root
    return data


@pytest.fixture(scope="module")
def reference(dataset):
    """An uninterrupted single-process run, through the Python API (the CLI is a thin layer over it)."""
    from mmtok.audio.tokenizer import AudioTokenizer
    from mmtok.data import tokenize_dataset
    from mmtok.data.cli import format_summary

    out = dataset["root"] / "reference"
    summary = tokenize_dataset([dataset["media"], dataset["manifest"]], out,
                               image_tokenizer=dataset["image_tokenizer"], audio_tokenizer=AudioTokenizer(seed=3),
                               shard_size=3, batch_size=4, workers=0, progress=False)
    return {"out": out, "stdout": format_summary(summary, out)}


def output_files(out: pathlib.Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_good_inputs_match_python_api_and_bad_ones_are_recorded(dataset, reference):
    from mmtok.audio.tokenizer import AudioTokenizer
    from mmtok.data import TokenShards
    from mmtok.video import VideoTokenizer

    out, image_tok = reference["out"], dataset["image_tokenizer"]
    audio_tok = AudioTokenizer(seed=3)
    assert "failed" in reference["stdout"] and "manifest.json" in reference["stdout"]  # the summary
    shards = TokenShards(out)
    by_key = {shards[i].key: i for i in range(len(shards))}
    expected = dataset["good"]["photos"] + dataset["good"]["audio"] + dataset["good"]["video"] + ["cat"]
    assert sorted(by_key) == sorted(expected + ["media/speech/arctic_a0007.wav"])
    for key, i in by_key.items():
        sample, (segment,) = shards[i], shards.segments(i)
        if sample.modality == "image":
            want = image_tok.encode([sample.source])[0]
            assert torch.equal(segment.codes, want), key
            assert sample.grid == list(want.shape)
        elif sample.modality == "audio":
            assert torch.equal(segment.codes, audio_tok.encode_file(sample.source)), key
        else:
            want = VideoTokenizer(image_tok, audio_tokenizer=AudioTokenizer(seed=3)).encode(sample.source)
            assert torch.equal(torch.stack([f.codes for f in segment.frames]), want.frame_codes)
            assert torch.equal(segment.audio.codes, want.audio_codes)
            assert sample.timestamps == want.timestamps.tolist()
    assert shards[by_key["cat"]].meta == {"caption": "a cat"}
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    failed = {f["key"]: f["error"] for f in failures}
    for key in dataset["bad"]:
        assert key in failed, key
    assert "truncated" in failed["photos/truncated.png"]
    assert "FileNotFoundError" in failed["missing"]
    assert any("not valid JSON" in e for e in failed.values())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["samples"] == len(shards) and manifest["counts"]["failures"] == len(failures)
    assert manifest["dtype"] == "uint16" and manifest["tokenizers"]["audio"]["config"]["seed"] == 3


def test_sigkill_mid_run_then_resume_is_identical(dataset, reference):
    out = dataset["root"] / "killed"
    # killed while writing the third shard: its token file is in place, its index and record are not
    proc = mmtok(*tokenize_args(dataset, out), env={"MMTOK_DATA_TEST_SIGKILL": "write:3"}, check=False)
    assert proc.returncode == -9, proc.stderr
    assert (out / "shard-00002.bin").exists() and not (out / "shard-00002.json").exists()
    assert not (out / "manifest.json").exists()
    (out / "shard-00003.parquet.tmp-12345").write_bytes(b"half a parquet file")  # as if killed mid-write
    proc = mmtok(*tokenize_args(dataset, out), check=False)
    assert proc.returncode == 1, proc.stderr  # finished, with failed inputs (the planted bad files)
    assert "2 already complete" in proc.stdout and "failures.jsonl" in proc.stdout
    assert output_files(out) == output_files(reference["out"])


def test_two_ranks_write_the_same_shards_partitioned(dataset, reference):
    out = dataset["root"] / "ranks"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "mmtok", *map(str, tokenize_args(dataset, out))], cwd=ROOT,
                              env={**env, "RANK": str(r), "WORLD_SIZE": "2"}, stdout=subprocess.PIPE, text=True)
             for r in range(2)]
    outputs = [p.communicate()[0] for p in procs]
    failed_shards = {json.loads(line)["shard"] for line in (reference["out"] / "failures.jsonl").read_text().splitlines()}
    # each rank exits 1 when its shards hold failure records (the last one to finish: the whole dataset's)
    assert [p.returncode for p in procs] in ([1, 1], [int(any(s % 2 == r for s in failed_shards)) for r in range(2)])
    assert "rank 0 of 2" in outputs[0] and "rank 1 of 2" in outputs[1]
    written = [int(o.split(" written now")[0].rsplit(", ", 1)[1]) for o in outputs]
    manifest = json.loads((reference["out"] / "manifest.json").read_text())
    assert written == [len(range(r, manifest["num_shards"], 2)) for r in range(2)]
    from mmtok.data import merge_manifests

    (out / "manifest.json").unlink()
    merge_manifests(out)
    assert output_files(out) == output_files(reference["out"])


def test_verify_catches_a_corrupted_shard(dataset, reference, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(reference["out"], out)
    from mmtok.data import verify

    assert verify(out) == []
    path = out / "shard-00001.bin"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x5A
    path.write_bytes(bytes(data))
    (out / "shard-00002.parquet").write_bytes((out / "shard-00000.parquet").read_bytes())
    proc = mmtok("verify", out, check=False)
    assert proc.returncode == 1
    assert "shard-00001: shard-00001.bin sha256 differs" in proc.stdout
    assert "shard-00002" in proc.stdout
