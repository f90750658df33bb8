"""The Ray engine of `mmtok tokenize` on a local 2-CPU Ray cluster started here: byte-identical to the local
engine on photos, speech, a video and a Qwen-VL file with planted bad inputs, and on Parquet rows with a
text tokenizer; a rerun skips complete shards;
an actor SIGKILLed mid-shard and a driver SIGKILLed mid-run both end identical; refused cleanly without Ray."""
from __future__ import annotations

import json
import os
import pathlib
import random
import re
import subprocess
import sys

import numpy as np
import pytest

from data_fixtures import build_dataset, save_tiny_image_tokenizer

pytestmark = pytest.mark.timeout(300)
ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARD_SIZE = 3


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray engine tests need the ray extra (pip install 'mmtok[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    seed = int(os.environ.get("MMTOK_TEST_SEED", random.SystemRandom().randrange(2**31)))
    print(f"seed={seed}")
    root = tmp_path_factory.mktemp("ray_dataset")
    data = build_dataset(root, np.random.default_rng(seed))
    chat = root / "chat.json"  # Qwen-VL conversations: two good, a missing image, a malformed record
    chat.write_text(json.dumps([
        {"id": "q1", "conversations": [{"from": "user", "value": "Picture 1: <img>media/photos/random.png</img>\nWhat?"},
                                       {"from": "assistant", "value": "noise"}]},
        {"id": "q2", "conversations": [{"from": "user", "value": "<img>media/photos/chelsea.png</img> and "
                                                                 "<img>media/photos/random.png</img>"}]},
        {"id": "q3", "conversations": [{"from": "user", "value": "<img>media/photos/nope.png</img>"}]},
        {"id": "q4", "conversations": [{"from": "user"}]},
    ]))
    data["inputs"] = [data["media"], data["manifest"], chat]
    data["image_tokenizer_dir"] = root / "image_tokenizer"
    data["image_tokenizer"] = save_tiny_image_tokenizer(data["image_tokenizer_dir"])
    data["root"] = root
    return data


def run(dataset, out, audio_tokenizer=None, **kwargs):
    from mmtok.audio.tokenizer import AudioTokenizer
    from mmtok.data import tokenize_dataset

    return tokenize_dataset(dataset["inputs"], out, image_tokenizer=dataset["image_tokenizer"],
                            audio_tokenizer=audio_tokenizer or AudioTokenizer(seed=3), shard_size=SHARD_SIZE, batch_size=4, workers=0,
                            progress=False, **kwargs)


@pytest.fixture(scope="module")
def reference(dataset):
    out = dataset["root"] / "local"
    summary = run(dataset, out)
    return {"out": out, "summary": summary}


def output_files(out: pathlib.Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_ray_output_is_byte_identical_to_the_local_engine_and_a_rerun_skips(ray_cluster, dataset, reference):
    from mmtok.audio.tokenizer import AudioTokenizer
    from mmtok.data import TokenShards, verify

    out = dataset["root"] / "ray"
    used = AudioTokenizer(seed=3)  # already used: its frontend's per-thread buffers must not stop the pickling
    used.encode_file(dataset["media"] / "speech" / "arctic_a0007.wav")
    summary = run(dataset, out, audio_tokenizer=used, engine="ray", concurrency=2)
    want = reference["summary"]
    modalities = {m for m in json.loads((out / "manifest.json").read_text())["counts"]["by_modality"]}
    assert {"image", "audio", "video", "conversation"} <= modalities
    assert summary.failures == want.failures >= 7  # the planted bad files and conversations are failure records
    assert (summary.samples, summary.tokens, summary.shards_written, summary.failed_keys) == (
        want.samples, want.tokens, want.shards_total, want.failed_keys)
    assert output_files(out) == output_files(reference["out"])
    assert verify(out) == [] and len(TokenShards(out)) == want.samples
    again = run(dataset, out, engine="ray")
    assert (again.shards_written, again.shards_done_before, again.processed) == (0, want.shards_total, 0)
    assert output_files(out) == output_files(reference["out"])


def test_an_actor_killed_mid_shard_is_retried_and_the_output_is_identical(ray_cluster, dataset, reference,
                                                                          tmp_path, monkeypatch):
    from mmtok.data.ray_engine import KILL_ENV

    marker = tmp_path / "killed"
    monkeypatch.setenv(KILL_ENV, f"2:2:{marker}")  # the actor doing shard 2 dies at its 2nd item, once
    out = tmp_path / "out"
    summary = run(dataset, out, engine="ray", concurrency=2)
    assert marker.exists(), "the test hook did not fire"
    killed_pid = int(marker.read_text())
    assert not _alive(killed_pid)
    assert summary.shards_written == reference["summary"].shards_total
    assert output_files(out) == output_files(reference["out"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _cli(*args, env=None):
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                **(env or {})}
    return subprocess.run([sys.executable, "-m", "mmtok", *map(str, args)], capture_output=True, text=True,
                          env=full_env, cwd=ROOT)


def _cli_args(dataset, out, *extra):
    return ["tokenize", *dataset["inputs"], "--out", out, "--image-tokenizer", dataset["image_tokenizer_dir"],
            "--audio-tokenizer", "bestrq:seed=3", "--shard-size", SHARD_SIZE, "--batch-size", 4, "--workers", 0,
            "--no-progress", *extra]


@pytest.mark.slow
def test_a_driver_killed_mid_run_then_rerun_is_identical(ray_cluster, dataset, reference, tmp_path):
    address = ray_cluster.get_runtime_context().gcs_address
    out = tmp_path / "out"
    args = _cli_args(dataset, out, "--engine", "ray", "--ray-address", address, "--concurrency", 1)
    proc = _cli(*args, env={"MMTOK_DATA_TEST_SIGKILL": "shards:2"})  # the driver dies after 2 shards
    assert proc.returncode == -9, proc.stderr
    assert not (out / "manifest.json").exists()
    proc = _cli(*args)
    assert proc.returncode == 1, proc.stderr  # finished, with the planted failures
    # shards the actor had queued may have been written before the SIGKILL landed: 2 or more, not all
    done = int(re.search(r"(\d+) already complete", proc.stdout).group(1))
    assert 2 <= done < reference["summary"].shards_total, proc.stdout
    assert output_files(out) == output_files(reference["out"])


def test_ray_engine_is_refused_up_front_without_ray(dataset, tmp_path):
    fake = tmp_path / "no_ray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray (hidden by the test)')\n")
    out = tmp_path / "out"
    proc = _cli(*_cli_args(dataset, out, "--engine", "ray"), env={
        "PYTHONPATH": os.pathsep.join([str(fake.parent), str(ROOT)])})
    assert proc.returncode == 2, proc.stderr
    assert "--engine ray needs Ray" in proc.stderr and "pip install 'mmtok[ray]'" in proc.stderr
    assert not out.exists()  # nothing was started


def test_ray_parquet_rows_and_a_text_tokenizer_are_byte_identical(ray_cluster, dataset, tmp_path, capsys):
    """Parquet rows (one of them not an image) and Qwen-VL text through a tokenizer.json, both engines."""
    pa = pytest.importorskip("pyarrow")
    tokenizers = pytest.importorskip("tokenizers", reason="the tokenizers package reads --text-tokenizer files")
    import pyarrow.parquet as pq

    from mmtok.data import tokenize_dataset

    photos = sorted((dataset["media"] / "photos").glob("*.png"))[:4]
    blobs = [p.read_bytes() for p in photos] + [b"not an image at all"]
    pq.write_table(pa.table({"key": [f"row{i}" for i in range(len(blobs))], "image": pa.array(blobs, pa.binary()),
                             "caption": [f"caption {i}" for i in range(len(blobs))]}), tmp_path / "rows.parquet",
                   row_group_size=2)
    words = ["<unk>", "what", "is", "in", "the", "picture", "?", "a", "cat", "Picture", "1", ":", "noise"]
    text = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    text.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    text.save(str(tmp_path / "tokenizer.json"))
    inputs = [tmp_path / "rows.parquet", dataset["inputs"][2]]  # the table and the Qwen-VL file
    common = dict(image_tokenizer=dataset["image_tokenizer"], text_tokenizer=tmp_path / "tokenizer.json",
                  shard_size=SHARD_SIZE, batch_size=4, workers=0)
    local = tokenize_dataset(inputs, tmp_path / "local", progress=False, **common)
    capsys.readouterr()
    ray = tokenize_dataset(inputs, tmp_path / "ray", engine="ray", concurrency=2, progress=True, **common)
    bar = capsys.readouterr().err  # the driver's bar: items, and shards done
    shards = -(-local.inputs // SHARD_SIZE)
    assert "tokenize (ray)" in bar and f"{local.inputs}/{local.inputs}" in bar and f"shards={shards}/{shards}" in bar
    assert local.samples >= 6 and local.failures >= 3 and "row4" in local.failed_keys
    assert (ray.samples, ray.failures, ray.failed_keys) == (local.samples, local.failures, local.failed_keys)
    assert output_files(tmp_path / "ray") == output_files(tmp_path / "local")


@pytest.mark.slow
def test_a_shard_that_always_kills_its_actor_is_reported_and_the_rest_written(ray_cluster, dataset, reference,
                                                                              tmp_path, monkeypatch):
    from mmtok.data.ray_engine import KILL_ENV, MAX_RETRIES, ShardsLost

    monkeypatch.setenv(KILL_ENV, "1:1:always")  # shard 1 kills its actor on every attempt (a poison input)
    out = tmp_path / "out"
    with pytest.raises(ShardsLost, match=rf"1 shard\(s\) failed on Ray after {MAX_RETRIES} retries.*shard 1:"):
        run(dataset, out, engine="ray", concurrency=2)
    total = reference["summary"].shards_total
    written = sorted(p.name for p in out.glob("shard-*.json"))
    assert written == [f"shard-{i:05d}.json" for i in range(total) if i != 1]  # the restarted actor did the rest
    monkeypatch.delenv(KILL_ENV)
    again = run(dataset, out, engine="ray")
    assert (again.shards_written, again.shards_done_before) == (1, total - 1)
    assert output_files(out) == output_files(reference["out"])


def test_an_unreachable_ray_address_is_refused_in_seconds(dataset, tmp_path):
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    out = tmp_path / "out"
    start = time.perf_counter()
    proc = _cli(*_cli_args(dataset, out, "--engine", "ray", "--ray-address", f"127.0.0.1:{port}"))
    assert proc.returncode == 2, proc.stderr
    assert f"cannot reach a Ray cluster at 127.0.0.1:{port} (--ray-address)" in proc.stderr
    assert time.perf_counter() - start < 60 and not out.exists()
    proc = _cli(*_cli_args(dataset, out, "--engine", "ray", "--ray-address", "nonsense"))
    assert proc.returncode == 2 and "expected HOST:PORT" in proc.stderr and not out.exists()
