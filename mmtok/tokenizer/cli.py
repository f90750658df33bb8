"""`mmtok convert SRC OUT`: any layout `mmtok.load` reads -> mmtok's own folder (config.json + model.safetensors).

The written folder is read back and compared with the loaded tokenizer (same class, config and every tensor)
before the command reports success, so a conversion that would not round-trip is an error, not a surprise later.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys


def parse_options(pairs) -> dict:
    """['config_path=a.yaml', 'codebook_l2_norm=true'] -> {'config_path': 'a.yaml', 'codebook_l2_norm': True}
    (values parsed as JSON where they are JSON, else kept as strings)."""
    options = {}
    for pair in pairs or ():
        key, eq, value = pair.partition("=")
        if not eq or not key.isidentifier():
            raise ValueError(f"--option {pair!r}: expected NAME=VALUE")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def same_tokenizer(a, b) -> list[str]:
    """What differs between two tokenizers (class, config, tensor names, dtypes, values); empty when identical."""
    import torch

    problems = []
    if type(a) is not type(b):
        problems.append(f"class {type(a).__name__} != {type(b).__name__}")
    if a.config != b.config:
        problems.append("config differs")
    sa, sb = a.state_dict(), b.state_dict()
    if set(sa) != set(sb):
        problems.append(f"tensor names differ: {sorted(set(sa) ^ set(sb))[:8]}")
    for key in sorted(set(sa) & set(sb)):
        x, y = sa[key].detach().cpu(), sb[key].detach().cpu()
        if x.shape != y.shape or not torch.equal(x.to(y.dtype), y):
            problems.append(f"tensor {key} differs")
    return problems


def convert(src, out, *, format: str | None = None, overwrite: bool = False, **options):
    """Load `src` with `mmtok.load(src, format=format, **options)`, save it to `out` and verify the copy;
    returns the converted tokenizer. `out` must not exist (or be an empty folder) unless `overwrite`."""
    from .registry import load

    out = pathlib.Path(out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        if not overwrite:
            raise FileExistsError(f"{out} exists and is not an empty folder (use --overwrite to replace it)")
        if out.is_dir():
            shutil.rmtree(out)
        else:
            out.unlink()
    tokenizer = load(src, format=format, **options)
    tokenizer.save_pretrained(out)
    again = load(out, format="mmtok")
    problems = same_tokenizer(tokenizer, again)
    if problems:
        raise RuntimeError(f"{out}: the converted folder does not reproduce {src}: " + "; ".join(problems))
    return tokenizer


def _convert(args) -> int:
    try:
        tokenizer = convert(args.src, args.out, format=args.format, overwrite=args.overwrite,
                            **parse_options(args.option))
    except (OSError, ValueError, RuntimeError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    spec = tokenizer.code_spec
    print(f"{args.src} -> {args.out}: {type(tokenizer).__name__}, {spec.modality} codes {spec.axes}, "
          f"codebooks {list(spec.codebook_sizes)}")
    return 0


def register(subparsers) -> None:
    from .registry import layout_names

    p = subparsers.add_parser("convert", help="any tokenizer layout mmtok.load reads -> mmtok's own folder",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="a file or folder in a supported layout (see docs/tokenizer-zoo.md)")
    p.add_argument("out", help="the folder to write (config.json + model.safetensors)")
    p.add_argument("--format", choices=layout_names(), help="force a layout instead of detecting it")
    p.add_argument("--option", action="append", metavar="NAME=VALUE",
                   help="an option for the layout's loader, e.g. config_path=vqgan.yaml (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=_convert)
