"""SNAC's `config.json` (the `SNAC.__init__` keyword arguments, as in hubertsiuzdak/snac_24khz): fields, checks,
and the quantities derived from them (hop, padding unit, codes per frame).

Missing fields take `SNAC.__init__`'s defaults (snac 1.2.1). A config is accepted when upstream's own model runs
on it: `latent_dim` must be the encoder's output width (encoder_dim * 2 ** len(encoder_rates); upstream builds
any value but then fails in its first encode), every vq stride must divide the first one (upstream pads to a
multiple of the first only and fails on a stride that does not divide it), attention widths must be multiples of
the 64-channel head, and the decoder channels must stay positive. This module imports no torch: `mmtok.load`
uses `is_snac_config` to detect the layout cheaply.
"""
from __future__ import annotations

import math
from typing import Mapping

# SNAC.__init__ defaults (snac 1.2.1)
DEFAULTS = {"sampling_rate": 44100, "encoder_dim": 64, "encoder_rates": [3, 3, 7, 7], "latent_dim": None,
            "decoder_dim": 1536, "decoder_rates": [7, 7, 3, 3], "attn_window_size": 32, "codebook_size": 4096,
            "codebook_dim": 8, "vq_strides": [8, 4, 2, 1], "noise": True, "depthwise": True}
_MARKERS = ("encoder_rates", "decoder_rates", "vq_strides", "codebook_size")
HEAD_DIM = 64  # LocalMHA's dim_head
_LIMIT = 1 << 20
WEIGHTS_NAME = "pytorch_model.bin"


def is_snac_config(config: Mapping | None) -> bool:
    """A SNAC config.json: its model fields, no mmtok / transformers / diffusers markers."""
    if not isinstance(config, Mapping) or any(k in config for k in ("format", "model_type", "_class_name")):
        return False
    return all(k in config for k in _MARKERS)


def _int(value, name: str, origin: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= _LIMIT:
        raise ValueError(f"{origin}: {name} must be a positive int, got {value!r}")
    return value


def _ints(value, name: str, origin: str) -> list[int]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{origin}: {name} must be a non-empty list of positive ints, got {value!r}")
    return [_int(v, f"{name}[{i}]", origin) for i, v in enumerate(value)]


def settings_from_config(config: Mapping, origin: str) -> dict:
    """The checked settings of a SNAC config (ValueError naming `origin` and the field)."""
    if not isinstance(config, Mapping):
        raise ValueError(f"{origin}: expected a JSON object, got {type(config).__name__}")
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"{origin}: unknown SNAC config fields {unknown} (SNAC takes {', '.join(DEFAULTS)})")
    s = {k: config.get(k, v) for k, v in DEFAULTS.items()}
    for name in ("sampling_rate", "encoder_dim", "decoder_dim", "codebook_size", "codebook_dim"):
        s[name] = _int(s[name], name, origin)
    for name in ("encoder_rates", "decoder_rates", "vq_strides"):
        s[name] = _ints(s[name], name, origin)
    for name in ("noise", "depthwise"):
        if not isinstance(s[name], bool):
            raise ValueError(f"{origin}: {name} must be true or false, got {s[name]!r}")
    if s["attn_window_size"] is not None:
        s["attn_window_size"] = _int(s["attn_window_size"], "attn_window_size", origin)
    width = s["encoder_dim"] * 2 ** len(s["encoder_rates"])
    if s["latent_dim"] is None:
        s["latent_dim"] = width
    elif s["latent_dim"] != width:
        raise ValueError(f"{origin}: latent_dim {s['latent_dim']!r} differs from the encoder's output width "
                         f"encoder_dim * 2 ** len(encoder_rates) = {width} (SNAC cannot run such a model)")
    first = s["vq_strides"][0]
    if any(first % v for v in s["vq_strides"]):
        raise ValueError(f"{origin}: every vq stride must divide the first ({s['vq_strides']}); SNAC pads to a "
                         f"multiple of the first only")
    if s["decoder_dim"] // 2 ** len(s["decoder_rates"]) < 1:
        raise ValueError(f"{origin}: decoder_dim {s['decoder_dim']} is too small for {len(s['decoder_rates'])} "
                         f"decoder rates (each halves the channels)")
    if s["attn_window_size"] is not None:
        for name, dim in (("the encoder output", width), ("decoder_dim", s["decoder_dim"])):
            if dim % HEAD_DIM:
                raise ValueError(f"{origin}: local attention needs {name} ({dim}) to be a multiple of its "
                                 f"{HEAD_DIM}-channel heads")
    return s


def hop_length(s: Mapping) -> int:
    """Input samples per finest-level code (prod(encoder_rates))."""
    return math.prod(s["encoder_rates"])


def pad_unit(s: Mapping) -> int:
    """Latent steps per padding unit: lcm(first vq stride, attention window) (upstream's `preprocess`)."""
    return math.lcm(s["vq_strides"][0], s["attn_window_size"] or 1)


def slots(s: Mapping) -> list[int]:
    """Codes per coarse frame of each level: first stride // stride (e.g. [1, 2, 4] for strides [4, 2, 1])."""
    return [s["vq_strides"][0] // v for v in s["vq_strides"]]
