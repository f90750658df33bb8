"""`TokenShards`: read a tokenized dataset in a training loop, memory-mapped.

Random access (`shards[i]`), iteration, a split per rank and per DataLoader worker, and decoding back
to segments / pixels through the tokenizer copy stored with the data.
"""
from __future__ import annotations

import json
import os
import pathlib
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq
import torch

from .manifest import load_manifest
from .remote import RemoteOutput, is_url, local_path


@dataclass
class TokenSample:
    index: int
    key: str
    source: str
    modality: str
    tokens: np.ndarray            # int64 token-stream ids
    grid: list[int]
    timestamps: list[float] | None
    meta: dict | None


class TokenShards(torch.utils.data.Dataset):
    """All samples of an `mmtok tokenize` output folder, in shard order.

    `shards[i]` -> TokenSample; `len(shards)`; `iter(shards)`; `shards.tokens(i)` -> the raw ids (a
    read-only memory-mapped view); `shards.split(rank, world_size)` -> the samples of one rank;
    `shards.iterable(...)` -> an IterableDataset that also splits across DataLoader workers.
    `directory` may be an fsspec URL (`s3://bucket/tokens`): the manifest, indexes and tokenizer copies are
    downloaded into `cache` (default $MMTOK_CACHE or ~/.cache/mmtok, per URL) when opened, each shard's
    token file when first read, each checked against the manifest's sha256.
    """

    def __init__(self, directory, *, indices=None, cache=None):
        self.remote = None
        directory = local_path(os.fspath(directory))
        if is_url(directory):  # an output on object storage: read through a local cache folder
            self.remote = RemoteOutput(directory, cache)
            directory = self.remote.open()
        self.directory = pathlib.Path(directory)
        self.manifest = load_manifest(self.directory)
        self.dtype = np.dtype(self.manifest["dtype"]).newbyteorder("<")
        columns = {name: [] for name in ("key", "source", "modality", "offset", "length", "grid", "timestamps", "meta")}
        shard_of = []
        for n, shard in enumerate(self.manifest["shards"]):
            if self.remote is not None:
                self.remote.fetch(shard["index_file"]["path"], shard["index_file"])
            table = pq.read_table(self.directory / shard["index_file"]["path"])
            for name in columns:
                columns[name] += table.column(name).to_pylist()
            shard_of += [n] * table.num_rows
        self._columns = columns
        self._offset = np.asarray(columns["offset"], dtype=np.int64)
        self._length = np.asarray(columns["length"], dtype=np.int64)
        self._shard = np.asarray(shard_of, dtype=np.int64)
        self._maps: dict[int, np.ndarray] = {}
        self._indices = np.arange(len(shard_of)) if indices is None else np.asarray(indices, dtype=np.int64)
        self._stream = None

    # ---- access --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._indices)

    def _map(self, shard: int) -> np.ndarray:
        if shard not in self._maps:  # opened lazily: cheap to fork into DataLoader workers
            entry = self.manifest["shards"][shard]["tokens_file"]
            path = self.directory / entry["path"]
            if self.remote is not None:  # downloaded into the cache when first used
                self.remote.fetch(entry["path"], entry)
            self._maps[shard] = (np.memmap(path, dtype=self.dtype, mode="r") if path.stat().st_size
                                 else np.zeros(0, dtype=self.dtype))
        return self._maps[shard]

    def _global(self, i: int) -> int:
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} out of range for {len(self)} samples")
        return int(self._indices[i])

    def tokens(self, i: int) -> np.ndarray:
        """Sample i's ids as stored (uint16/int32), a read-only view of the memory map."""
        g = self._global(i)
        return self._map(int(self._shard[g]))[self._offset[g]: self._offset[g] + self._length[g]]

    def __getitem__(self, i: int) -> TokenSample:
        g = self._global(i)
        c = self._columns
        meta = c["meta"][g]
        return TokenSample(g, c["key"][g], c["source"][g], c["modality"][g], self.tokens(i).astype(np.int64),
                           c["grid"][g], c["timestamps"][g], None if meta is None else json.loads(meta))

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def keys(self) -> list[str]:
        return [self._columns["key"][g] for g in self._indices]

    # ---- splitting -------------------------------------------------------------------------------------
    def split(self, rank: int, world_size: int) -> "TokenShards":
        """Samples rank, rank + world_size, ...: disjoint across ranks, together all of them."""
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        view = object.__new__(TokenShards)
        view.__dict__.update(self.__dict__)
        view._indices = self._indices[rank::world_size]
        view._maps = {}
        return view

    def iterable(self, rank: int | None = None, world_size: int | None = None) -> "ShardIterable":
        """An IterableDataset over this rank's share (RANK / WORLD_SIZE from the environment when not
        given), further split across DataLoader workers."""
        rank = int(os.environ.get("RANK", 0)) if rank is None else rank
        world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
        return ShardIterable(self.split(rank, world_size))

    # ---- decoding ----------------------------------------------------------------------------------------
    def stream(self, image_tokenizer=None):
        """A TokenStream over the stored vocabulary, with the stored image tokenizer (checked by hash)."""
        if self._stream is None or image_tokenizer is not None:
            from ..stream import TokenStream, Vocabulary
            from .tokenizers import tokenizer_hash

            from .tokenizers import TEXT_COPY, load_text_tokenizer

            record = self.manifest["vocabulary"]
            text = None if record.get("text", {}).get("kind") == "bytes" else load_text_tokenizer(
                self.directory / TEXT_COPY)  # --text-tokenizer: the copy kept with the output
            vocab = Vocabulary.from_dict(record, text, source=str(self.directory / "manifest.json"))
            tokenizers = {"image": image_tokenizer, "video": None}
            for name in tokenizers:
                entry = self.manifest["tokenizers"].get(name)
                if tokenizers[name] is None and entry is not None:
                    from ..tokenizer import load

                    tokenizers[name] = load(self.directory / entry["path"], format="mmtok")
                if entry is not None and tokenizer_hash(tokenizers[name]) != entry["hash"]:
                    raise ValueError(f"{self.directory}: the {name} tokenizer does not match the one that made the "
                                     f"tokens (hash {entry['hash'][:16]}...)")
            self._stream = TokenStream(vocab, image_tokenizer=tokenizers["image"],
                                       video_tokenizer=tokenizers["video"])
        return self._stream

    def segments(self, i: int, *, decode_images: bool = False):
        """Sample i as stream segments (Image / Audio / Video / Text with codes); decode_images fills pixels."""
        stream = self.stream()
        return stream.decode(self[i].tokens, vocab_hash=self.manifest["vocabulary"]["hash"],
                             decode_images=decode_images)

    def decode(self, i: int) -> list[torch.Tensor]:
        """Every image (or video frame) of sample i back to pixels: a list of (3, H, W) in [-1, 1]."""
        from ..stream.segments import Image, Video

        out = []
        for segment in self.segments(i, decode_images=True):
            if isinstance(segment, Video):
                out += list(segment.pixels) if segment.pixels is not None else [f.pixels for f in segment.frames]
            elif isinstance(segment, Image):
                out.append(segment.pixels)
        return out

    def __repr__(self) -> str:
        return f"TokenShards({str(self.directory)!r}, samples={len(self)}, shards={len(self.manifest['shards'])})"


class ShardIterable(torch.utils.data.IterableDataset):
    """Iterates a TokenShards view; inside a DataLoader, each worker takes every num_workers-th sample."""

    def __init__(self, shards: TokenShards):
        self.shards = shards

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        view = self.shards if info is None else self.shards.split(info.id, info.num_workers)
        return iter(view)

    def __len__(self) -> int:
        return len(self.shards)
