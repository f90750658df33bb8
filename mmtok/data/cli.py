"""`mmtok tokenize`, `mmtok verify` and `mmtok merge-manifests` (registered by mmtok/__main__.py)."""
from __future__ import annotations

import argparse
import os
import sys

EXIT_STATUS = "exit status: 0 all done, 1 finished with failed inputs (or problems found), 2 usage or configuration error"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "tokenize", help="tokenize a dataset (folder, JSONL/JSON manifest, Qwen-VL file, webdataset .tar) into shards",
        description="Resumable, sharded dataset tokenization. Rerun the same command to resume; under torchrun "
                    "(RANK / WORLD_SIZE) every rank writes its own shards.", epilog=EXIT_STATUS)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="folder, .jsonl/.json manifest, Qwen-VL .json, .tar, "
                                                                ".parquet / .arrow table or datasets folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--image-tokenizer", help="an image tokenizer: anything mmtok.load reads (mmtok folder, taming "
                                             ".ckpt, LlamaGen .pt, transformers / diffusers folder; docs/tokenizer-zoo.md)")
    p.add_argument("--image-tokenizer-config", help="config of a checkpoint given to --image-tokenizer")
    p.add_argument("--video-tokenizer", help="a spatio-temporal video tokenizer (codes (t, h, w), e.g. Emu3) for the "
                                             "videos, anything mmtok.load reads; its latent frames share the image range")
    p.add_argument("--audio-tokenizer", help="AudioTokenizer save_pretrained folder, or a spec like 'bestrq:seed=0'")
    p.add_argument("--audio-codec", help="an audio codec for the audio inputs and video soundtracks instead (tokens "
                                         "that decode to sound): anything mmtok.load reads (DAC .pth, SNAC / "
                                         "SpeechTokenizer release folders, transformers EnCodec / Mimi / DAC "
                                         "folders, mmtok folders; docs/audio_codec.md)")
    p.add_argument("--batch-size", type=int, default=32, help="inputs per tokenizer call (default 32)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes decoding files (default 2)")
    p.add_argument("--shard-size", type=int, default=1000, help="inputs per shard (default 1000)")
    p.add_argument("--image-size", type=int, help="preprocessing size (default: the tokenizer's image_size)")
    p.add_argument("--image-mode", default="center_crop", choices=("center_crop", "pad", "native"))
    p.add_argument("--video-fps", type=float, default=1.0, help="frames sampled per second of video (default 1)")
    p.add_argument("--video-max-frames", type=int, help="at most this many frames per video")
    p.add_argument("--max-grid", type=int, default=64, help="largest image grid side in the vocabulary (default 64)")
    p.add_argument("--device", help="device for the tokenizers (default cpu; under torchrun 'cuda' means cuda:$LOCAL_RANK)")
    p.add_argument("--retry-failures", action="store_true", help="redo only the inputs listed in failures")
    p.add_argument("--rank", type=int, help="this process's rank (default: $RANK or 0)")
    p.add_argument("--world-size", type=int, help="number of ranks (default: $WORLD_SIZE or 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--engine", default="local", choices=("local", "ray"),
                   help="local (this machine, DataLoader workers; default) or ray (a Ray actor pool does the "
                        "shards; needs the ray extra: pip install 'mmtok[ray]')")
    p.add_argument("--ray-address", help="Ray cluster to join (e.g. 'auto' or HOST:PORT; default: $RAY_ADDRESS, "
                                         "else a local Ray is started)")
    p.add_argument("--num-gpus-per-worker", type=float, default=0,
                   help="GPUs per Ray actor (default 0: CPU actors); the tokenizers run on its GPU")
    p.add_argument("--concurrency", type=int, help="Ray actors (default: as many as the cluster's CPUs, or GPUs, "
                                                   "allow)")
    p.add_argument("--image-column", help="Parquet / datasets inputs: the column with the images (a datasets Image "
                                          "struct or binary; default: detected)")
    p.add_argument("--audio-column", help="Parquet / datasets inputs: the column with the audio (a datasets Audio "
                                          "struct or binary; default: detected)")
    p.add_argument("--key-column", help="Parquet / datasets inputs: the column with the sample keys (default: "
                                        "__key__, key or id if present, else <file>#<row>)")
    p.add_argument("--text-tokenizer", help="the text tokenizer for conversation text: a tokenizer.json (tokenizers "
                                            "library) or a transformers tokenizer folder with one (default: the "
                                            "built-in UTF-8 byte tokenizer)")
    p.add_argument("--caption-field", help="put each image / audio / video item's caption into its sample as text, "
                                           "from this metadata field (a Parquet / datasets column, a JSONL "
                                           "field, a webdataset member such as txt); tokenized with "
                                           "--text-tokenizer (default: captions stay metadata)")
    p.add_argument("--caption-position", default="before", choices=("before", "after"),
                   help="the caption before (text-to-media order, default) or after the media block")
    p.set_defaults(func=_tokenize)

    p = subparsers.add_parser("verify", help="check token shards against their index and manifest",
                              epilog="exit status: 0 intact, 1 problems found, 2 not an mmtok tokenize output")
    p.add_argument("directory")
    p.set_defaults(func=_verify)

    p = subparsers.add_parser("merge-manifests", help="write manifest.json + failures.jsonl once every rank finished",
                              epilog="exit status: 0 written, 2 shards missing or corrupt, or not an output folder")
    p.add_argument("directory")
    p.set_defaults(func=_merge)


def _tokenize(args: argparse.Namespace) -> int:
    from .outdir import OutputError
    from .pipeline import tokenize_dataset
    from .tokenizers import load_audio_codec, load_audio_tokenizer, load_image_tokenizer, load_video_tokenizer

    device = args.device
    if args.engine == "ray" and device not in (None, "cpu"):
        print("mmtok tokenize: error: with --engine ray the actors' device follows --num-gpus-per-worker "
              "(do not give --device)", file=sys.stderr)
        return 2
    if device == "cuda" and "LOCAL_RANK" in os.environ:  # torchrun: one GPU per local rank
        device = f"cuda:{os.environ['LOCAL_RANK']}"
    try:
        if args.engine == "ray":  # refused before any tokenizer is loaded
            from .ray_engine import require_ray

            require_ray()
        image_tok = (load_image_tokenizer(args.image_tokenizer, config_path=args.image_tokenizer_config,
                                          device=device) if args.image_tokenizer else None)
        video_tok = load_video_tokenizer(args.video_tokenizer, device=device) if args.video_tokenizer else None
        if args.audio_tokenizer and args.audio_codec:
            raise ValueError("--audio-tokenizer and --audio-codec both given: audio inputs are tokenized by one")
        audio_tok = load_audio_tokenizer(args.audio_tokenizer) if args.audio_tokenizer else None
        audio_codec = load_audio_codec(args.audio_codec, device=device) if args.audio_codec else None
        summary = tokenize_dataset(
            args.inputs, args.out, image_tokenizer=image_tok, audio_tokenizer=audio_tok, video_tokenizer=video_tok,
            audio_codec=audio_codec,
            batch_size=args.batch_size,
            workers=args.workers, shard_size=args.shard_size, image_size=args.image_size, image_mode=args.image_mode,
            video_fps=args.video_fps, video_max_frames=args.video_max_frames, max_grid=args.max_grid,
            retry_failures=args.retry_failures, rank=args.rank, world_size=args.world_size,
            progress=not args.no_progress, engine=args.engine, ray_address=args.ray_address,
            num_gpus_per_worker=args.num_gpus_per_worker, concurrency=args.concurrency,
            image_column=args.image_column, audio_column=args.audio_column, key_column=args.key_column,
            text_tokenizer=args.text_tokenizer, caption_field=args.caption_field,
            caption_position=args.caption_position)
    except RuntimeError as exc:
        from .ray_engine import ShardsLost

        if not isinstance(exc, ShardsLost):
            raise
        print(f"mmtok tokenize: error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, NotADirectoryError, OutputError) as exc:
        print(f"mmtok tokenize: error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(summary, args.out))
    failed = summary.manifest["counts"]["failures"] if summary.manifest is not None else summary.failures_in_shards
    return 1 if failed else 0


def format_summary(summary, out) -> str:
    from .items import output_text

    out = output_text(os.fspath(out))
    where = f" (rank {summary.rank} of {summary.world_size})" if summary.world_size > 1 else ""
    lines = [f"mmtok tokenize{where}: {summary.inputs} inputs in {summary.shards_total} shards; "
             f"{summary.shards_done_before} already complete, {summary.shards_written} written now",
             f"  this run: {summary.processed} items -> {summary.samples} samples, {summary.failures} failed, "
             f"{summary.tokens} tokens in {summary.seconds:.1f} s ({summary.items_per_second:.1f} items/s)"]
    for why in summary.shards_redone:
        lines.append(f"  redone: {why}")
    if summary.failed_keys:
        shown = ", ".join(summary.failed_keys[:5]) + (" ..." if len(summary.failed_keys) > 5 else "")
        lines.append(f"  failed: {shown}")
    if summary.manifest is not None:
        counts = summary.manifest["counts"]
        parts = ", ".join(f"{m}: {c['samples']} samples / {c['failures']} failed / {c['tokens']} tokens"
                          for m, c in counts["by_modality"].items())
        lines.append(f"  dataset: {counts['samples']} samples, {counts['failures']} failures, {counts['tokens']} "
                     f"tokens ({summary.manifest['dtype']}); {parts}")
        lines.append(f"  wrote {out}/manifest.json" + (f" and {out}/failures.jsonl ({counts['failures']} records; "
                                                        f"--retry-failures redoes them)" if counts["failures"] else ""))
    else:
        lines.append("  other ranks still running: the last rank to finish writes manifest.json "
                     "(or run `mmtok merge-manifests`)")
    return "\n".join(lines)


def _verify(args: argparse.Namespace) -> int:
    from .verification import NotAnOutput, verify

    try:
        problems = verify(args.directory)
    except NotAnOutput as exc:
        print(f"mmtok verify: error: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"FAIL {problem}")
    if problems:
        print(f"mmtok verify: {len(problems)} problem(s) in {args.directory}")
        return 1
    print(f"mmtok verify: {args.directory} is intact")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from .manifest import merge_manifests
    from .outdir import OutputError

    try:
        manifest = merge_manifests(args.directory)
    except (ValueError, FileNotFoundError, OutputError) as exc:
        print(f"mmtok merge-manifests: error: {exc}", file=sys.stderr)
        return 2
    c = manifest["counts"]
    print(f"mmtok merge-manifests: {len(manifest['shards'])} shards, {c['samples']} samples, "
          f"{c['failures']} failures, {c['tokens']} tokens -> {args.directory}/manifest.json")
    return 0
