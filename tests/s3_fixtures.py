"""Object-storage test helpers: a local S3 server (moto's standalone server, started on 127.0.0.1) and
fsspec folder copies / listings, shared by the fsspec and Ray tests."""
from __future__ import annotations

import io
import pathlib
import socket

import numpy as np
import pytest
from PIL import Image as PILImage


def png_bytes(rng, size) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(fs, folder: pathlib.Path, prefix: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            fs.pipe_file(f"{prefix}/{path.relative_to(folder).as_posix()}", path.read_bytes())


def remote_files(fs, prefix: str) -> dict[str, bytes]:
    root = prefix.rstrip("/") + "/"
    return {p[len(root):]: fs.cat_file(p) for p in sorted(fs.find(prefix)) if p.startswith(root)}


def local_files(folder: pathlib.Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- a local S3 server (moto) ----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard", "AWS_CONFIG_FILE": "/nonexistent",
          "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}


@pytest.fixture(scope="module")
def s3_server():
    pytest.importorskip("moto", reason="moto[server] (test extra) is the local S3 server")
    pytest.importorskip("s3fs", reason="s3fs (test extra) is fsspec's S3 filesystem")
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    import s3fs

    for name, value in {**S3_ENV, "AWS_ENDPOINT_URL": s3_server}.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    bucket = f"mmtok-{free_port()}"
    fs.mkdir(bucket)
    yield fs, bucket
    s3fs.S3FileSystem.clear_instance_cache()
