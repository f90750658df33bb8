"""DAC in the `transformers` layout (`DacModel` folders: descript/dac_16khz, dac_24khz, dac_44khz on the Hub):
its config and key names mapped onto `AudioCodec` (DAC's original layout), so the numerics are the ones the DAC
codec already reproduces.

transformers names the layers (`encoder.conv1`, `encoder.block.i.res_unit{1,2,3}`, `decoder.block.i.conv_t1`, ...)
where DAC numbers them (`encoder.block.0`, `encoder.block.i+1.block.j`, `decoder.model.i+1.block.1`, ...). Weight
norm may be stored as parametrizations (`parametrizations.weight.original0/1`), as `weight_g/weight_v`, or folded
into `weight` (a DacModel saved without `apply_weight_norm`); all three load. A folded weight w is loaded as
g = ||w|| (per output channel), v = w, which gives w back.
"""
from __future__ import annotations

import os
import pathlib
import re
from typing import Mapping

import torch

from ...tokenizer.folder import read_config
from ...tokenizer.weights import find_weights, read_state_dict
from .config import CodecConfig

_WEIGHT_NORMED = re.compile(r"\.(conv1|conv2|conv_t1|in_proj|out_proj)$")


def codec_config(config: Mapping, origin: str) -> CodecConfig:
    """A transformers DacConfig dict -> CodecConfig (DacConfig defaults for missing fields)."""
    enc_dim = config.get("encoder_hidden_size", 64)
    rates = config.get("downsampling_ratios", [2, 4, 8, 8])
    latent = config.get("hidden_size") or enc_dim * 2 ** len(rates)
    try:
        return CodecConfig(encoder_dim=enc_dim, encoder_rates=tuple(rates), latent_dim=latent,
                           decoder_dim=config.get("decoder_hidden_size", 1536),
                           decoder_rates=tuple(config.get("upsampling_ratios", [8, 8, 4, 2])),
                           n_codebooks=config.get("n_codebooks", 9), codebook_size=config.get("codebook_size", 1024),
                           codebook_dim=config.get("codebook_dim", 8), sample_rate=config.get("sampling_rate", 16000))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{origin}: {exc}") from None


def _rename(key: str, enc_blocks: int, dec_blocks: int) -> str:
    m = re.match(r"^encoder\.block\.(\d+)\.(.*)$", key)
    if m:
        i, rest = int(m.group(1)) + 1, m.group(2)
        unit = re.match(r"^res_unit(\d)\.(snake1|conv1|snake2|conv2)\.(.*)$", rest)
        if unit:
            inner = {"snake1": 0, "conv1": 1, "snake2": 2, "conv2": 3}[unit.group(2)]
            return f"encoder.block.{i}.block.{int(unit.group(1)) - 1}.block.{inner}.{unit.group(3)}"
        outer = re.match(r"^(snake1|conv1)\.(.*)$", rest)
        if outer:
            return f"encoder.block.{i}.block.{3 if outer.group(1) == 'snake1' else 4}.{outer.group(2)}"
    m = re.match(r"^decoder\.block\.(\d+)\.(.*)$", key)
    if m:
        i, rest = int(m.group(1)) + 1, m.group(2)
        unit = re.match(r"^res_unit(\d)\.(snake1|conv1|snake2|conv2)\.(.*)$", rest)
        if unit:
            inner = {"snake1": 0, "conv1": 1, "snake2": 2, "conv2": 3}[unit.group(2)]
            return f"decoder.model.{i}.block.{int(unit.group(1)) + 1}.block.{inner}.{unit.group(3)}"
        outer = re.match(r"^(snake1|conv_t1)\.(.*)$", rest)
        if outer:
            return f"decoder.model.{i}.block.{0 if outer.group(1) == 'snake1' else 1}.{outer.group(2)}"
    fixed = {"encoder.conv1.": "encoder.block.0.", "encoder.snake1.": f"encoder.block.{enc_blocks + 1}.",
             "encoder.conv2.": f"encoder.block.{enc_blocks + 2}.", "decoder.conv1.": "decoder.model.0.",
             "decoder.snake1.": f"decoder.model.{dec_blocks + 1}.", "decoder.conv2.": f"decoder.model.{dec_blocks + 2}."}
    for old, new in fixed.items():
        if key.startswith(old):
            return new + key[len(old):]
    return key


def to_dac_state(state: Mapping[str, torch.Tensor], config: CodecConfig) -> dict[str, torch.Tensor]:
    """transformers DacModel tensors -> DAC's names with weight_g / weight_v."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = re.match(r"^(.*)\.parametrizations\.weight\.original([01])$", key)
        if m:
            key = f"{m.group(1)}.weight_{'g' if m.group(2) == '0' else 'v'}"
        elif key.endswith(".weight") and _WEIGHT_NORMED.search(key[: -len(".weight")]):
            base = key[: -len(".weight")]
            w = value.float()
            out[_rename(f"{base}.weight_v", len(config.encoder_rates), len(config.decoder_rates))] = w
            out[_rename(f"{base}.weight_g", len(config.encoder_rates), len(config.decoder_rates))] = \
                w.norm(dim=tuple(range(1, w.dim())), keepdim=True)
            continue
        out[_rename(key, len(config.encoder_rates), len(config.decoder_rates))] = value
    return out


def load_transformers_dac(path, *, device=None, dtype=None, **options):
    """`mmtok.load` entry for a transformers DacModel folder: an `AudioCodec`."""
    from .model import AudioCodec

    if options:
        raise ValueError(f"{path}: unknown options for a transformers DAC folder: {sorted(options)}")
    if dtype is not None and dtype not in ("float32", "fp32", torch.float32):
        raise ValueError(f"{path}: the DAC codec runs in float32; dtype={dtype!r} is not supported")
    directory = pathlib.Path(os.fspath(path))
    config_path = directory / "config.json"
    config = read_config(config_path)
    if config.get("model_type") != "dac":
        raise ValueError(f"{config_path}: model_type {config.get('model_type')!r} is not 'dac'")
    codec_cfg = codec_config(config, str(config_path))
    weights = find_weights(directory)
    state = to_dac_state(read_state_dict(weights), codec_cfg)
    codec = AudioCodec.from_state_dict(codec_cfg, state, str(weights))
    return codec.to(device) if device is not None else codec
