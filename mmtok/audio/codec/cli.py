"""Command-line tools for the codec: `mmtok codec-convert`, `codec-encode`, `codec-decode` (see `register`).

Codes are stored as .npy arrays of shape (n_codebooks, frames) (int16: codebook sizes are <= 32768).
"""
from __future__ import annotations

import argparse
import pathlib

from ..._cli import encode_files, for_each_file, load_codes


def _load_codec(args):
    from .model import AudioCodec

    if args.dac is not None:
        return AudioCodec.from_dac(args.dac)
    return AudioCodec.from_pretrained(args.codec)


def _add_codec_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--codec", type=pathlib.Path, help="AudioCodec directory (config.json + model.safetensors)")
    group.add_argument("--dac", type=pathlib.Path, help="DAC weight file, e.g. weights_16khz.pth")
    parser.add_argument("--chunk-seconds", type=float, default=None, help="chunk length for long audio")


def _convert(args) -> int:
    from .model import AudioCodec

    out = AudioCodec.from_dac(args.dac_file).save_pretrained(args.out)
    print(f"wrote {out}")
    return 0


def _encode(args) -> int:
    codec = _load_codec(args)
    return encode_files(args.audio, args.out, lambda path: codec.encode_file(path, chunk_seconds=args.chunk_seconds),
                        codec.codebook_size)


def _decode(args) -> int:
    codec = _load_codec(args)
    args.out.mkdir(parents=True, exist_ok=True)

    def decode_one(path: pathlib.Path) -> str:
        target = args.out / f"{path.stem}.wav"
        return str(codec.decode_to_file(load_codes(path), target, chunk_seconds=args.chunk_seconds))

    return for_each_file(args.codes, decode_one)


def register(subparsers) -> None:
    p = subparsers.add_parser("codec-convert", help="DAC weight file -> AudioCodec directory (safetensors)")
    p.add_argument("dac_file", type=pathlib.Path)
    p.add_argument("out", type=pathlib.Path)
    p.set_defaults(func=_convert)

    p = subparsers.add_parser("codec-encode", help="audio files -> codec codes (.npy, n_codebooks x frames)")
    p.add_argument("audio", nargs="+", type=pathlib.Path)
    _add_codec_options(p)
    p.add_argument("--out", required=True, type=pathlib.Path, help="output directory")
    p.set_defaults(func=_encode)

    p = subparsers.add_parser("codec-decode", help="codec codes (.npy) -> 16 kHz wav files")
    p.add_argument("codes", nargs="+", type=pathlib.Path)
    _add_codec_options(p)
    p.add_argument("--out", required=True, type=pathlib.Path, help="output directory")
    p.set_defaults(func=_decode)
