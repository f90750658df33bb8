"""Command line: `mmtok <command>` (also `python -m mmtok <command>`).

Each command lives with the code it drives and exposes `register(subparsers)`; this file only collects
them, so a tool whose optional dependencies are missing does not break the others.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys

# modules that define commands, in the order they are listed by --help
COMMAND_MODULES = (
    "mmtok.demo",
    "mmtok.tokenizer.cli",
    "mmtok.image.cli",
    "mmtok.audio.cli",
    "mmtok.audio.codec.cli",
    "mmtok.stream.cli",
    "mmtok.data.cli",
    "mmtok.train.cli",
)


def _cmd_info(args) -> int:
    from .ops import info

    print(json.dumps(info(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmtok", description="multimodal tokenizers: images, video, audio <-> tokens")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="which nearest-code backends are available, and why not")
    p.set_defaults(func=_cmd_info)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # that tool is not part of this install
            raise
        module.register(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
