"""Reading a downloaded `transformers` Emu3 folder: the VQ-VAE alone (model_type "emu3_vqgan") or a full Emu3
checkpoint (model_type "emu3", the VQ-VAE's config under `vq_config` and its weights under `model.vqmodel.`).

Weights come from `model.safetensors` / `pytorch_model.bin` or their sharded index; for a sharded full checkpoint
only the shards holding VQ-VAE tensors are read. Errors name the file at fault.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

import torch

from ...tokenizer.folder import CONFIG_NAME, read_config
from ...tokenizer.weights import find_weights, read_state_dict, strip_prefix
from .config import MODEL_TYPE, Emu3Config

FULL_MODEL_TYPE = "emu3"
PROCESSOR_NAME = "preprocessor_config.json"
FULL_PREFIXES = ("model.vqmodel.", "vqmodel.")


def is_emu3_config(config: dict | None) -> bool:
    """Whether a transformers config.json describes an Emu3 VQ-VAE (alone or inside a full Emu3 model)."""
    if not config:
        return False
    return config.get("model_type") == MODEL_TYPE or (
        config.get("model_type") == FULL_MODEL_TYPE and isinstance(config.get("vq_config"), dict))


def _read_vq_shards(index_path: pathlib.Path) -> dict[str, torch.Tensor]:
    """Only the shards of a sharded checkpoint that hold VQ-VAE keys."""
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{index_path}: not a checkpoint index with a 'weight_map' ({exc})") from None
    shards = sorted({str(f) for k, f in weight_map.items() if str(k).startswith(FULL_PREFIXES)})
    if not shards:
        raise ValueError(f"{index_path}: no VQ-VAE weights (no key starting with {' or '.join(FULL_PREFIXES)})")
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        if pathlib.Path(shard).is_absolute() or ".." in pathlib.Path(shard).parts:
            raise ValueError(f"{index_path}: shard {shard!r} is not a file beside the index")
        state.update(read_state_dict(index_path.parent / shard))
    return state


def with_processor(config: Emu3Config, directory: pathlib.Path) -> Emu3Config:
    """The folder's preprocessor_config.json normalisation (image_mean / image_std when do_normalize) in the
    config, so PIL / path inputs are preprocessed as the checkpoint expects; unchanged without that file."""
    path = directory / PROCESSOR_NAME
    if not path.is_file():
        return config
    processor = read_config(path)
    if not processor.get("do_normalize", True) or "image_mean" not in processor or "image_std" not in processor:
        return config
    try:
        return dataclasses.replace(config, image_mean=processor["image_mean"], image_std=processor["image_std"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def read_transformers(path) -> tuple[Emu3Config, dict[str, torch.Tensor], str]:
    """(config, state dict with Emu3VQVAE key names, origin for messages) of a downloaded folder."""
    directory = pathlib.Path(path)
    if not directory.is_dir():
        raise ValueError(f"{directory}: expected a transformers model folder (config.json + weights)")
    config_path = directory / CONFIG_NAME
    data = read_config(config_path)
    weights = find_weights(directory)
    if data.get("model_type") == FULL_MODEL_TYPE:
        vq = data.get("vq_config")
        if not isinstance(vq, dict):
            raise ValueError(f"{config_path}: an Emu3 config without a 'vq_config' object")
        config = Emu3Config.from_transformers({"model_type": MODEL_TYPE, **vq}, origin=f"{config_path} (vq_config)")
        full = _read_vq_shards(weights) if weights.name.endswith(".index.json") else read_state_dict(weights)
        prefix = next((p for p in FULL_PREFIXES if any(k.startswith(p) for k in full)), None)
        if prefix is None:
            raise ValueError(f"{weights}: no VQ-VAE weights (no key starting with {' or '.join(FULL_PREFIXES)})")
        return with_processor(config, directory), strip_prefix(full, prefix), str(weights)
    config = Emu3Config.from_transformers(data, origin=str(config_path))
    return with_processor(config, directory), read_state_dict(weights), str(weights)


def load_emu3(path, *, device=None, dtype=None, modality: str | None = None, **options):
    """`mmtok.load` entry point for the transformers layouts: an `Emu3Tokenizer` (modality "image": its image view)."""
    from .tokenizer import Emu3Tokenizer

    config, state, origin = read_transformers(path)
    return Emu3Tokenizer.with_weights(config, state, origin, modality=modality, device=device, dtype=dtype, **options)
