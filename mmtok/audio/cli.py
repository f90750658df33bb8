"""`mmtok audio-tokens`: BEST-RQ tokens for audio files, one JSON line per file (see `register`).

Each line is {"path", "tokens": [[...] per codebook], "num_codebooks", "tokens_per_second", "seconds"}; the
tokenizer's config is saved next to the output (`<out>.tokenizer/`) so the tokens can be reproduced.
"""
from __future__ import annotations

import argparse
import json
import pathlib

from .._cli import for_each_file


def _audio_tokens(args) -> int:
    from .tokenizer import AudioTokenizer

    if args.tokenizer is not None:
        tok = AudioTokenizer.from_pretrained(args.tokenizer)
    else:
        tok = AudioTokenizer(seed=args.seed, num_codebooks=args.num_codebooks, frontend=args.frontend,
                             frontend_variant=args.frontend_variant)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as f:

        def tokenize_one(path: pathlib.Path) -> str:
            tokens = tok.encode_file(path, chunk_seconds=args.chunk_seconds)
            f.write(json.dumps({"path": str(path), "tokens": tokens.tolist(), "num_codebooks": tok.num_codebooks,
                                "tokens_per_second": tok.tokens_per_second,
                                "seconds": tokens.shape[1] / tok.tokens_per_second}) + "\n")
            f.flush()
            return f"{tokens.shape[1]} tokens per codebook"

        status = for_each_file(args.inputs, tokenize_one)
    saved = args.out.with_name(args.out.name + ".tokenizer")
    tok.save_pretrained(saved)
    print(f"wrote {args.out} and the tokenizer to {saved}")
    return status


def register(subparsers) -> None:
    p = subparsers.add_parser("audio-tokens", help="BEST-RQ tokens (25 per second) for audio files, as JSON Lines")
    p.add_argument("inputs", nargs="+", type=pathlib.Path, help="audio files (wav, flac, ogg, mp3, ...; any rate)")
    p.add_argument("--out", required=True, type=pathlib.Path, help="output .jsonl file")
    p.add_argument("--tokenizer", type=pathlib.Path, help="AudioTokenizer directory (from save_pretrained)")
    p.add_argument("--seed", type=int, default=0, help="projection/codebook seed when no --tokenizer is given")
    p.add_argument("--num-codebooks", type=int, default=1)
    p.add_argument("--frontend", choices=("kaldi", "whisper"), default="kaldi")
    p.add_argument("--frontend-variant", choices=("relative-floor", "absolute-floor"), default="relative-floor",
                   help="log floor relative to each file's level (default), or v1's absolute floor")
    p.add_argument("--chunk-seconds", type=float, default=None,
                   help="stream each file in chunks of this many seconds (flat memory, same tokens)")
    p.set_defaults(func=_audio_tokens)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="mmtok")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)
