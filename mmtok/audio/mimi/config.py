"""Mimi's `config.json` (the `transformers` `MimiConfig` fields): which fields the model reads, their checks, and the
rates they imply. No torch here: `mmtok.load` detects the layout by `model_type` alone.

Rates (transformers' rule): the SEANet hop is prod(upsampling_ratios); its rate ceil(sampling_rate / hop) (the
"encodec frame rate"); the code frame rate is the config's `frame_rate` when given (the Hub's kyutai/mimi says 12.5),
else sampling_rate / (2 * hop); the down / upsampling convs between the two have stride
int(encodec_frame_rate / frame_rate) (2 for the released model: 24 kHz, hop 1920 -> 12.5 Hz).
"""
from __future__ import annotations

import math
from typing import Mapping

# MimiConfig defaults (transformers 5.24) for configs that omit a field
DEFAULTS = {"sampling_rate": 24000, "audio_channels": 1, "hidden_size": 512, "num_filters": 64,
            "num_residual_layers": 1, "upsampling_ratios": [8, 6, 5, 4], "kernel_size": 7, "last_kernel_size": 3,
            "residual_kernel_size": 3, "dilation_growth_rate": 2, "use_causal_conv": True, "pad_mode": "constant",
            "compress": 2, "trim_right_ratio": 1.0, "codebook_size": 2048, "codebook_dim": 256,
            "num_quantizers": 32, "use_conv_shortcut": False, "vector_quantization_hidden_dimension": 256,
            "num_semantic_quantizers": 1, "upsample_groups": 512, "num_hidden_layers": 8,
            "intermediate_size": 2048, "num_attention_heads": 8, "num_key_value_heads": 8, "head_dim": None,
            "hidden_act": "gelu", "norm_eps": 1e-5, "rope_parameters": None, "sliding_window": 250,
            "layer_scale_initial_scale": 0.01, "attention_bias": False, "frame_rate": None}
_INT_FIELDS = ("sampling_rate", "audio_channels", "hidden_size", "num_filters", "kernel_size", "last_kernel_size",
               "residual_kernel_size", "dilation_growth_rate", "compress", "codebook_size", "num_quantizers",
               "vector_quantization_hidden_dimension", "num_semantic_quantizers", "upsample_groups",
               "intermediate_size", "num_attention_heads", "num_key_value_heads")
_COUNT_FIELDS = ("num_residual_layers", "num_hidden_layers")  # may be 0
# transformers' ACT2FN names the MLP may use, and the function each one is (see transformer.ACTIVATIONS)
ACTIVATIONS = ("gelu", "gelu_pytorch_tanh", "gelu_new", "relu", "silu", "swish")
PAD_MODES = ("constant", "reflect", "replicate", "circular")
_LIMIT = 1 << 20


def _int(value, name: str, origin: str, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= _LIMIT:
        raise ValueError(f"{origin}: {name} must be an int >= {minimum}, got {value!r}")
    return value


def settings_from_config(config: Mapping, origin: str) -> dict:
    """The model fields of a Mimi config (transformers' names and defaults), checked: ValueError naming `origin`
    and the field for anything transformers would not build or run."""
    if not isinstance(config, Mapping):
        raise ValueError(f"{origin}: expected a JSON object, got {type(config).__name__}")
    s = {k: config.get(k, v) for k, v in DEFAULTS.items()}
    if s["frame_rate"] is None:
        s["frame_rate"] = config.get("_frame_rate")  # what save_pretrained writes (null: derived)
    for name in _INT_FIELDS:
        _int(s[name], name, origin)
    for name in _COUNT_FIELDS:
        _int(s[name], name, origin, minimum=0)
    if config.get("encoder_config", True) is None or config.get("decoder_config", True) is None:
        raise ValueError(f"{origin}: encoder-only / decoder-only Mimi configs (encoder_config or decoder_config "
                         f"null) are not supported")
    if s["audio_channels"] not in (1, 2):
        raise ValueError(f"{origin}: audio_channels must be 1 or 2 (as transformers), got {s['audio_channels']}")
    ratios = s["upsampling_ratios"] or DEFAULTS["upsampling_ratios"]
    if not isinstance(ratios, list) or not all(isinstance(r, int) and not isinstance(r, bool) and 0 < r <= _LIMIT
                                               for r in ratios):
        raise ValueError(f"{origin}: upsampling_ratios must be a list of positive ints, got {ratios!r}")
    s["upsampling_ratios"] = list(ratios)
    if s["codebook_size"] & (s["codebook_size"] - 1):
        raise ValueError(f"{origin}: codebook_size must be a power of 2 (as transformers), got {s['codebook_size']}")
    if not s["num_semantic_quantizers"] < s["num_quantizers"]:
        raise ValueError(f"{origin}: num_semantic_quantizers ({s['num_semantic_quantizers']}) must be lower than "
                         f"num_quantizers ({s['num_quantizers']})")
    if s["codebook_dim"] is None:
        s["codebook_dim"] = s["hidden_size"]
    _int(s["codebook_dim"], "codebook_dim", origin)
    if s["codebook_dim"] != s["vector_quantization_hidden_dimension"]:
        raise ValueError(f"{origin}: codebook_dim ({s['codebook_dim']}) must equal "
                         f"vector_quantization_hidden_dimension ({s['vector_quantization_hidden_dimension']}): the "
                         f"codebooks are compared with the projected latents")
    if s["head_dim"] is None:
        s["head_dim"] = s["hidden_size"] // s["num_attention_heads"]
    _int(s["head_dim"], "head_dim", origin)
    if s["hidden_size"] % s["num_attention_heads"]:
        raise ValueError(f"{origin}: hidden_size ({s['hidden_size']}) must be divisible by num_attention_heads "
                         f"({s['num_attention_heads']})")
    if s["num_attention_heads"] % s["num_key_value_heads"]:
        raise ValueError(f"{origin}: num_attention_heads ({s['num_attention_heads']}) must be a multiple of "
                         f"num_key_value_heads ({s['num_key_value_heads']})")
    if s["hidden_size"] % s["upsample_groups"]:
        raise ValueError(f"{origin}: upsample_groups ({s['upsample_groups']}) must divide hidden_size "
                         f"({s['hidden_size']})")
    if s["hidden_act"] not in ACTIVATIONS:
        raise ValueError(f"{origin}: hidden_act must be one of {', '.join(ACTIVATIONS)}, got {s['hidden_act']!r}")
    if s["pad_mode"] not in PAD_MODES:
        raise ValueError(f"{origin}: pad_mode must be one of {', '.join(PAD_MODES)}, got {s['pad_mode']!r}")
    for name in ("use_causal_conv", "use_conv_shortcut", "attention_bias"):
        if not isinstance(s[name], bool):
            raise ValueError(f"{origin}: {name} must be true or false, got {s[name]!r}")
    if not s["use_causal_conv"] and s["trim_right_ratio"] != 1.0:
        raise ValueError(f"{origin}: trim_right_ratio != 1.0 needs use_causal_conv (as transformers)")
    window = s["sliding_window"]
    if window is not None:
        _int(window, "sliding_window", origin)
    rope = s["rope_parameters"] or {}
    if not isinstance(rope, Mapping) or rope.get("rope_type", "default") != "default":
        raise ValueError(f"{origin}: only the default RoPE (rope_type 'default', as Mimi) is supported, got "
                         f"rope_parameters={s['rope_parameters']!r}")
    theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    if not isinstance(theta, (int, float)) or isinstance(theta, bool) or not theta > 0:
        raise ValueError(f"{origin}: rope_theta must be a positive number, got {theta!r}")
    s["rope_parameters"] = {"rope_type": "default", "rope_theta": float(theta)}
    for name in ("norm_eps", "trim_right_ratio", "layer_scale_initial_scale"):
        if not isinstance(s[name], (int, float)) or isinstance(s[name], bool):
            raise ValueError(f"{origin}: {name} must be a number, got {s[name]!r}")
    if s["frame_rate"] is not None and (not isinstance(s["frame_rate"], (int, float)) or not s["frame_rate"] > 0):
        raise ValueError(f"{origin}: frame_rate must be a positive number, got {s['frame_rate']!r}")
    stride = latent_stride(s)
    if not 1 <= stride <= _LIMIT or frame_rate(s) == encodec_frame_rate(s):
        raise ValueError(f"{origin}: frame_rate {frame_rate(s)} against the SEANet rate {encodec_frame_rate(s)} "
                         f"gives no down / upsampling stride (int ratio {stride}); transformers cannot encode it")
    return s


def hop_length(s: Mapping) -> int:
    """Samples per SEANet latent step."""
    return math.prod(s["upsampling_ratios"])


def encodec_frame_rate(s: Mapping) -> int:
    return math.ceil(s["sampling_rate"] / hop_length(s))


def frame_rate(s: Mapping) -> float:
    """The configured code frame rate (transformers' `config.frame_rate`)."""
    if s["frame_rate"] is not None:
        return s["frame_rate"]
    return s["sampling_rate"] / (2 * hop_length(s))


def latent_stride(s: Mapping) -> int:
    """Stride of the downsample / upsample convs (transformers' `latent_stride`)."""
    return int(encodec_frame_rate(s) / frame_rate(s))


def frame_size(s: Mapping) -> int:
    """Samples per code frame: hop * latent_stride."""
    return hop_length(s) * latent_stride(s)


def seanet_settings(s: Mapping) -> dict:
    """The EnCodec SEANet settings (`mmtok.audio.encodec.model` names) of Mimi settings `s`: no LSTM, no norm."""
    return {"audio_channels": s["audio_channels"], "num_filters": s["num_filters"], "hidden_size": s["hidden_size"],
            "upsampling_ratios": list(s["upsampling_ratios"]), "num_residual_layers": s["num_residual_layers"],
            "residual_kernel_size": s["residual_kernel_size"], "dilation_growth_rate": s["dilation_growth_rate"],
            "num_lstm_layers": 0, "kernel_size": s["kernel_size"], "last_kernel_size": s["last_kernel_size"],
            "compress": s["compress"], "use_causal_conv": s["use_causal_conv"], "pad_mode": s["pad_mode"],
            "norm_type": "weight_norm", "trim_right_ratio": s["trim_right_ratio"],
            "use_conv_shortcut": s["use_conv_shortcut"]}
