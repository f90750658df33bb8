"""Load the tokenizers a run names on the command line, fingerprint them, and keep a copy with the output.

The image (and spatio-temporal video) tokenizer and the audio codec are anything `mmtok.load` reads (an mmtok folder, a taming
`.ckpt`, a LlamaGen `.pt`, a Hugging Face / diffusers folder, ...); the BEST-RQ audio tokenizer a folder or a
spec such as `bestrq:seed=0,num_codebooks=2` (it is fully defined by its config). The hash of each tokenizer (its
config and weights) goes into the run plan, so a resumed run refuses different tokenizers.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib

import torch

AUDIO_SPEC_PREFIX = "bestrq"
_AUDIO_INT_OPTIONS = ("seed", "num_codebooks", "num_codes", "code_dim", "stack")


def load_image_tokenizer(path, *, config_path=None, device=None, format=None, **options):
    """Anything `mmtok.load` reads, checked to be an image tokenizer (`config_path`: the yaml / JSON config of
    a taming / LlamaGen checkpoint when it is not the only one beside it)."""
    return _load_checked(path, "image", "--image-tokenizer", config_path=config_path, device=device,
                         format=format, **options)


def load_video_tokenizer(path, *, device=None, format=None, **options):
    """Anything `mmtok.load` reads, checked to be a spatio-temporal video tokenizer (codes (B, t, h, w))."""
    return _load_checked(path, "video", "--video-tokenizer", device=device, format=format, **options)


def load_audio_codec(path, *, device=None, format=None, **options):
    """Anything `mmtok.load` reads, checked to be an audio tokenizer whose codes decode to sound (a codec)."""
    return _load_checked(path, "audio", "--audio-codec", device=device, format=format, decodable=True, **options)


def _load_checked(path, modality: str, name: str, *, config_path=None, device=None, format=None,
                  decodable: bool | None = None, **options):
    from ..tokenizer import load
    from ..tokenizer.protocol import expect_modality

    if config_path is not None:
        options["config_path"] = config_path
    tokenizer = load(path, format=format, device=device, **options)
    expect_modality(tokenizer, modality, f"{name} {path}", decodable=decodable)
    return tokenizer


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
    from ..tokenizer import load
    from ..tokenizer.protocol import expect_modality

    if isinstance(spec, (str, os.PathLike)) and os.path.isdir(os.fspath(spec)):
        tokenizer = load(spec)
        expect_modality(tokenizer, "audio", f"--audio-tokenizer {spec}", decodable=False)
        return tokenizer
    if os.path.exists(os.fspath(spec)):
        raise ValueError(f"audio tokenizer {spec}: expected a save_pretrained folder (config.json + model.safetensors)")
    return AudioTokenizer(**parse_audio_spec(str(spec)))


def tensors_of(tokenizer) -> dict[str, torch.Tensor]:
    """The tensors that decide a tokenizer's output: its protocol `state_dict()` (for the shipped families the
    same tensors, under the same names, as the hash of earlier mmtok versions covered)."""
    from ..tokenizer.protocol import code_spec_of

    code_spec_of(tokenizer)
    return tokenizer.state_dict()


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


TEXT_COPY = "tokenizers/text/tokenizer.json"  # the text tokenizer kept with an output (--text-tokenizer)


def load_text_tokenizer(path):
    """--text-tokenizer: a `tokenizer.json` (read with the `tokenizers` library) or a `transformers`
    tokenizer folder (its tokenizer.json; transformers itself is not imported). Returns the
    `tokenizers.Tokenizer`; a missing file, a folder without tokenizer.json, or an unreadable file is a
    ValueError naming the path, raised before any work."""
    file = pathlib.Path(os.fspath(path))
    if file.is_dir():
        file = file / "tokenizer.json"
        if not file.is_file():
            raise ValueError(f"text tokenizer {path}: the folder has no tokenizer.json (a transformers folder with "
                             f"only a slow / sentencepiece tokenizer: save it with a fast tokenizer first)")
    elif not file.is_file():
        raise ValueError(f"text tokenizer {path}: not found (give a tokenizer.json or a tokenizer folder)")
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ValueError("--text-tokenizer needs the tokenizers package: pip install tokenizers") from None
    try:
        return Tokenizer.from_file(str(file))
    except Exception as exc:  # noqa: BLE001 - the library raises its own exception types
        raise ValueError(f"text tokenizer {file}: not a readable tokenizer.json ({type(exc).__name__}: {exc})") from None


def text_tokenizer_bytes(tokenizer) -> bytes | None:
    """The tokenizer.json a `tokenizers.Tokenizer` serialises to: the copy kept with an output (None for a
    tokenizer object that has no tokenizer.json form)."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)  # a transformers fast tokenizer given in Python
    to_str = getattr(backend, "to_str", None)
    return to_str().encode("utf-8") if callable(to_str) else None
