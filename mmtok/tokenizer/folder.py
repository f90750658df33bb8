"""mmtok's own saved layout, shared by every tokenizer family: a folder with `config.json` + `model.safetensors`.

`config.json` carries a format marker: `"format"` names the family (e.g. "mmtok.image.vqgan") and
`"format_version"` its version, beside the family's own config fields; `model.safetensors` holds every tensor
(on CPU, contiguous, in the dtype the family keeps them) under the family's key names, with the same marker in
its metadata. Both files are written deterministically (the same tokenizer gives the same bytes) and atomically
(temporary name, then renamed; the config last, so a folder with a config is complete). Folders written before
this layer existed keep loading: their markers are recognised in `folder_format` (BEST-RQ's
`"tokenizer": "best-rq"`), and a folder without `format_version` is version 1.
"""
from __future__ import annotations

import json
import os
import pathlib
from dataclasses import dataclass

import torch

from .weights import read_safetensors, write_safetensors

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_KEY = "format"
VERSION_KEY = "format_version"
# how folders saved before the shared layer are recognised: (config key, value) -> format
LEGACY_MARKERS = {("tokenizer", "best-rq"): "mmtok.audio.bestrq"}


@dataclass
class SavedFolder:
    """What a saved folder holds: its format, the family's config (marker removed), and its tensors."""

    format: str
    version: int
    config: dict
    tensors: dict[str, torch.Tensor]
    config_path: pathlib.Path
    weights_path: pathlib.Path | None


def read_config(path) -> dict:
    """A JSON object from a file; FileNotFoundError / ValueError naming the file."""
    path = pathlib.Path(os.fspath(path))
    if not path.is_file():
        raise FileNotFoundError(f"config not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def folder_format(config: dict) -> str | None:
    """The mmtok format a folder's config declares (also for pre-protocol folders), or None."""
    fmt = config.get(FORMAT_KEY)
    if isinstance(fmt, str) and fmt.startswith("mmtok."):
        return fmt
    for (key, value), legacy in LEGACY_MARKERS.items():
        if config.get(key) == value:
            return legacy
    return None


def save_folder(directory, format: str, config: dict, tensors: dict[str, torch.Tensor], *,
                version: int = 1, metadata: dict[str, str] | None = None) -> pathlib.Path:
    """Write `config.json` (format marker first, then `config` with its own marker keys dropped) and
    `model.safetensors` into `directory` (created if needed); returns the directory. `metadata`: extra
    string entries for the safetensors header (e.g. how a trained model was made)."""
    if not isinstance(format, str) or not format.startswith("mmtok."):
        raise ValueError(f"format must be a string starting with 'mmtok.', got {format!r}")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"format_version must be a positive int, got {version!r}")
    directory = pathlib.Path(os.fspath(directory))
    body = {k: v for k, v in config.items() if k not in (FORMAT_KEY, VERSION_KEY)}
    data = {FORMAT_KEY: format, VERSION_KEY: version, **body}
    try:
        text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{format}: the config is not JSON-serialisable ({exc})") from None
    directory.mkdir(parents=True, exist_ok=True)
    header = {str(k): str(v) for k, v in (metadata or {}).items()}
    header.update({"format": "pt", "mmtok_format": format, "mmtok_format_version": str(version)})
    write_safetensors(directory / WEIGHTS_NAME, dict(tensors), metadata=header)
    temporary = directory / f".{CONFIG_NAME}.tmp-{os.getpid()}"
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, directory / CONFIG_NAME)
    return directory


def read_folder(directory, *, expected_format: str | None = None, weights_required: bool = True,
                max_version: int | None = None) -> SavedFolder:
    """Read a folder written by `save_folder` (or by an earlier mmtok); errors name the file at fault.

    `expected_format` refuses another family's folder; `max_version` a folder written by a newer mmtok."""
    text = os.fsdecode(os.fspath(directory))
    if "://" in text:  # checked on the text: pathlib folds "https://" into "https:/"
        raise ValueError(f"expected a local folder, got {text!r} (mmtok downloads nothing)")
    directory = pathlib.Path(text)
    if not directory.is_dir():
        raise FileNotFoundError(f"tokenizer folder not found: {directory}")
    config_path = directory / CONFIG_NAME
    config = read_config(config_path)
    fmt = folder_format(config)
    if fmt is None:
        raise ValueError(f"{config_path}: not an mmtok tokenizer config (no 'format' starting with 'mmtok.')")
    if expected_format is not None and fmt != expected_format:
        raise ValueError(f"{config_path}: format is {fmt!r}, expected {expected_format!r}")
    version = config.get(VERSION_KEY, 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{config_path}: format_version must be a positive int, got {version!r}")
    if max_version is not None and version > max_version:
        raise ValueError(f"{config_path}: {fmt} format_version {version} is newer than this mmtok reads "
                         f"(<= {max_version}); upgrade mmtok")
    body = {k: v for k, v in config.items() if k not in (FORMAT_KEY, VERSION_KEY)}
    weights_path = directory / WEIGHTS_NAME
    if weights_path.is_file():
        tensors = read_safetensors(weights_path)
    elif weights_required:
        raise FileNotFoundError(f"{weights_path} not found (a saved tokenizer folder holds {CONFIG_NAME} and "
                                f"{WEIGHTS_NAME})")
    else:
        tensors, weights_path = {}, None
    return SavedFolder(fmt, int(version), body, tensors, config_path, weights_path)
