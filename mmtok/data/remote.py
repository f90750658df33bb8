"""Object storage (fsspec URLs: s3://, gs://, hf://, memory://, ...) for inputs and for `--out`.

Inputs: a URL names a file or a folder on any fsspec filesystem; it is listed and read through fsspec
(Parquet row groups by range reads, media files whole). Outputs: the run writes into a local staging
folder exactly as for a local `--out` (same files, same crash safety), and each finished shard is
uploaded to the store as its `.bin` and `.parquet` first and its `.json` record last: object stores have
no atomic rename, so the record is the commit. A rerun downloads the store's run.json, records, manifest
and tokenizer copies, treats shard files without a record (or not matching it) as incomplete and redoes
them, and uploads every complete staged shard the store lacks. Credentials come only from the
environment / fsspec configuration; a URL with credentials in it is refused, and URLs are written into
outputs and messages without user info or query.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import tempfile
import urllib.parse

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
STAGING_ENV = "MMTOK_STAGING"      # where remote outputs are staged (default: <tmp>/mmtok-staging)
SMALL_FILES = ("run.json", "manifest.json", "failures.jsonl")


def is_url(value) -> bool:
    """A URL fsspec should open (file:// counts as a local path)."""
    return isinstance(value, str) and bool(_URL.match(value)) and not value.lower().startswith("file://")


def local_path(value):
    """file:///x -> /x; anything else as given."""
    if isinstance(value, str) and value.lower().startswith("file://"):
        return urllib.parse.unquote(urllib.parse.urlsplit(value).path)
    return value


def redact(url: str) -> str:
    """The URL without user info, query or fragment: what may be written into outputs and messages."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def check_url(url: str, what: str) -> None:
    """Refuse credentials inside a URL (they would end up in run.json, logs and shell history)."""
    parts = urllib.parse.urlsplit(url)
    if "@" in parts.netloc or parts.query:
        raise ValueError(f"{what} {redact(url)}: credentials / options in the URL are not accepted; give them through "
                         f"the environment (e.g. AWS_ACCESS_KEY_ID, GOOGLE_APPLICATION_CREDENTIALS, HF_TOKEN) or the "
                         f"fsspec configuration")


def filesystem(url: str, what: str):
    """(fsspec filesystem, path) for a URL; an unknown protocol / missing package is a ValueError."""
    import fsspec

    check_url(url, what)
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise ValueError(f"{what} {redact(url)}: no filesystem for it ({exc})") from None


def unreachable(url: str, what: str, exc: BaseException) -> ValueError:
    return ValueError(f"{what} {redact(url)}: cannot reach the store ({type(exc).__name__}: {exc}); credentials and "
                      f"endpoints come from the environment or the fsspec configuration")


def open_url(url: str):
    """A binary file object on a URL (read lazily: Parquet readers fetch only the ranges they need)."""
    fs, path = filesystem(url, "input")
    return fs.open(path, "rb")


def read_url(url: str) -> bytes:
    with open_url(url) as f:
        return f.read()


def list_input(url: str, what: str = "input") -> tuple[bool, list[tuple[str, str]]]:
    """(is a folder, [(path relative to the input, full URL)] sorted) of a URL input; before any work:
    a missing input is FileNotFoundError, an unreachable store / missing credentials a ValueError."""
    fs, path = filesystem(url, what)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"input not found: {redact(url)}") from None
    except Exception as exc:  # noqa: BLE001 - every backend raises its own (botocore, aiohttp, ...)
        raise unreachable(url, what, exc) from None
    if info.get("type") != "directory":
        return False, [(path.rsplit("/", 1)[-1], url)]
    try:
        found = fs.find(path)
    except Exception as exc:  # noqa: BLE001
        raise unreachable(url, what, exc) from None
    root = path.rstrip("/") + "/"
    entries = []
    for full in sorted(found):
        relative = full[len(root):] if full.startswith(root) else full
        if any(part.startswith(".") for part in relative.split("/")):
            continue
        entries.append((relative, f"{url.rstrip('/')}/{relative}"))  # the input's own spelling of the URL
    return True, sorted(entries)


class RemoteOut:
    """A `--out` URL: the local staging folder the run writes, and the uploads that commit its shards."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.fs, self.path = filesystem(self.url, "output")
        base = pathlib.Path(os.environ.get(STAGING_ENV) or pathlib.Path(tempfile.gettempdir()) / "mmtok-staging")
        self.staging = base / hashlib.sha256(redact(self.url).encode("utf-8")).hexdigest()[:24]

    def _remote(self, name: str) -> str:
        return f"{self.path}/{name}"

    def prepare(self) -> None:
        """Prove the store is reachable and writable (before any work), then bring its run.json, shard
        records, manifest and tokenizer copies into the staging folder (shard files that the staging
        folder lacks or holds differently are downloaded for complete shards only)."""
        probe = self._remote(f".write-test-{os.getpid()}")
        try:
            self.fs.makedirs(self.path, exist_ok=True)
            self.fs.pipe_file(probe, b"x")
            self.fs.rm_file(probe)
            listed = self.fs.find(self.path)
        except Exception as exc:  # noqa: BLE001
            raise unreachable(self.url, "output", exc) from None
        self.staging.mkdir(parents=True, exist_ok=True)
        root = self.path.rstrip("/") + "/"
        names = {full[len(root):]: full for full in listed if full.startswith(root)}
        self.remote_sizes = {name: self.fs.size(full) for name, full in names.items()}
        for name in names:
            if name in SMALL_FILES or name.startswith("tokenizers/") or re.fullmatch(r"shard-\d+\.json", name):
                self._download(name)
        for name in names:
            if re.fullmatch(r"shard-\d+\.json", name):
                record = self._record(self.staging / name)
                for key in ("tokens_file", "index_file"):
                    entry = (record or {}).get(key) or {}
                    file = entry.get("path")
                    if isinstance(file, str) and self.remote_sizes.get(file) == entry.get("bytes"):
                        local = self.staging / file
                        if not local.is_file() or local.stat().st_size != entry.get("bytes"):
                            self._download(file)
        # a staged shard the store has no record of (killed before its upload) is uploaded at the end

    @staticmethod
    def _record(path: pathlib.Path):
        try:
            return json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None

    def _download(self, name: str) -> None:
        from .outdir import write_atomic

        local = self.staging / name
        local.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(local, self.fs.cat_file(self._remote(name)))

    def _upload(self, name: str) -> None:
        local = self.staging / name
        try:
            self.fs.pipe_file(self._remote(name), local.read_bytes())
        except Exception as exc:  # noqa: BLE001
            from .outdir import OutputError

            raise OutputError(f"cannot write {redact(self.url)}/{name}: {type(exc).__name__}: {exc}") from exc
        self.remote_sizes[name] = local.stat().st_size

    def _same(self, name: str) -> bool:
        local = self.staging / name
        if self.remote_sizes.get(name) != local.stat().st_size:
            return False
        return self.fs.cat_file(self._remote(name)) == local.read_bytes() if name.endswith(".json") else True

    def upload_shard(self, index: int, kill=None) -> None:
        """The shard's token file and index, then its record: the record on the store is the commit."""
        from .shards import shard_name

        name = shard_name(index)
        for suffix in (".bin", ".parquet"):
            self._upload(name + suffix)
        if kill is not None:
            kill("upload", index)
        self._upload(name + ".json")

    def upload_plan(self) -> None:
        """run.json and the tokenizer copies (uploaded when they differ from the store's)."""
        for path in sorted(self.staging.rglob("*")):
            name = path.relative_to(self.staging).as_posix()
            if path.is_file() and (name == "run.json" or name.startswith("tokenizers/")) and ".tmp-" not in name:
                if not self._same(name):
                    self._upload(name)

    def finish(self, total_shards: int, kill=None) -> None:
        """Upload every complete staged shard the store lacks, then manifest.json / failures.jsonl."""
        from .shards import read_record, shard_name

        for index in range(total_shards):
            name = shard_name(index)
            complete = read_record(self.staging, index) is not None
            if complete and not all(self._same(name + suffix) for suffix in (".bin", ".parquet", ".json")):
                self.upload_shard(index, kill)
        for name in ("failures.jsonl", "manifest.json"):  # the manifest last: it says the run is complete
            if (self.staging / name).is_file():
                self._upload(name)
