"""`tokenize_dataset`: inputs -> token shards, resumable, partitioned across ranks, losing nothing.

Items are found in a fixed order and cut into fixed blocks of `shard_size`; shard i belongs to rank
i % world_size. A rank skips its shards that are already complete, decodes the items of the others in
DataLoader workers, batches them through the tokenizers in the main process and writes each shard
atomically. Killing it at any moment loses at most the shards in progress, which the same command
redoes identically. When no shard is missing, manifest.json and failures.jsonl are written.
"""
from __future__ import annotations

import copy
import os
import pathlib
import signal
import time
from dataclasses import dataclass, field

import torch

from .. import __version__
from ..stream.vocabulary import Vocabulary
from ..tokenizer.protocol import code_spec_of
from . import manifest as mf
from . import outdir
from .assembler import SampleRecord, ShardAssembler
from .copies import copy_folder, save_copy
from .decoding import DecodeOptions, DecodingDataset, Failure, Work, WorkerBatch
from .discovery import discover
from .items import AUDIO, CONVERSATION, IMAGE, VIDEO, items_hash
from .remote import RemoteOut, UploadShard, check_url, is_url, local_path
from .tables import TableColumns
from .shards import read_samples, record_problem, remove_leftovers, shard_name, token_dtype, write_shard
from .tokenizers import TEXT_COPY, describe, load_text_tokenizer, text_tokenizer_bytes

MAX_LISTED_FAILURES = 1000  # keys kept in the Summary (failures.jsonl has them all)
KILL_HOOK_ENV = "MMTOK_DATA_TEST_SIGKILL"  # test hook: "samples:N" or "write:K" -> SIGKILL this process


@dataclass
class Summary:
    rank: int
    world_size: int
    inputs: int                 # items of the whole dataset
    shards_total: int
    shards_done_before: int     # this rank's shards found complete (skipped)
    shards_written: int
    processed: int              # items decoded and tokenized by this call
    samples: int
    failures: int
    tokens: int
    seconds: float
    manifest: dict | None = None
    failed_keys: list = field(default_factory=list)
    shards_redone: list = field(default_factory=list)  # complete-looking shards found corrupt and redone: why
    failures_in_shards: int = 0  # failure records in all of this rank's shards (earlier runs' too)
    on_shard: object = field(default=None, repr=False, compare=False)  # called with each shard written (uploads)

    @property
    def items_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0


def rank_and_world(rank=None, world_size=None) -> tuple[int, int]:
    """From the arguments, else RANK / WORLD_SIZE (torchrun and most launchers set them), else 0 / 1."""
    rank = int(os.environ.get("RANK", 0)) if rank is None else int(rank)
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else int(world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return rank, world_size


class _KillHook:
    """Test-only: SIGKILL this process after N items, or in the middle of writing the K-th shard."""

    def __init__(self):
        spec = os.environ.get(KILL_HOOK_ENV, "")
        kind, _, count = spec.partition(":")
        self.kind, self.count = (kind, int(count)) if count else (None, 0)
        self.seen = 0

    def __call__(self, kind: str, _index=None) -> None:
        if kind == self.kind:
            self.seen += 1
            if self.seen >= self.count:
                os.kill(os.getpid(), signal.SIGKILL)


def tokenize_dataset(inputs, out_dir, *, image_tokenizer=None, audio_tokenizer=None, video_tokenizer=None,
                     audio_codec=None, batch_size: int = 32,
                     workers: int = 2, shard_size: int = 1000, image_size: int | None = None,
                     image_mode: str = "center_crop", video_fps: float | None = 1.0,
                     video_max_frames: int | None = None, max_grid: int = 64, retry_failures: bool = False,
                     rank: int | None = None, world_size: int | None = None, progress: bool = True,
                     engine: str = "local", ray_address: str | None = None, num_gpus_per_worker: float = 0,
                     concurrency: int | None = None, image_column: str | None = None,
                     audio_column: str | None = None, key_column: str | None = None,
                     text_tokenizer=None, caption_field: str | None = None,
                     caption_position: str = "before") -> Summary:
    """Tokenize every input into shards under `out_dir`; see the module docstring and docs/data.md.

    `engine="ray"` plans the run the same way, then has a Ray actor pool tokenize and write the shards
    (mmtok.data.ray_engine; `ray_address`, `num_gpus_per_worker`, `concurrency` configure it).
    `image_column` / `audio_column` / `key_column` choose the columns of Parquet / Arrow / `datasets`
    inputs (detected when not given; mmtok.data.tables). `text_tokenizer` (a tokenizer.json / tokenizer
    folder path, or a `tokenizers` / transformers fast tokenizer) encodes the conversations' text instead
    of the built-in byte tokenizer; it is part of the vocabulary (and its hash) and kept with the output.
    `caption_field` names the metadata field (table column, JSONL field, webdataset member such as "txt")
    whose text goes into each image / audio / video sample, `caption_position` "before" (text -> media,
    the default) or "after" its media block, tokenized with the run's text tokenizer."""
    start = time.perf_counter()
    ray_options = _engine_options(engine, ray_address, num_gpus_per_worker, concurrency, world_size)
    if audio_tokenizer is not None and audio_codec is not None:
        raise ValueError("give an audio tokenizer (--audio-tokenizer) or an audio codec (--audio-codec), not both: "
                         "audio inputs are tokenized by one of them")
    codec_vocab = audio_codec  # a codec's codes take the vocabulary's audio_codec ranges and the codec block
    if audio_codec is not None:
        audio_tokenizer = audio_codec
    if image_tokenizer is None and audio_tokenizer is None and video_tokenizer is None:
        raise ValueError("give an image, video and/or audio tokenizer")
    if isinstance(text_tokenizer, (str, os.PathLike)):
        text_tokenizer = load_text_tokenizer(text_tokenizer)
    for name, value, least in (("shard_size", shard_size, 1), ("batch_size", batch_size, 1), ("workers", workers, 0)):
        _check_int(name, value, least)
    rank, world_size = rank_and_world(rank, world_size)
    remote = None
    out_dir = local_path(os.fspath(out_dir))
    if is_url(out_dir):  # object storage: staged locally, each shard committed by uploading its record last
        remote = RemoteOut(out_dir)
        out_dir = remote.staging
    out_dir = pathlib.Path(out_dir)
    absolute = [_input_name(p) for p in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)]
    requested_size = image_size
    image_spec = code_spec_of(image_tokenizer, "image_tokenizer") if image_tokenizer is not None else None
    if image_spec is not None and image_mode != "native" and image_size is None:
        image_size = image_spec.image_size
    check_options(image_spec, image_size=image_size, image_mode=image_mode, max_grid=max_grid,
                  video_fps=video_fps, video_max_frames=video_max_frames)
    caption = _caption_options(caption_field, caption_position)
    items = discover(absolute, TableColumns(image=image_column, audio=audio_column, key=key_column))
    _check_tokenizers_for(items, image=image_tokenizer is not None, audio=audio_tokenizer is not None,
                          video=video_tokenizer is not None)
    vocab = Vocabulary.from_tokenizers(text_tokenizer, image_tokenizer=image_tokenizer,
                                       audio_tokenizer=audio_tokenizer if codec_vocab is None else None,
                                       audio_codec=codec_vocab, video_tokenizer=video_tokenizer,
                                       max_grid=max_grid)
    dtype = token_dtype(len(vocab))
    outdir.prepare(out_dir)
    if remote is not None:
        remote.prepare()
    with outdir.writing(out_dir):
        for name in (mf.PLAN_FILE, mf.MANIFEST_FILE, mf.FAILURES_FILE, outdir.WRITE_TEST):  # killed writes
            for leftover in outdir.stale_temporaries(out_dir, name):
                outdir.remove(leftover)
    given = {name: tok for name, tok in (("image", image_tokenizer), ("audio", audio_tokenizer),
                                         ("video", video_tokenizer)) if tok is not None}
    tokenizers = {name: describe(tok, copy_folder(name)) for name, tok in given.items()}
    total_shards = mf.num_shards(len(items), shard_size)
    plan = {
        "format": mf.FORMAT, "format_version": mf.FORMAT_VERSION, "mmtok_version": __version__,
        "dtype": dtype.name, "vocabulary": vocab.to_dict(), "tokenizers": tokenizers,
        "options": {"image_size": image_size, "image_mode": image_mode, "video_fps": video_fps,
                    "video_max_frames": video_max_frames, "max_grid": max_grid, "add_bos": True, "add_eos": True,
                    # only when given: runs made before captions existed keep their run.json
                    **({"caption_field": caption[0], "caption_position": caption[1]} if caption else {})},
        "inputs": {"paths": absolute, "count": len(items), "sha256": items_hash(items)},
        "shard_size": shard_size, "num_shards": total_shards,
    }
    mf.check_or_write_plan(out_dir, plan)  # before the copies: a refused run must not touch the old run's copies
    with outdir.writing(out_dir):
        for name, tok in given.items():
            save_copy(tok, out_dir, name)
        text_copy = text_tokenizer_bytes(text_tokenizer) if text_tokenizer is not None else None
        if text_copy is not None:
            (out_dir / TEXT_COPY).parent.mkdir(parents=True, exist_ok=True)
            for leftover in outdir.stale_temporaries((out_dir / TEXT_COPY).parent):
                outdir.remove(leftover)
            if not (out_dir / TEXT_COPY).is_file() or (out_dir / TEXT_COPY).read_bytes() != text_copy:
                outdir.write_atomic(out_dir / TEXT_COPY, text_copy)
    if remote is not None:
        remote.upload_plan()

    works, carried, done_before, redone, failures_before = [], {}, 0, [], 0
    for shard in mf.shards_of_rank(total_shards, rank, world_size):
        record, why = _shard_state(out_dir, remote, shard)
        if record is None and (remote.has_record(shard) if remote is not None
                               else (out_dir / f"{shard_name(shard)}.json").exists()):
            redone.append(why)  # a record whose files do not match it: redo the shard
        slots = mf.shard_slice(shard, shard_size, len(items))
        if record is not None and not (retry_failures and record["failures"]):
            done_before += 1
            failures_before += len(record["failures"])
            continue
        if record is not None:  # retry: keep the samples, redo only the failed items
            failed = sorted(f["slot"] for f in record["failures"])
            if remote is not None:
                remote.fetch_files(record)
            kept = iter(read_samples(out_dir, record))
            carried[shard] = {slot: next(kept) for slot in range(len(slots)) if slot not in set(failed)}
            works += [Work(shard, slot, items[slots[slot]]) for slot in failed]
        else:
            remove_leftovers(out_dir, shard)
            carried[shard] = {}
            works += [Work(shard, slot, items[i]) for slot, i in enumerate(slots)]

    video_tok = None
    frame_tokenizer = video_tokenizer if video_tokenizer is not None else image_tokenizer
    if frame_tokenizer is not None:
        from ..video import VideoTokenizer

        # the audio track gets its own copy of the audio tokenizer: it runs under inference_mode, the clips
        # under no_grad, and AudioTokenizer's reusable buffers must not be shared between the two modes
        track_tokenizer = copy.deepcopy(audio_tokenizer) if audio_tokenizer is not None else None
        video_tok = VideoTokenizer(frame_tokenizer, audio_tokenizer=track_tokenizer, fps=video_fps,
                                   max_frames=video_max_frames,
                                   size=image_size if video_tokenizer is None else requested_size,
                                   mode=image_mode,
                                   batch_size=batch_size)
    options = DecodeOptions(image_size=image_size, image_mode=image_mode,
                            downsample_factor=image_spec.spatial_downsample if image_spec is not None else 1,
                            video_tokenizer=video_tok, audio_tokenizer=audio_tokenizer, caption=caption)
    summary = Summary(rank, world_size, len(items), total_shards, done_before, 0, 0, 0, 0, 0, 0.0,
                      shards_redone=redone, failures_in_shards=failures_before)
    kill = _KillHook()
    if remote is not None:
        summary.on_shard = UploadShard(remote, kill)
    with outdir.writing(out_dir):
        if works:  # the manifest describes finished runs only: never leave a stale one next to shards being rewritten
            (out_dir / mf.MANIFEST_FILE).unlink(missing_ok=True)
        run = run_works if ray_options is None else ray_options.run
        run(works, carried, options, out_dir, vocab, dtype, (image_tokenizer, video_tokenizer), audio_tokenizer,
            batch_size, workers, summary, progress)
        if remote is not None:  # the store's records decide (Ray actors elsewhere uploaded theirs)
            summary.manifest = remote.finish(total_shards, kill)
        elif not mf.missing_shards(out_dir, plan):
            summary.manifest = mf.merge_manifests(out_dir)
    summary.seconds = time.perf_counter() - start
    return summary


def _shard_state(out_dir: pathlib.Path, remote, shard: int):
    """(record, None) if shard `shard` is complete, else (None, why). With a --out URL the store decides;
    a shard complete in the staging folder but not on the store (killed before its upload) is uploaded."""
    if remote is None:
        return record_problem(out_dir, shard)
    record, why = remote.store_record(shard)
    if record is None and record_problem(out_dir, shard)[0] is not None:
        remote.upload_shard(shard)
        record, why = remote.store_record(shard)
    return record, why


def _input_name(entry) -> str:
    """An input as discovery takes it and run.json records it: an absolute path, or a URL without credentials."""
    entry = local_path(os.fspath(entry))
    if is_url(entry):
        check_url(entry, "input")
        return entry
    return os.path.abspath(entry)


def _check_int(name: str, value, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} (--{name.replace('_', '-')}) must be an int >= {least}, got {value!r}")


def check_options(image_spec, *, image_size, image_mode, max_grid, video_fps, video_max_frames) -> None:
    """Refuse, before any work, options every image would fail with (naming the option)."""
    _check_int("max_grid", max_grid, 1)
    if video_max_frames is not None:
        _check_int("video_max_frames", video_max_frames, 1)
    if video_fps is not None and not (isinstance(video_fps, (int, float)) and 0 < video_fps < float("inf")):
        raise ValueError(f"video_fps (--video-fps) must be a positive number, got {video_fps!r}")
    if image_mode not in ("center_crop", "pad", "native"):
        raise ValueError(f"image_mode (--image-mode) must be center_crop, pad or native, got {image_mode!r}")
    if image_spec is None or image_size is None:
        return
    factor = int(image_spec.spatial_downsample)
    _check_int("image_size", image_size, 1)
    if image_mode != "native" and image_size % factor:
        raise ValueError(f"image_size (--image-size) {image_size} is not a multiple of the image tokenizer's "
                         f"downsample factor {factor}")
    grid = max(1, round(image_size / factor))
    if grid > max_grid:
        raise ValueError(f"image_size (--image-size) {image_size} gives a {grid}x{grid} grid, larger than max_grid "
                         f"(--max-grid) {max_grid}; raise --max-grid to at least {grid}")


def _caption_options(field, position) -> tuple | None:
    from .assembler import CAPTION_POSITIONS

    if position not in CAPTION_POSITIONS:
        raise ValueError(f"caption_position (--caption-position) must be before or after, got {position!r}")
    if field is None:
        return None
    if not isinstance(field, str) or not field:
        raise ValueError(f"caption_field (--caption-field) must be a non-empty metadata field name, got {field!r}")
    return (field, position)


def _engine_options(engine, ray_address, num_gpus_per_worker, concurrency, world_size):
    """None for the local engine; the Ray engine's options (Ray checked importable) for engine="ray"."""
    if engine == "local":
        return None
    if engine != "ray":
        raise ValueError(f"engine (--engine) must be local or ray, got {engine!r}")
    from .ray_engine import RayOptions

    return RayOptions.checked(address=ray_address, num_gpus_per_worker=num_gpus_per_worker,
                              concurrency=concurrency, world_size=world_size)


def _check_tokenizers_for(items, *, image: bool, audio: bool, video: bool) -> None:
    """Inputs of a modality without a tokenizer for it are a configuration error, found before any work."""
    needs = {IMAGE: (image, "an image tokenizer (--image-tokenizer)"),
             CONVERSATION: (image, "an image tokenizer (--image-tokenizer)"),
             VIDEO: (image or video, "an image or video tokenizer (--image-tokenizer / --video-tokenizer)"),
             AUDIO: (audio, "an audio tokenizer (--audio-tokenizer) or codec (--audio-codec)")}
    for item in items:
        given, what = needs.get(item.modality, (True, ""))
        if item.error is None and not given:
            raise ValueError(f"{item.where} is {item.modality} input, but no tokenizer for it was given: "
                             f"it needs {what}")


def run_works(works, carried, options, out_dir, vocab, dtype, image_tokenizers, audio_tokenizer, batch_size, workers,
              summary: Summary, progress: bool, kill=None) -> None:
    """Decode, tokenize and write the shards of `works` (each shard written once all its items are in):
    the local engine, and what a Ray actor runs on one shard (mmtok.data.ray_engine)."""
    from tqdm import tqdm

    if not works:
        return
    kill = _KillHook() if kill is None else kill
    expected: dict[int, int] = {}
    for work in works:
        expected[work.shard] = expected.get(work.shard, 0) + 1
    loader = torch.utils.data.DataLoader(
        DecodingDataset(works, options), batch_size=min(batch_size, 16), shuffle=False, num_workers=workers,
        collate_fn=WorkerBatch(audio_tokenizer), prefetch_factor=4 if workers else None)
    assemblers: dict[int, ShardAssembler] = {}
    bar = tqdm(total=len(works), unit="item", disable=not progress, dynamic_ncols=True,
               desc=f"tokenize rank {summary.rank}/{summary.world_size}" if summary.world_size > 1 else "tokenize")
    with bar:
        for batch in loader:
            for result in batch:
                shard = result.work.shard
                assembler = assemblers.setdefault(shard, ShardAssembler(
                    vocab, image_tokenizer=image_tokenizers[0], video_tokenizer=image_tokenizers[1],
                    audio_tokenizer=audio_tokenizer, batch_size=batch_size, caption=options.caption))
                assembler.add(result)
                summary.processed += 1
                kill("samples", shard)
                expected[shard] -= 1
                if expected[shard] == 0:
                    _write(out_dir, shard, assemblers.pop(shard).finish(), carried.pop(shard), dtype, summary, kill)
                    bar.set_postfix(failed=summary.failures, refresh=False)
            bar.update(len(batch))


def _write(out_dir, shard, results, carried, dtype, summary: Summary, kill) -> None:
    merged = {**carried, **results}
    ordered = [merged[slot] for slot in sorted(merged)]
    record = write_shard(out_dir, shard, ordered, dtype, kill_hook=kill)
    if summary.on_shard is not None:
        summary.on_shard(shard)
    summary.shards_written += 1
    summary.samples += sum(isinstance(r, SampleRecord) for r in results.values())
    summary.failures += sum(isinstance(r, Failure) for r in results.values())
    summary.failures_in_shards += len(record["failures"])
    if len(summary.failed_keys) < MAX_LISTED_FAILURES:
        summary.failed_keys += [r.work.item.key for r in results.values() if isinstance(r, Failure)]
    summary.tokens += record["tokens"]
