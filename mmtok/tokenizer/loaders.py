"""Loaders of the layouts mmtok has always read (its own folders, taming, LlamaGen), for `mmtok.load`.

Each takes `(path, *, device=None, dtype=None, **options)` and returns a tokenizer; the families' own loaders
live with the families. The mmtok folder is dispatched on its format marker.
"""
from __future__ import annotations

import importlib
import pathlib

import torch

from .folder import CONFIG_NAME, folder_format, read_config

# format marker of a saved folder -> "module:class" whose `from_pretrained(folder, **options)` reads it
FOLDER_CLASSES = {
    "mmtok.image.vqgan": "mmtok.image.tokenizer:ImageTokenizer",
    "mmtok.audio.bestrq": "mmtok.audio.tokenizer:AudioTokenizer",
    "mmtok.AudioCodec": "mmtok.audio.codec.model:AudioCodec",
    "mmtok.image.var": "mmtok.image.var:VARTokenizer",
    "mmtok.image.emu35_ibq": "mmtok.image.emu35_ibq:Emu35IBQTokenizer",
    "mmtok.image.magvit2": "mmtok.image.magvit2:Magvit2Tokenizer",
    "mmtok.image.cosmos": "mmtok.image.cosmos:CosmosImageTokenizer",
    "mmtok.video.cosmos": "mmtok.video.cosmos:CosmosVideoTokenizer",
    "mmtok.audio.encodec": "mmtok.audio.encodec.model:EncodecCodec",
    "mmtok.audio.speechtokenizer": "mmtok.audio.speechtokenizer.model:SpeechTokenizerCodec",
    "mmtok.audio.mimi": "mmtok.audio.mimi.model:MimiCodec",
    "mmtok.audio.snac": "mmtok.audio.snac.model:SnacCodec",
    "mmtok.image.transformers_vq": "mmtok.image.transformers_vq:TransformersVQTokenizer",
    "mmtok.video.emu3": "mmtok.video.emu3.tokenizer:Emu3Tokenizer",
    "mmtok.image.diffusers_vq": "mmtok.image.diffusers_vq.tokenizer:DiffusersVQTokenizer",
}


def _class(spec: str):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def load_mmtok_folder(path, *, device=None, dtype=None, **options):
    path = pathlib.Path(path)
    fmt = folder_format(read_config(path / CONFIG_NAME))
    if fmt not in FOLDER_CLASSES:
        raise ValueError(f"{path / CONFIG_NAME}: format {fmt!r} is not one this mmtok reads "
                         f"(known: {', '.join(sorted(FOLDER_CLASSES))})")
    cls = _class(FOLDER_CLASSES[fmt])
    if device is not None:
        options["device"] = device
    if dtype is not None:
        options["dtype"] = dtype
    return cls.from_pretrained(path, **options)


def load_taming(path, *, device=None, dtype=None, config_path=None, **options):
    from ..image.tokenizer import ImageTokenizer

    path = pathlib.Path(path)
    if path.is_dir():  # a release folder: its only .ckpt (detection checked there is exactly one)
        ckpts = sorted(path.glob("*.ckpt"))
        if len(ckpts) != 1:
            raise ValueError(f"{path}: a taming folder holds one .ckpt checkpoint, found {len(ckpts)}")
        path = ckpts[0]
    if config_path is None:
        yamls = sorted(path.parent.glob("*.yaml"))
        if len(yamls) != 1:
            raise ValueError(f"{path}: a taming checkpoint needs its yaml config (config_path=...; found "
                             f"{len(yamls)} .yaml files beside it)")
        config_path = yamls[0]
    return ImageTokenizer.from_taming(path, config_path, device=device, dtype=dtype, **options)


def load_llamagen(path, *, device=None, dtype=None, config_path=None, **options):
    from ..image.tokenizer import ImageTokenizer

    return ImageTokenizer.from_llamagen(path, config_path=config_path, device=device, dtype=dtype, **options)


def load_dac(path, *, device=None, dtype=None, **options):
    from ..audio.codec.model import AudioCodec

    if dtype is not None and dtype not in ("float32", "fp32", torch.float32):
        raise ValueError(f"{path}: the DAC codec runs in float32; dtype={dtype!r} is not supported for this layout")
    codec = AudioCodec.from_dac(path, **options)
    return codec.to(device) if device is not None else codec
