"""Command-line tools for the image tokenizer: `mmtok image-convert`, `image-encode`, `image-decode`.

Codes are stored one image per .npy file, shape (h, w), int16 (int32 for codebooks over 32768 codes), so that
generated codes can be written the same way and turned back into pictures. For whole datasets (shards, resume,
many processes) use `mmtok tokenize`.
"""
from __future__ import annotations

import argparse
import pathlib

from .._cli import encode_files, for_each_file, load_codes
from .preprocess import to_pil


def _load_tokenizer(args):
    from ..tokenizer import load
    from ..tokenizer.protocol import expect_modality
    from .tokenizer import ImageTokenizer

    kwargs = {"dtype": "bf16"} if getattr(args, "bf16", False) else {}
    if args.tokenizer is None:
        return ImageTokenizer.default(**kwargs)
    tokenizer = load(args.tokenizer, **kwargs)
    expect_modality(tokenizer, "image", f"--tokenizer {args.tokenizer}")
    return tokenizer


def _add_tokenizer_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokenizer", type=pathlib.Path, default=None,
                        help="an image tokenizer, anything mmtok.load reads (docs/tokenizer-zoo.md); default: the "
                             "shipped one")
    parser.add_argument("--out", required=True, type=pathlib.Path, help="output directory")


def _convert(args) -> int:
    from .tokenizer import ImageTokenizer

    if args.taming is not None:
        if args.config is None:
            raise SystemExit("image-convert: --taming needs --config (the model's yaml)")
        tok = ImageTokenizer.from_taming(args.taming, args.config)
    else:
        tok = ImageTokenizer.from_llamagen(args.llamagen, config_path=args.config)
    tok.save_pretrained(args.out)
    print(f"wrote {args.out} ({tok})")
    return 0


def _encode(args) -> int:
    tok = _load_tokenizer(args)
    return encode_files(args.images, args.out, lambda path: tok.encode([path], size=args.size, mode=args.mode)[0],
                        tok.code_spec.codebook_size)


def _decode(args) -> int:
    tok = _load_tokenizer(args)
    args.out.mkdir(parents=True, exist_ok=True)

    def decode_one(path: pathlib.Path) -> str:
        codes = load_codes(path)
        if codes.ndim == 3 and codes.shape[0] == 1:
            codes = codes[0]
        if codes.ndim != 2:
            raise ValueError(f"expected codes of shape (h, w), got {codes.shape}")
        target = args.out / f"{path.stem}.png"
        to_pil(tok.decode(codes))[0].save(target)
        return str(target)

    return for_each_file(args.codes, decode_one)


def register(subparsers) -> None:
    p = subparsers.add_parser("image-convert", help="taming / LlamaGen VQ-GAN checkpoint -> ImageTokenizer directory")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--taming", type=pathlib.Path, help="taming-transformers (or Chameleon) Lightning checkpoint")
    source.add_argument("--llamagen", type=pathlib.Path, help="LlamaGen VQ checkpoint ({'model'} or {'ema'})")
    p.add_argument("--config", type=pathlib.Path, help="taming: its yaml (required); LlamaGen: optional JSON of ModelArgs")
    p.add_argument("out", type=pathlib.Path)
    p.set_defaults(func=_convert)

    p = subparsers.add_parser("image-encode", help="images -> codes (.npy of shape h x w, one per image)")
    p.add_argument("images", nargs="+", type=pathlib.Path)
    _add_tokenizer_options(p)
    p.add_argument("--size", type=int, default=None, help="resize the short side to this (default: the model's size)")
    p.add_argument("--mode", choices=("center_crop", "pad", "native"), default="center_crop",
                   help="center_crop (as trained), pad (keep the aspect ratio) or native (the image's own size)")
    p.add_argument("--bf16", action="store_true", help="bf16 encoder (mixed precision, fp32 lookup)")
    p.set_defaults(func=_encode)

    p = subparsers.add_parser("image-decode", help="codes (.npy, h x w) -> PNG images")
    p.add_argument("codes", nargs="+", type=pathlib.Path)
    _add_tokenizer_options(p)
    p.set_defaults(func=_decode)
