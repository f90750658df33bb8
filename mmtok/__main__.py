"""Command line: `python -m mmtok info` (and the tools that later issues add)."""
from __future__ import annotations

import argparse
import json
import sys


def _cmd_info(args) -> int:
    from .ops import info

    print(json.dumps(info(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmtok", description="multimodal tokenizers")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="which nearest-code backends are available, and why not")
    p.set_defaults(func=_cmd_info)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
