"""Reading weights into a codec: DAC's `.pth` files and our config.json + model.safetensors.

DAC's own loader uses `load_state_dict(strict=False)` and silently ignores missing or unexpected keys; here any
key or shape mismatch is an error that names the keys, because a half-loaded codec decodes plausible noise.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..io import existing_file
from .config import CodecConfig

MAX_LISTED = 12  # keys listed per kind of mismatch in an error message


def _listed(keys: list[str]) -> str:
    more = f" ... and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else ""
    return ", ".join(keys[:MAX_LISTED]) + more


def load_state_dict_exactly(module: nn.Module, state_dict: dict[str, Any], source: str) -> None:
    """Copy state_dict into module; ValueError naming every missing / unexpected / wrongly shaped key."""
    expected = module.state_dict()
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
    module.load_state_dict({k: v.to(torch.float32) for k, v in state_dict.items()}, strict=True)


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
