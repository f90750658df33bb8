"""Object storage through fsspec (mmtok.data.remote): inputs and `--out` as memory:// and s3:// URLs (a
local moto S3 server started by the test), equal to the same run on local folders, byte for byte; a kill
between a shard's files and its record (the commit on a store without rename) is redone on the rerun;
missing credentials, an unreachable endpoint and credentials in a URL are refused before any work."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_fixtures import save_tiny_image_tokenizer
from s3_fixtures import free_port, local_files, png_bytes, remote_files, s3, s3_server, upload  # noqa: F401

fsspec = pytest.importorskip("fsspec")
pytestmark = pytest.mark.timeout(240)
ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok") / "image_tokenizer"
    save_tiny_image_tokenizer(folder)
    return folder


@pytest.fixture(scope="module")
def image_tok(tok_dir):
    from mmtok.image import ImageTokenizer

    return ImageTokenizer.from_pretrained(tok_dir)


@pytest.fixture
def staging(tmp_path, monkeypatch):
    monkeypatch.setenv("MMTOK_STAGING", str(tmp_path / "staging"))
    return tmp_path / "staging"


@pytest.fixture
def run(image_tok):
    from mmtok.data import tokenize_dataset

    def go(inputs, out, **options):
        settings = dict(image_tokenizer=image_tok, shard_size=2, batch_size=2, workers=0, progress=False)
        return tokenize_dataset(inputs, out, **{**settings, **options})
    return go


@pytest.fixture
def dataset(tmp_path, seed):
    """A local folder of 5 PNGs, one bad file, and a Parquet table of 3 more rows (one garbage)."""
    rng = np.random.default_rng(seed)
    folder = tmp_path / "local"
    folder.mkdir()
    for n in range(5):
        (folder / f"img{n}.png").write_bytes(png_bytes(rng, (int(rng.integers(24, 50)), int(rng.integers(24, 50)))))
    (folder / "broken.png").write_bytes(b"not an image")
    blobs = [png_bytes(rng, (32, 40)), rng.bytes(64), png_bytes(rng, (44, 28))]
    pq.write_table(pa.table({"key": ["t0", "t1", "t2"], "jpg": pa.array(blobs, pa.binary()),
                             "caption": ["one", "two", "three"]}), folder / "table.parquet", row_group_size=2)
    return folder


def test_memory_inputs_and_output_equal_a_local_run(tmp_path, dataset, run, staging):
    fs = fsspec.filesystem("memory")
    upload(fs, dataset, "/mmtok-test/in")
    try:
        local = run([dataset], tmp_path / "out")
        remote = run(["memory://mmtok-test/in"], "memory://mmtok-test/out")
        assert (remote.samples, remote.failures) == (local.samples, local.failures) == (7, 2)
        got = remote_files(fs, "/mmtok-test/out")
        want = local_files(tmp_path / "out")
        # the sources (a URL vs a path) are in the index / records / run.json: the tokens and copies are identical
        assert sorted(got) == sorted(want)
        for name in want:
            if not name.endswith((".json", ".jsonl", ".parquet")):
                assert got[name] == want[name], name
        from mmtok.data import TokenShards

        a, b = TokenShards(tmp_path / "out"), TokenShards(staging / os.listdir(staging)[0])
        assert a.keys() == b.keys()
        for i in range(len(a)):
            assert np.array_equal(a[i].tokens, b[i].tokens) and a[i].meta == b[i].meta
        assert b[a.keys().index("t0")].source == "memory://mmtok-test/in/table.parquet#0"
        again = run(["memory://mmtok-test/in"], "memory://mmtok-test/out")
        assert again.shards_done_before == again.shards_total and again.processed == 0
    finally:
        fs.rm("/mmtok-test", recursive=True)


def test_credentials_in_urls_are_refused_before_work(tmp_path, run, dataset, staging):
    with pytest.raises(ValueError, match="credentials / options in the URL are not accepted"):
        run(["s3://key:secret@bucket/in"], tmp_path / "out")
    with pytest.raises(ValueError, match=r"s3://bucket/out: credentials"):
        run([dataset], "s3://key:secret@bucket/out")
    assert not (tmp_path / "out").exists() and not staging.exists()


KILLED_RUN = """
import sys
from mmtok.data import tokenize_dataset
from mmtok.image import ImageTokenizer
tokenize_dataset([sys.argv[1]], sys.argv[2], image_tokenizer=ImageTokenizer.from_pretrained(sys.argv[3]),
                 shard_size=2, batch_size=2, workers=0, progress=False)
"""


def test_s3_inputs_and_output_with_a_kill_between_shard_files_and_record(tmp_path, dataset, run, staging, s3,
                                                                          tok_dir):
    fs, bucket = s3
    upload(fs, dataset, f"{bucket}/in")
    source = f"s3://{bucket}/in"
    clean = run([source], f"s3://{bucket}/clean")
    assert (clean.samples, clean.failures) == (7, 2)
    want = remote_files(fs, f"{bucket}/clean")
    assert "manifest.json" in want
    # killed after shard 1's .bin and .parquet reached the store, before its record: shard 1 is incomplete
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MMTOK_DATA_TEST_SIGKILL": "upload:2"}
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, source, f"s3://{bucket}/out", str(tok_dir)], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == -9, proc.stderr
    partial = remote_files(fs, f"{bucket}/out")
    assert "shard-00001.bin" in partial and "shard-00001.json" not in partial and "manifest.json" not in partial
    for fresh_staging in (False, True):  # resumed from the staged shards, or from the store alone
        if fresh_staging:
            fs.rm(f"{bucket}/out/shard-00002.json")
            fs.rm(f"{bucket}/out/manifest.json")
            for path in sorted(staging.rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
        resumed = run([source], f"s3://{bucket}/out")
        assert resumed.manifest is not None
        assert remote_files(fs, f"{bucket}/out") == want
    assert resumed.shards_done_before == resumed.shards_total - 1  # only the shard without a record was redone


def test_missing_credentials_and_unreachable_endpoint_are_refused_before_work(tmp_path, dataset, run, staging, s3,
                                                                               monkeypatch):
    import s3fs

    fs, bucket = s3
    upload(fs, dataset, f"{bucket}/in")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    s3fs.S3FileSystem.clear_instance_cache()
    with pytest.raises(ValueError, match=rf"input s3://{bucket}/in: cannot reach the store \(NoCredentialsError"):
        run([f"s3://{bucket}/in"], tmp_path / "out")
    with pytest.raises(ValueError, match=rf"output s3://{bucket}/out: cannot reach the store"):
        run([dataset], f"s3://{bucket}/out")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    s3fs.S3FileSystem.clear_instance_cache()
    with pytest.raises(ValueError, match=rf"input s3://{bucket}/in: cannot reach the store"):
        run([f"s3://{bucket}/in"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_output_on_a_store_is_read_verified_and_merged_through_its_url(tmp_path, dataset, run, staging,
                                                                          monkeypatch):
    """TokenShards, `mmtok verify` and `mmtok merge-manifests` take the output's URL: the same samples as
    the local folder, a corrupted token file on the store found by verify, the manifest rebuilt identically."""
    from mmtok.data import TokenShards, merge_manifests, verify

    monkeypatch.setenv("MMTOK_CACHE", str(tmp_path / "cache"))
    fs = fsspec.filesystem("memory")
    try:
        run([dataset], tmp_path / "out")
        upload(fs, tmp_path / "out", "/mmtok-read/out")
        url = "memory://mmtok-read/out"
        a, b = TokenShards(tmp_path / "out"), TokenShards(url)
        assert a.keys() == b.keys() and len(b) == 7
        for i in range(len(a)):
            assert np.array_equal(a[i].tokens, b[i].tokens) and a[i].meta == b[i].meta
        assert [t.shape for t in a.decode(0)] == [t.shape for t in b.decode(0)]
        assert verify(url) == []
        manifest = fs.cat_file("/mmtok-read/out/manifest.json")
        fs.rm("/mmtok-read/out/manifest.json")
        fs.rm("/mmtok-read/out/failures.jsonl")
        assert verify(url) and "merge-manifests" in verify(url)[0]
        merge_manifests(url)
        assert fs.cat_file("/mmtok-read/out/manifest.json") == manifest
        tokens = bytearray(fs.cat_file("/mmtok-read/out/shard-00001.bin"))
        tokens[3] ^= 1  # same size, other bytes
        fs.pipe_file("/mmtok-read/out/shard-00001.bin", bytes(tokens))
        problems = verify(url)
        assert any("shard-00001" in p and "sha256" in p for p in problems), problems
        fresh = TokenShards(url, cache=tmp_path / "other-cache")
        with pytest.raises(ValueError, match="shard-00001.bin: sha256 differs from the manifest"):
            fresh.tokens(fresh.keys().index(a.keys()[2]))
        fs.rm("/mmtok-read/out/shard-00001.json")
        with pytest.raises(ValueError, match=r"1 shard\(s\) not complete \(shard-00001: no record on the store\)"):
            merge_manifests(url)
        with pytest.raises(FileNotFoundError, match="not an mmtok tokenize output"):
            TokenShards("memory://mmtok-read/nothing")
    finally:
        fs.rm("/mmtok-read", recursive=True)
