"""Load the tokenizers a run names on the command line, fingerprint them, and keep a copy with the output.

The image tokenizer comes from a `save_pretrained` folder or (a convenience) a LlamaGen `.pt` /
taming `.ckpt` checkpoint; the BEST-RQ audio tokenizer from a folder or a spec such as
`bestrq:seed=0,num_codebooks=2` (it is fully defined by its config). The hash of each tokenizer (its
config and weights) goes into the run plan, so a resumed run refuses different tokenizers.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil

import torch

AUDIO_SPEC_PREFIX = "bestrq"
_AUDIO_INT_OPTIONS = ("seed", "num_codebooks", "num_codes", "code_dim", "stack")


def load_image_tokenizer(path, *, config_path=None, device=None):
    """A save_pretrained folder, a LlamaGen checkpoint (.pt/.pth, optional JSON config) or a taming
    checkpoint (.ckpt with its yaml: `config_path`, or the only .yaml next to it)."""
    from ..image import ImageTokenizer

    path = pathlib.Path(os.fspath(path))
    if path.is_dir():
        tok = ImageTokenizer.from_pretrained(path)
    elif not path.is_file():
        raise FileNotFoundError(f"image tokenizer not found: {path}")
    elif path.suffix == ".ckpt":
        if config_path is None:
            yamls = sorted(path.parent.glob("*.yaml"))
            if len(yamls) != 1:
                raise ValueError(f"{path}: a taming checkpoint needs its yaml config (--image-tokenizer-config)")
            config_path = yamls[0]
        tok = ImageTokenizer.from_taming(path, config_path)
    else:
        tok = ImageTokenizer.from_llamagen(path, config_path=config_path)
    return tok.to(device) if device is not None else tok


def parse_audio_spec(spec: str) -> dict:
    """'bestrq' or 'bestrq:seed=0,num_codebooks=2,frontend=kaldi' -> AudioTokenizer keyword arguments."""
    name, _, options = spec.partition(":")
    if name != AUDIO_SPEC_PREFIX:
        raise ValueError(f"audio tokenizer {spec!r}: expected a save_pretrained folder or a spec "
                         f"'{AUDIO_SPEC_PREFIX}:seed=0,num_codebooks=1'")
    kwargs: dict = {}
    for part in filter(None, (p.strip() for p in options.split(","))):
        key, eq, value = part.partition("=")
        if not eq:
            raise ValueError(f"audio tokenizer spec {spec!r}: {part!r} is not key=value")
        if key in _AUDIO_INT_OPTIONS:
            try:
                kwargs[key] = int(value)
            except ValueError:
                raise ValueError(f"audio tokenizer spec {spec!r}: {key} must be an int, got {value!r}") from None
        elif key in ("frontend", "frontend_variant"):
            kwargs[key] = value
        else:
            raise ValueError(f"audio tokenizer spec {spec!r}: unknown option {key!r} "
                             f"(known: {', '.join(_AUDIO_INT_OPTIONS + ('frontend', 'frontend_variant'))})")
    return kwargs


def load_audio_tokenizer(spec):
    """An AudioTokenizer save_pretrained folder, or a 'bestrq:...' spec."""
    from ..audio.tokenizer import AudioTokenizer

    if isinstance(spec, (str, os.PathLike)) and os.path.isdir(os.fspath(spec)):
        return AudioTokenizer.from_pretrained(spec)
    if os.path.exists(os.fspath(spec)):
        raise ValueError(f"audio tokenizer {spec}: expected a save_pretrained folder (config.json + model.safetensors)")
    return AudioTokenizer(**parse_audio_spec(str(spec)))


def tensors_of(tokenizer) -> dict[str, torch.Tensor]:
    """The tensors that decide a tokenizer's output."""
    if hasattr(tokenizer, "model"):
        return tokenizer.model.state_dict()
    if hasattr(tokenizer, "quantizer"):
        return tokenizer.quantizer.state_dict()
    if isinstance(tokenizer, torch.nn.Module):
        return tokenizer.state_dict()
    return {}


def tokenizer_hash(tokenizer) -> str:
    """sha256 of the canonical config JSON and every tensor (name, dtype, shape, bytes)."""
    digest = hashlib.sha256(json.dumps(tokenizer.config, sort_keys=True, separators=(",", ":")).encode())
    for name, tensor in sorted(tensors_of(tokenizer).items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def describe(tokenizer, folder: str) -> dict:
    return {"class": type(tokenizer).__name__, "config": tokenizer.config, "hash": tokenizer_hash(tokenizer),
            "path": folder}


def save_copy(tokenizer, out_dir: pathlib.Path, name: str) -> str:
    """save_pretrained into out_dir/tokenizers/name (atomically: a temporary folder renamed); returns
    the relative folder. An existing copy is kept (the run plan's hash check guards its content)."""
    relative = f"tokenizers/{name}"
    target = out_dir / relative
    if target.is_dir():
        return relative
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.parent / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    tokenizer.save_pretrained(temporary)
    try:
        os.rename(temporary, target)
    except OSError:  # another rank got there first
        shutil.rmtree(temporary, ignore_errors=True)
    return relative
