"""The Ray engine with `--out` on object storage (a local moto S3 server): each actor stages its shards on
its own machine (here: another staging folder than the driver's) and uploads them itself, record last; the
driver builds the manifest from the store's records. The output equals the local engine's byte for byte,
a rerun skips every shard, and `verify` / `TokenShards` read it back through the URL."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from data_fixtures import save_tiny_image_tokenizer
from s3_fixtures import S3_ENV, local_files, png_bytes, remote_files, s3, s3_server  # noqa: F401

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def ray_with_s3(s3_server):
    """A 2-CPU local Ray whose workers see the S3 endpoint and credentials (as a cluster's nodes would),
    and no MMTOK_STAGING: they stage elsewhere than the test's driver."""
    ray = pytest.importorskip("ray", reason="Ray engine tests need the ray extra (pip install 'mmtok[ray]')")
    env = {**S3_ENV, "AWS_ENDPOINT_URL": s3_server, "MMTOK_STAGING": ""}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    yield ray
    ray.shutdown()


def test_ray_actors_upload_their_shards_to_an_s3_out(ray_with_s3, s3, tmp_path, monkeypatch, seed):
    from mmtok.data import TokenShards, tokenize_dataset, verify
    from mmtok.data.remote import staging_folder

    rng = np.random.default_rng(seed)
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(7):
        (folder / f"img{n}.png").write_bytes(png_bytes(rng, (int(rng.integers(24, 50)), int(rng.integers(24, 50)))))
    (folder / "broken.png").write_bytes(b"not an image")
    tok = save_tiny_image_tokenizer(tmp_path / "tok")
    fs, bucket = s3
    url = f"s3://{bucket}/out"
    driver_staging = tmp_path / "driver-staging"
    monkeypatch.setenv("MMTOK_STAGING", str(driver_staging))
    monkeypatch.setenv("MMTOK_CACHE", str(tmp_path / "cache"))
    options = dict(image_tokenizer=tok, shard_size=2, batch_size=2, workers=0, progress=False)
    local = tokenize_dataset([folder], tmp_path / "local", **options)
    monkeypatch.delenv("MMTOK_STAGING")
    actor_staging = staging_folder(url)  # where the actors (MMTOK_STAGING unset) stage
    monkeypatch.setenv("MMTOK_STAGING", str(driver_staging))
    try:
        summary = tokenize_dataset([folder], url, engine="ray", concurrency=2, **options)
        assert summary.manifest is not None and summary.shards_written == local.shards_total == 4
        assert remote_files(fs, f"{bucket}/out") == local_files(tmp_path / "local")
        staged_here = {p.name for p in staging_folder(url).iterdir()}
        assert not any(name.endswith(".bin") for name in staged_here), staged_here  # actors staged elsewhere
        assert any(p.name.endswith(".bin") for p in actor_staging.iterdir())
        again = tokenize_dataset([folder], url, engine="ray", concurrency=2, **options)
        assert again.shards_done_before == again.shards_total and again.processed == 0
        assert verify(url) == []
        shards = TokenShards(url)
        reference = TokenShards(tmp_path / "local")
        assert shards.keys() == reference.keys()
        assert all(np.array_equal(shards[i].tokens, reference[i].tokens) for i in range(len(shards)))
    finally:
        shutil.rmtree(actor_staging, ignore_errors=True)
