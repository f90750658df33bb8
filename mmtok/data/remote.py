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


def staging_folder(url: str) -> pathlib.Path:
    """Where this machine stages the output at `url`: $MMTOK_STAGING (default <tmp>/mmtok-staging) / a
    hash of the URL."""
    base = pathlib.Path(os.environ.get(STAGING_ENV) or pathlib.Path(tempfile.gettempdir()) / "mmtok-staging")
    return base / hashlib.sha256(redact(url).encode("utf-8")).hexdigest()[:24]


class RemoteOut:
    """A `--out` URL: the local staging folder the run writes, and the uploads that commit its shards."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.fs, self.path = filesystem(self.url, "output")
        self.staging = staging_folder(self.url)
        self.remote_sizes: dict = {}

    def __setstate__(self, state: dict) -> None:
        """Unpickled in a Ray actor: stage under this machine's staging folder (MMTOK_STAGING there)."""
        self.__dict__.update(state)
        self.staging = staging_folder(self.url)

    def _remote(self, name: str) -> str:
        return f"{self.path}/{name}"

    @classmethod
    def existing(cls, url: str) -> "RemoteOut":
        """An output already on the store (for `merge-manifests`): reachable, with a run.json."""
        remote = cls(url)
        remote.prepare()
        if "run.json" not in remote.remote_sizes:
            raise FileNotFoundError(f"{redact(remote.url)}/run.json not found: not an mmtok tokenize output")
        return remote

    def listing(self) -> dict:
        """{name relative to the output: size} of every file on the store under the output (kept as
        `remote_sizes`, which the uploads keep current)."""
        root = self.path.rstrip("/") + "/"
        found = self.fs.find(self.path, detail=True)
        self.remote_sizes = {full[len(root):]: info.get("size") for full, info in found.items()
                             if full.startswith(root)}
        return self.remote_sizes

    def store_record(self, index: int) -> tuple[dict | None, str | None]:
        """(record, None) when the store holds shard `index` complete: its record parses and matches its
        check, and both files are on the store with the recorded sizes (the uploads wrote them before the
        record; the digests were checked where the shard was written); else (None, why not)."""
        from .shards import parse_record, record_files, shard_name

        name = shard_name(index)
        if f"{name}.json" not in self.remote_sizes:
            return None, f"{name}: no record on the store"
        data = self.fs.cat_file(self._remote(f"{name}.json"))
        local = self.staging / f"{name}.json"
        if not local.is_file() or local.read_bytes() != data:
            from .outdir import write_atomic

            write_atomic(local, data)  # the store's record is the truth; the staged one follows it
        record, why = parse_record(name, data)
        if record is None:
            return None, why
        for entry in record_files(record):
            if self.remote_sizes.get(entry["path"]) != entry["bytes"]:
                return None, f"{name}: {entry['path']} on the store does not have its recorded size"
        return record, None

    def merge(self, checked=None) -> dict:
        """manifest.json + failures.jsonl from the store's shard records (ValueError naming the shards
        missing), written into the staging folder and uploaded, the manifest last."""
        from .manifest import FAILURES_FILE, MANIFEST_FILE, load_plan, merge_manifests

        plan = load_plan(self.staging)
        if checked is None:
            self.listing()
            checked = [self.store_record(i) for i in range(plan["num_shards"])]
        manifest = merge_manifests(self.staging, checked=checked)
        for name in (FAILURES_FILE, MANIFEST_FILE):
            self._upload(name)
        return manifest

    def prepare(self) -> None:
        """Prove the store is reachable and writable (before any work), list it, and bring its run.json,
        manifest, failures and tokenizer copies into the staging folder. Shards are judged on the store
        (`store_record`), so a rerun downloads no shard files (except those --retry-failures keeps)."""
        probe = self._remote(f".write-test-{os.getpid()}")
        try:
            self.fs.makedirs(self.path, exist_ok=True)
            self.fs.pipe_file(probe, b"x")
            self.fs.rm_file(probe)
            names = self.listing()
        except Exception as exc:  # noqa: BLE001
            raise unreachable(self.url, "output", exc) from None
        self.staging.mkdir(parents=True, exist_ok=True)
        for name in names:
            if name in SMALL_FILES or name.startswith("tokenizers/"):
                self._download(name)

    def has_record(self, index: int) -> bool:
        """Whether the store lists a record for shard `index` (complete or not)."""
        from .shards import shard_name

        return f"{shard_name(index)}.json" in self.remote_sizes

    def fetch_files(self, record: dict) -> None:
        """Download a complete shard's token file and index into the staging folder (when it lacks them
        at their recorded size): --retry-failures keeps the shard's good samples."""
        from .shards import record_files

        for entry in record_files(record):
            local = self.staging / entry["path"]
            if not local.is_file() or local.stat().st_size != entry["bytes"]:
                self._download(entry["path"])

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
                if self.remote_sizes.get(name) != path.stat().st_size or \
                        self.fs.cat_file(self._remote(name)) != path.read_bytes():
                    self._upload(name)

    def finish(self, total_shards: int, kill=None) -> dict | None:
        """Upload every complete staged shard the store lacks; then, when the store holds every shard
        (uploaded from here or by Ray actors on other machines), write the manifest (see `merge`) and
        return it; None while shards are missing (other ranks still running)."""
        from .shards import read_record

        self.listing()  # actors elsewhere have uploaded shards since prepare()
        checked = []
        for index in range(total_shards):
            record, why = self.store_record(index)
            if record is None and read_record(self.staging, index) is not None:  # killed before its upload
                self.upload_shard(index, kill)
                record, why = self.store_record(index)
            checked.append((record, why))
        if any(record is None for record, _ in checked):
            return None
        return self.merge(checked)


class UploadShard:
    """`Summary.on_shard` for a run whose --out is a URL: upload each shard right after it is written, in
    the process that wrote it (a Ray actor on any machine; picklable)."""

    def __init__(self, remote: RemoteOut, kill=None):
        self.remote, self.kill = remote, kill

    def __call__(self, index: int) -> None:
        self.remote.upload_shard(index, self.kill)


CACHE_ENV = "MMTOK_CACHE"  # where outputs on a store are cached for reading (default ~/.cache/mmtok)


def cache_folder(url: str) -> pathlib.Path:
    """The local cache of the output at `url` for reading: $MMTOK_CACHE (default ~/.cache/mmtok) /
    outputs / a hash of the URL."""
    base = pathlib.Path(os.environ.get(CACHE_ENV) or pathlib.Path.home() / ".cache" / "mmtok")
    return base / "outputs" / hashlib.sha256(redact(url).encode("utf-8")).hexdigest()[:24]


class RemoteOutput:
    """An `mmtok tokenize` output on a store, read through a local folder (`TokenShards`, `verify`): the
    manifest, failures and tokenizer copies are downloaded when it is opened, each shard's files when
    first used; a file already cached is reused when it has the size the manifest gives, and a file
    downloaded is checked against the manifest's sha256 (a mismatch is a ValueError naming it)."""

    def __init__(self, url: str, folder=None):
        self.url = local_path(os.fspath(url)).rstrip("/")
        self.fs, self.path = filesystem(self.url, "output")
        self.folder = pathlib.Path(folder) if folder is not None else cache_folder(self.url)
        root = self.path.rstrip("/") + "/"
        try:
            found = self.fs.find(self.path, detail=True)
        except Exception as exc:  # noqa: BLE001 - every backend raises its own
            raise unreachable(self.url, "output", exc) from None
        self.sizes = {full[len(root):]: info.get("size") for full, info in found.items() if full.startswith(root)}

    def open(self) -> pathlib.Path:
        """Download the small files (manifest, run.json, failures, shard records, tokenizer copies); the
        local folder that now stands for the output."""
        if "manifest.json" not in self.sizes and "run.json" not in self.sizes:
            raise FileNotFoundError(f"{redact(self.url)}: no manifest.json or run.json: not an mmtok tokenize output")
        for name in sorted(self.sizes):
            if name in SMALL_FILES or name.startswith("tokenizers/") or re.fullmatch(r"shard-\d+\.json", name):
                self.fetch(name, fresh=True)
        return self.folder

    def fetch(self, name: str, entry: dict | None = None, *, fresh: bool = False) -> pathlib.Path:
        """The local copy of `name`, downloaded unless cached at the size `entry` (a manifest file entry)
        gives; `fresh`: always downloaded (small files that change between runs)."""
        from .outdir import write_atomic
        from .shards import file_sha256

        local = self.folder / name
        size = entry.get("bytes") if entry else self.sizes.get(name)
        if fresh or not local.is_file() or local.stat().st_size != size:
            local.parent.mkdir(parents=True, exist_ok=True)
            try:
                data = self.fs.cat_file(f"{self.path}/{name}")
            except FileNotFoundError:
                raise FileNotFoundError(f"{redact(self.url)}/{name} is missing") from None
            write_atomic(local, data)
            if entry and file_sha256(local) != entry.get("sha256"):
                local.unlink()
                raise ValueError(f"{redact(self.url)}/{name}: sha256 differs from the manifest (corrupted; "
                                 f"`mmtok verify {redact(self.url)}` lists every problem)")
        return local

    def drop(self, name: str) -> None:
        (self.folder / name).unlink(missing_ok=True)
