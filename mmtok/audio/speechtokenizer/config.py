"""SpeechTokenizer's `config.json`: which fields the model reads, their checks, and the SEANet settings they make.

The release's config (e.g. `speechtokenizer_hubert_avg/config.json`) mixes model fields with training ones
(`batch_size`, `segment_size`, `lambda_distill`, ...); only the model fields below are read, the rest is ignored.
The fields EnCodec's SEANet takes but SpeechTokenizer fixes are set as its `SEANetEncoder` / `SEANetDecoder`
defaults (kernel 7, last kernel 7, compress 2, non-causal, reflect padding, weight norm, a 1x1 conv shortcut).
This module imports no torch: `mmtok.load` uses `is_speechtokenizer_config` to detect the layout cheaply.
"""
from __future__ import annotations

from typing import Mapping

# the fields `SpeechTokenizer.__init__` reads; a config with all of the first five is a SpeechTokenizer config
MODEL_FIELDS = ("n_filters", "strides", "dimension", "semantic_dimension", "n_q", "codebook_size", "bidirectional",
                "dilation_base", "residual_kernel_size", "n_residual_layers", "lstm_layers", "activation",
                "sample_rate")
_MARKERS = ("n_filters", "strides", "dimension", "semantic_dimension", "n_q")
# activations the upstream builds: getattr(torch.nn, name)(alpha=1.0), or its Snake
ACTIVATIONS = ("ELU", "CELU", "Snake")
_LIMIT = 1 << 20


def is_speechtokenizer_config(config: Mapping | None) -> bool:
    """A SpeechTokenizer config.json (its model fields, no mmtok / transformers / diffusers markers)."""
    if not isinstance(config, Mapping):
        return False
    if any(k in config for k in ("format", "model_type", "_class_name")):
        return False
    return all(k in config for k in _MARKERS)


def _int(config: Mapping, name: str, origin: str, *, minimum: int = 1) -> int:
    value = config.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= _LIMIT:
        raise ValueError(f"{origin}: {name} must be an int >= {minimum}, got {value!r}")
    return value


def settings_from_config(config: Mapping, origin: str) -> dict:
    """The model fields of a SpeechTokenizer config, checked (ValueError naming `origin` and the field).

    `lstm_layers` 0 / null / false means no LSTM (upstream's `if lstm:`); `bidirectional` null means false;
    `sample_rate` may be given as `sampling_rate` (the release has both)."""
    if not isinstance(config, Mapping):
        raise ValueError(f"{origin}: expected a JSON object, got {type(config).__name__}")
    missing = [k for k in _MARKERS + ("codebook_size", "dilation_base", "residual_kernel_size",
                                      "n_residual_layers", "activation") if k not in config]
    if missing:
        raise ValueError(f"{origin}: not a SpeechTokenizer config, missing {', '.join(missing)}")
    s = {name: _int(config, name, origin) for name in ("n_filters", "dimension", "semantic_dimension", "n_q",
                                                       "codebook_size", "dilation_base", "residual_kernel_size")}
    s["n_residual_layers"] = _int(config, "n_residual_layers", origin, minimum=0)
    lstm = config.get("lstm_layers")
    s["lstm_layers"] = 0 if lstm in (None, False) else _int(config, "lstm_layers", origin, minimum=0)
    bidirectional = config.get("bidirectional")
    if bidirectional not in (None, True, False):
        raise ValueError(f"{origin}: bidirectional must be true or false, got {bidirectional!r}")
    s["bidirectional"] = bool(bidirectional)
    if config.get("activation") not in ACTIVATIONS:
        raise ValueError(f"{origin}: activation must be one of {', '.join(ACTIVATIONS)} (the ones SpeechTokenizer "
                         f"builds with alpha=1.0, or its Snake), got {config.get('activation')!r}")
    s["activation"] = config["activation"]
    strides = config.get("strides")
    if not isinstance(strides, list) or not strides or not all(
            isinstance(r, int) and not isinstance(r, bool) and 0 < r <= _LIMIT for r in strides):
        raise ValueError(f"{origin}: strides must be a non-empty list of positive ints, got {strides!r}")
    s["strides"] = list(strides)
    rate_key = "sample_rate" if config.get("sample_rate") is not None else "sampling_rate"
    s["sample_rate"] = _int(config, rate_key, origin)
    if s["n_filters"] < 2:
        raise ValueError(f"{origin}: n_filters must be >= 2 (the residual branches have n_filters // 2 channels)")
    return s


def seanet_settings(s: Mapping) -> dict:
    """The EnCodec SEANet settings (`mmtok.audio.encodec.model` names) of SpeechTokenizer settings `s`."""
    return {"audio_channels": 1, "num_filters": s["n_filters"], "hidden_size": s["dimension"],
            "upsampling_ratios": list(s["strides"]), "num_residual_layers": s["n_residual_layers"],
            "residual_kernel_size": s["residual_kernel_size"], "dilation_growth_rate": s["dilation_base"],
            "num_lstm_layers": s["lstm_layers"], "kernel_size": 7, "last_kernel_size": 7, "compress": 2,
            "use_causal_conv": False, "pad_mode": "reflect", "norm_type": "weight_norm", "trim_right_ratio": 1.0,
            "use_conv_shortcut": True}
