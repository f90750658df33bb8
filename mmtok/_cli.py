"""Shared plumbing of the per-file commands (`image-encode`, `codec-decode`, ...): every input is tried, a bad one
is reported with its path and skipped, and the exit status says whether any failed, so one unreadable file
neither stops the run nor loses the outputs already written."""
from __future__ import annotations

import pathlib
import sys
from collections.abc import Callable, Iterable

import numpy as np


def for_each_file(paths: Iterable[pathlib.Path], work: Callable[[pathlib.Path], str]) -> int:
    """Run work(path) for every path (it returns a line to print); 0 if all succeeded, else 1."""
    failed = 0
    for path in paths:
        try:
            print(f"{path} -> {work(path)}", flush=True)
        except (OSError, ValueError, RuntimeError) as exc:
            failed += 1
            print(f"error: {path}: {exc}", file=sys.stderr, flush=True)
    if failed:
        print(f"{failed} input(s) failed (see the errors above); the other outputs were written", file=sys.stderr)
    return 1 if failed else 0


def code_dtype(vocab_size: int) -> np.dtype:
    """The narrowest signed integer dtype that holds codes in [0, vocab_size)."""
    return np.dtype(np.int16) if vocab_size <= 1 << 15 else np.dtype(np.int32)


def encode_files(paths: Iterable[pathlib.Path], out_dir: pathlib.Path, encode: Callable, vocab_size: int) -> int:
    """encode(path) -> integer tensor of codes, saved as out_dir/<stem>.npy in code_dtype(vocab_size); as for_each_file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dtype = code_dtype(vocab_size)

    def encode_one(path: pathlib.Path) -> str:
        codes = encode(path)
        target = out_dir / f"{path.stem}.npy"
        np.save(target, codes.cpu().numpy().astype(dtype))
        return f"{target} {tuple(codes.shape)}"

    return for_each_file(paths, encode_one)


def load_codes(path: pathlib.Path) -> np.ndarray:
    """An integer .npy array of codes; FileNotFoundError / ValueError naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"codes file not found: {path}")
    try:
        codes = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"not a readable .npy file ({exc})") from None
    if codes.dtype.kind not in "iu":
        raise ValueError(f"expected an integer array, got {codes.dtype}")
    return codes.astype(np.int64)
