"""Reading weights into a codec: DAC's `.pth` files and our config.json + model.safetensors.

DAC's own loader uses `load_state_dict(strict=False)` and silently ignores missing or unexpected keys; here any
key or shape mismatch is an error that names the keys, because a half-loaded codec decodes plausible noise.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...tokenizer.fields import count_check, dim_check
from ..io import existing_file
from .config import CodecConfig

MAX_LISTED = 12  # keys listed per kind of mismatch in an error message


def _listed(keys: list[str]) -> str:
    more = f" ... and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else ""
    return ", ".join(keys[:MAX_LISTED]) + more


def load_state_dict_exactly(module: nn.Module, state_dict: dict[str, Any], source: str) -> None:
    """Copy state_dict into module; ValueError naming every missing / unexpected / wrongly shaped key."""
    check_state_dict_exactly(module.state_dict(), state_dict, source)
    module.load_state_dict({k: v.to(torch.float32) for k, v in state_dict.items()}, strict=True)


def check_state_dict_exactly(expected: dict[str, Any], state_dict: dict[str, Any], source: str) -> None:
    """The checks of `load_state_dict_exactly` against a module's state dict (a meta one will do)."""
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    wrong = []
    for key in sorted(set(expected) & set(state_dict)):
        value = state_dict[key]
        if not isinstance(value, torch.Tensor):
            wrong.append(f"{key} (not a tensor: {type(value).__name__})")
        elif tuple(value.shape) != tuple(expected[key].shape):
            wrong.append(f"{key} (expected {list(expected[key].shape)}, got {list(value.shape)})")
        elif not value.is_floating_point():
            wrong.append(f"{key} (expected a float tensor, got {value.dtype})")
    if wrong:
        problems.append(f"wrong shapes/types: {_listed(wrong)}")
    if problems:
        raise ValueError(f"{source}: weights do not fit the codec architecture; " + "; ".join(problems))


def read_dac_file(path) -> tuple[CodecConfig, dict[str, torch.Tensor]]:
    """DAC weight file ({'state_dict', 'metadata': {'kwargs'}}) -> (config, state_dict). No code is unpickled."""
    path = existing_file(path, "DAC weight file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt / non-torch files
        raise ValueError(f"{path}: not a loadable DAC weight file ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or "state_dict" not in payload:
        keys = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path}: expected a dict with 'state_dict' and 'metadata', got {keys}")
    metadata = payload.get("metadata") or {}
    kwargs = metadata.get("kwargs", {}) if isinstance(metadata, dict) else {}
    if not isinstance(kwargs, dict):
        raise ValueError(f"{path}: metadata['kwargs'] must be a dict, got {type(kwargs).__name__}")
    state_dict = payload["state_dict"]
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path}: 'state_dict' must be a dict of tensors, got {type(state_dict).__name__}")
    return CodecConfig.from_dac_kwargs(kwargs, source=str(path)), dict(state_dict)


def _wn(base: str) -> tuple[str, str]:
    """A weight-normalised conv's direction tensor under its two names (legacy and parametrizations)."""
    return f"{base}.weight_v", f"{base}.parametrizations.weight.original1"


def field_checks(config: CodecConfig, state: dict[str, Any]) -> list:
    """Which tensor dimension (or block count) each sizing field of `config` (DAC's kwargs or our config.json)
    must equal, in DAC's key names."""
    checks = [
        count_check("n_codebooks", config.n_codebooks, state, "quantizer.quantizers"),
        dim_check("codebook_size", config.codebook_size, state, "quantizer.quantizers.0.codebook.weight", 0),
        dim_check("codebook_dim", config.codebook_dim, state, "quantizer.quantizers.0.codebook.weight", 1),
        dim_check("latent_dim", config.latent_dim, state, _wn("quantizer.quantizers.0.in_proj"), 1),
        dim_check("encoder_dim", config.encoder_dim, state, _wn("encoder.block.0"), 0),
        dim_check("decoder_dim", config.decoder_dim, state, _wn("decoder.model.0"), 0),
        count_check("len(encoder_rates)", len(config.encoder_rates), state, "encoder.block", require="block.4.",),
        count_check("len(decoder_rates)", len(config.decoder_rates), state, "decoder.model", require="block.1."),
    ]
    return checks  # the rates set kernel sizes only: a wrong one is left to the strict load's shape message
