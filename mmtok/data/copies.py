"""The tokenizer copies kept with an output (`tokenizers/image`, `tokenizers/audio`): written atomically,
checked on every run, and listed with their files' sha256 in the manifest so `verify` can check them.

A run saves the tokenizer into a temporary folder and compares its files with the copy already there:
equal, the copy is kept; different (a stale copy from another tokenizer, or a damaged one), the copy is
replaced. So the copy always decodes the tokens it sits next to.
"""
from __future__ import annotations

import os
import pathlib

from .outdir import normalise_modes, remove, stale_temporaries, temp_suffix, writing
from .shards import file_sha256

COPIES = "tokenizers"


def folder_digests(folder: pathlib.Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder`, sorted."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): file_sha256(p) for p in files}


def copy_folder(name: str) -> str:
    """Where the copy of tokenizer `name` ("image", "audio", "video") lives, relative to the output."""
    return f"{COPIES}/{name}"


def save_copy(tokenizer, out_dir: pathlib.Path, name: str) -> str:
    """save_pretrained into out_dir/tokenizers/name unless an identical copy is there; returns the
    relative folder. Safe against a kill at any moment (leftovers of a dead process are removed on the
    next run) and against several ranks doing it at once (they write identical bytes)."""
    relative = copy_folder(name)
    target = out_dir / relative
    parent = target.parent
    with writing(target):
        parent.mkdir(parents=True, exist_ok=True)
        for leftover in stale_temporaries(parent, f".{name}*"):
            remove(leftover)
        fresh = parent / f".{name}{temp_suffix()}"
        remove(fresh)
        tokenizer.save_pretrained(fresh)
        normalise_modes(fresh)
        wanted = folder_digests(fresh)
        for _ in range(5):
            if target.is_dir():
                if folder_digests(target) == wanted:
                    break
                old = parent / f".{name}.old{temp_suffix()}"
                try:
                    os.rename(target, old)  # stale or damaged: move it aside, then put the fresh copy in place
                except FileNotFoundError:
                    continue
                remove(old)
            try:
                os.rename(fresh, target)
                break
            except OSError:  # another rank got there first: compare again
                continue
        remove(fresh)
    return relative


def copy_problems(directory: pathlib.Path, manifest: dict) -> list[str]:
    """How the tokenizer copies differ from the file digests the manifest lists (empty when intact)."""
    problems = []
    listed = manifest.get("tokenizer_files")
    if listed is None:  # a manifest from before the copies were listed: nothing to compare with
        return []
    if not isinstance(listed, dict):
        return ["manifest: tokenizer_files is not an object"]
    for name, entry in sorted(manifest.get("tokenizers", {}).items()):
        files = listed.get(name)
        folder = directory / str(entry.get("path", f"{COPIES}/{name}")) if isinstance(entry, dict) else None
        if not isinstance(files, dict) or folder is None:
            problems.append(f"tokenizer {name}: the manifest lists no files for it")
            continue
        if not folder.is_dir():
            problems.append(f"tokenizer {name}: copy {folder.relative_to(directory)} is missing")
            continue
        found = folder_digests(folder)
        for file, digest in sorted(files.items()):
            if file not in found:
                problems.append(f"tokenizer {name}: {file} is missing from the copy")
            elif found[file] != digest:
                problems.append(f"tokenizer {name}: {file} differs from the manifest (stale or corrupted copy)")
        for file in sorted(set(found) - set(files)):
            problems.append(f"tokenizer {name}: {file} is in the copy but not in the manifest")
    return problems
