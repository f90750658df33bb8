"""Reading published VQ-GAN checkpoints: taming-transformers (also Chameleon's) and LlamaGen.

Each layout is a key mapping onto our module tree (`autoencoder.VQAutoencoder`, which uses taming's names)
plus a way to recover the architecture: taming ships a yaml config, LlamaGen stores none, so its sizes are
read from tensor shapes. Loading is strict: every key the model needs must be present and every key left
over is an error listing the keys, except the training-only entries each project is known to carry
(taming's `loss.*`, LlamaGen's `quantize.codebook_used`).
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping

import torch
import yaml

from ..tokenizer.fields import count, count_check, dim_check
from .config import VQGANConfig, read_config_file

CODEBOOK_KEY = "quantize.codebook"
_LIST_LIMIT = 12


def _format_keys(keys) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_LIST_LIMIT])
    return shown + (f", ... ({len(keys) - _LIST_LIMIT} more)" if len(keys) > _LIST_LIMIT else "")


def read_torch_checkpoint(path) -> object:
    """torch.load with weights_only=True on CPU; a clear error for a missing or unreadable file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights_only errors all mean "not a checkpoint we can read"
        raise ValueError(f"{path}: not a readable torch checkpoint ({type(exc).__name__}: {exc})") from exc


def _tensor_dict(obj, path: str, entry: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: entry {entry!r} is not a state dict of tensors")
    return dict(obj)


# ----------------------------------------------------------------------------------------------- taming


def _taming_attn_levels(ddconfig: dict, num_levels: int, path: str) -> list[int]:
    """Levels whose resolution is in attn_resolutions, computed as taming's encoder and decoder do."""
    resolution, wanted = int(ddconfig["resolution"]), {int(r) for r in ddconfig.get("attn_resolutions", [])}
    encoder, res = [], resolution
    for level in range(num_levels):
        if res in wanted:
            encoder.append(level)
        if level != num_levels - 1:
            res //= 2
    decoder, res = [], resolution // 2 ** (num_levels - 1)
    for level in reversed(range(num_levels)):
        if res in wanted:
            decoder.append(level)
        if level != 0:
            res *= 2
    if sorted(encoder) != sorted(decoder):
        raise ValueError(
            f"{path}: attn_resolutions {sorted(wanted)} at resolution {resolution} put attention at encoder levels "
            f"{encoder} but decoder levels {sorted(decoder)}; only matching placements are supported"
        )
    return encoder


def taming_config(config_path) -> VQGANConfig:
    """VQGANConfig from taming's yaml (`model: {target, params: {embed_dim, n_embed, ddconfig}}`)."""
    path = os.fspath(config_path)
    doc = read_config_file(path, yaml.safe_load, yaml.YAMLError, "yaml", "taming config")
    model = doc.get("model", doc) if isinstance(doc, dict) else None
    params = model.get("params") if isinstance(model, dict) else None
    if not isinstance(params, dict) or "ddconfig" not in params:
        raise ValueError(f"{path}: expected taming's layout model.params.{{embed_dim, n_embed, ddconfig}}")
    target = str(model.get("target", ""))
    if "Gumbel" in target:
        raise ValueError(f"{path}: {target} (Gumbel quantizer) is not supported; only VQModel checkpoints are")
    for name in ("embed_dim", "n_embed"):
        if name not in params:
            raise ValueError(f"{path}: model.params.{name} is missing")
    if params.get("remap") is not None:
        raise ValueError(f"{path}: codebook remapping (params.remap) is not supported")
    dd = params["ddconfig"]
    required = ("z_channels", "resolution", "ch", "ch_mult", "num_res_blocks")
    missing = [k for k in required if k not in dd]
    if missing:
        raise ValueError(f"{path}: ddconfig is missing {missing}")
    unsupported = {
        "double_z": (dd.get("double_z", False), False),
        "resamp_with_conv": (dd.get("resamp_with_conv", True), True),
        "give_pre_end": (dd.get("give_pre_end", False), False),
        "tanh_out": (dd.get("tanh_out", False), False),
        "use_linear_attn": (dd.get("use_linear_attn", False), False),
        "attn_type": (dd.get("attn_type", "vanilla"), "vanilla"),
    }
    for name, (value, supported) in unsupported.items():
        if value != supported:
            raise ValueError(f"{path}: ddconfig.{name}={value!r} is not supported (only {supported!r})")
    num_levels = len(dd["ch_mult"])
    return VQGANConfig(
        num_codes=int(params["n_embed"]),
        code_dim=int(params["embed_dim"]),
        z_channels=int(dd["z_channels"]),
        ch=int(dd["ch"]),
        ch_mult=list(dd["ch_mult"]),
        num_res_blocks=int(dd["num_res_blocks"]),
        attn_levels=_taming_attn_levels(dd, num_levels, path),
        in_channels=int(dd.get("in_channels", 3)),
        out_channels=int(dd.get("out_ch", 3)),
        l2_normalize=False,
        image_size=int(dd["resolution"]),
        source="taming",
    )


def taming_state_dict(ckpt_path) -> dict[str, torch.Tensor]:
    """The model weights of a taming checkpoint in our key names (loss.* dropped)."""
    path = os.fspath(ckpt_path)
    ckpt = read_torch_checkpoint(path)
    if not isinstance(ckpt, Mapping) or "state_dict" not in ckpt:
        found = sorted(map(str, ckpt))[:_LIST_LIMIT] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        hint = " (this looks like a LlamaGen checkpoint: use ImageTokenizer.from_llamagen)" if (
            isinstance(ckpt, Mapping) and ("model" in ckpt or "ema" in ckpt)) else ""
        raise ValueError(f"{path}: not a taming-transformers checkpoint: expected a 'state_dict' entry, found {found}{hint}")
    sd = _tensor_dict(ckpt["state_dict"], path, "state_dict")
    out = {}
    for key, value in sd.items():
        if key.startswith("loss."):
            continue
        out[CODEBOOK_KEY if key == "quantize.embedding.weight" else key] = value
    return out


# --------------------------------------------------------------------------------------------- LlamaGen

_LLAMAGEN_MID = {"0": "block_1", "1": "attn_1", "2": "block_2"}
_LLAMAGEN_IGNORED = ("quantize.codebook_used",)
_LLAMAGEN_ARGS = {  # ModelArgs / Encoder kwargs we understand -> how they are used
    "codebook_size", "codebook_embed_dim", "codebook_l2_norm", "encoder_ch_mult", "decoder_ch_mult", "z_channels",
    "ch", "num_res_blocks", "in_channels", "out_channels", "image_size", "norm_type",
    # training-only settings, accepted and ignored
    "codebook_show_usage", "commit_loss_beta", "entropy_loss_ratio", "dropout_p",
}


def _llamagen_rename(key: str, num_levels: int) -> str:
    """LlamaGen name -> ours. Its decoder.conv_blocks.0 is the LOWEST resolution (our decoder.up.{L-1})."""
    m = re.match(r"(encoder|decoder)\.conv_blocks\.(\d+)\.(res|attn|downsample|upsample)\.(.*)$", key)
    if m:
        part, index, kind, rest = m.groups()
        level = int(index) if part == "encoder" else num_levels - 1 - int(index)
        kind = "block" if kind == "res" else kind
        return f"{part}.{'down' if part == 'encoder' else 'up'}.{level}.{kind}.{rest}"
    m = re.match(r"(encoder|decoder)\.mid\.(\d+)\.(.*)$", key)
    if m and m.group(2) in _LLAMAGEN_MID:
        return f"{m.group(1)}.mid.{_LLAMAGEN_MID[m.group(2)]}.{m.group(3)}"
    return CODEBOOK_KEY if key == "quantize.embedding.weight" else key


def _require(sd: Mapping, key: str, path: str) -> torch.Tensor:
    if key not in sd:
        raise ValueError(f"{path}: not a LlamaGen VQ checkpoint: key {key!r} is missing")
    return sd[key]


def _levels(sd: Mapping, prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    return sorted({int(m.group(1)) for k in sd if (m := pattern.match(k))})


def llamagen_config(sd: Mapping[str, torch.Tensor], path: str, model_args: dict) -> VQGANConfig:
    """Architecture from the tensor shapes; explicit model_args must agree with them."""
    unknown = sorted(set(model_args) - _LLAMAGEN_ARGS)
    if unknown:
        raise ValueError(f"from_llamagen: unknown model_args {unknown}; known: {sorted(_LLAMAGEN_ARGS)}")
    if model_args.get("norm_type", "group") != "group":
        raise ValueError(f"from_llamagen: norm_type={model_args['norm_type']!r} is not supported (only 'group')")
    if any(k.startswith("encoder.down.") for k in sd):
        raise ValueError(f"{path}: not a LlamaGen VQ checkpoint: it has taming-style encoder.down.* keys "
                         "(a taming checkpoint? use ImageTokenizer.from_taming)")
    conv_in = _require(sd, "encoder.conv_in.weight", path)
    codebook = _require(sd, "quantize.embedding.weight", path)
    ch = conv_in.shape[0]
    enc_levels, dec_levels = _levels(sd, "encoder.conv_blocks"), _levels(sd, "decoder.conv_blocks")
    if not enc_levels or enc_levels != list(range(len(enc_levels))) or dec_levels != enc_levels:
        raise ValueError(f"{path}: encoder/decoder conv_blocks levels {enc_levels} / {dec_levels} are inconsistent")
    num_levels = len(enc_levels)
    blocks = _levels(sd, "encoder.conv_blocks.0.res")
    ch_mult = [_require(sd, f"encoder.conv_blocks.{i}.res.0.conv1.weight", path).shape[0] // ch for i in range(num_levels)]
    dec_mult = [_require(sd, f"decoder.conv_blocks.{num_levels - 1 - i}.res.0.conv1.weight", path).shape[0] // ch
                for i in range(num_levels)]
    enc_attn = [i for i in range(num_levels) if _levels(sd, f"encoder.conv_blocks.{i}.attn")]
    dec_attn = sorted(num_levels - 1 - j for j in range(num_levels) if _levels(sd, f"decoder.conv_blocks.{j}.attn"))
    if enc_attn != dec_attn:
        raise ValueError(f"{path}: attention at encoder levels {enc_attn} but decoder levels {dec_attn}")
    inferred = {
        "codebook_size": codebook.shape[0], "codebook_embed_dim": codebook.shape[1],
        "z_channels": _require(sd, "encoder.conv_out.weight", path).shape[0], "ch": ch,
        "num_res_blocks": len(blocks), "encoder_ch_mult": ch_mult, "decoder_ch_mult": dec_mult,
        "in_channels": conv_in.shape[1], "out_channels": _require(sd, "decoder.conv_out.weight", path).shape[0],
    }
    for name, value in inferred.items():
        if name in model_args and list(_as_list(model_args[name])) != list(_as_list(value)):
            raise ValueError(
                f"from_llamagen: {name}={model_args[name]!r} does not match the checkpoint {path}, whose tensors say {value!r}"
            )
    return VQGANConfig(
        num_codes=inferred["codebook_size"], code_dim=inferred["codebook_embed_dim"], z_channels=inferred["z_channels"],
        ch=ch, ch_mult=ch_mult, decoder_ch_mult=dec_mult, num_res_blocks=inferred["num_res_blocks"],
        attn_levels=enc_attn, in_channels=inferred["in_channels"], out_channels=inferred["out_channels"],
        l2_normalize=bool(model_args.get("codebook_l2_norm", True)),
        image_size=int(model_args.get("image_size", 256)), source="llamagen",
    )


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def llamagen_model_args(config_path) -> dict:
    """ModelArgs (and Encoder/Decoder kwargs, image_size) from a JSON file such as the fixture's config.json."""
    path = os.fspath(config_path)
    doc = read_config_file(path, json.load, json.JSONDecodeError, "JSON", "LlamaGen config")
    args = dict(doc.get("ModelArgs", {}))
    args.update(doc.get("non_default_encoder_decoder_kwargs", {}))
    if "image_size" in doc:
        args["image_size"] = doc["image_size"]
    return args


def llamagen_state_dict(ckpt_path, weights: str = "auto") -> tuple[dict[str, torch.Tensor], str]:
    """(LlamaGen-named state dict, entry used). weights: 'auto' (ema, else model, else state_dict), 'ema', 'model'."""
    path = os.fspath(ckpt_path)
    ckpt = read_torch_checkpoint(path)
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"{path}: not a LlamaGen checkpoint: expected a dict with a 'model' or 'ema' entry, "
                         f"got {type(ckpt).__name__}")
    order = {"auto": ("ema", "model", "state_dict"), "ema": ("ema",), "model": ("model",)}.get(weights)
    if order is None:
        raise ValueError(f"from_llamagen: weights must be 'auto', 'ema' or 'model', got {weights!r}")
    entry = next((name for name in order if name in ckpt), None)
    if entry is None:
        hint = " (a taming checkpoint? use ImageTokenizer.from_taming)" if "state_dict" in ckpt else ""
        raise ValueError(f"{path}: no {' / '.join(map(repr, order))} entry; found {sorted(map(str, ckpt))[:_LIST_LIMIT]}{hint}")
    return _tensor_dict(ckpt[entry], path, entry), entry


def llamagen_to_ours(sd: Mapping[str, torch.Tensor], num_levels: int) -> dict[str, torch.Tensor]:
    return {_llamagen_rename(k, num_levels): v for k, v in sd.items() if k not in _LLAMAGEN_IGNORED}


# ------------------------------------------------------------------------------------------ validation


def load_weights(model: torch.nn.Module, state: Mapping[str, torch.Tensor], origin: str) -> None:
    """Strict load with errors that list missing/unexpected keys and shape mismatches, codebook first."""
    expected = model.state_dict()
    check_weights(expected, state, origin)
    merged = {k: state.get(k, v) for k, v in expected.items()}
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in merged.items()}, strict=True)


def check_weights(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], origin: str) -> None:
    """The checks of `load_weights` against a model's state dict (a meta one will do), copying nothing."""
    # quantizer-internal buffers (usage counters, flags) are not in published checkpoints: keep their defaults
    optional = {k for k in expected if k.startswith("quantize.") and k != CODEBOOK_KEY}
    missing = sorted(set(expected) - set(state) - optional)
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = [f"missing keys: {_format_keys(missing)}" if missing else "",
                 f"unexpected keys: {_format_keys(unexpected)}" if unexpected else ""]
        raise ValueError(f"{origin}: checkpoint does not match the configured model; " + "; ".join(p for p in parts if p))
    book = state[CODEBOOK_KEY]
    if tuple(book.shape) != tuple(expected[CODEBOOK_KEY].shape):
        k, d = expected[CODEBOOK_KEY].shape
        raise ValueError(f"{origin}: codebook has shape {tuple(book.shape)} but the config says {k} codes of dim {d}")
    wrong = [f"{k} {tuple(state[k].shape)} (model expects {tuple(v.shape)})"
             for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise ValueError(f"{origin}: tensor shapes do not match the configured model: {_format_keys(wrong)}")


def field_checks(config: VQGANConfig, state: Mapping[str, torch.Tensor]) -> list:
    """Which tensor dimension (or block count) each sizing field of `config` must equal (our key names)."""
    levels = min(count(state, "encoder.down"), len(config.ch_mult))
    checks = [
        dim_check("num_codes", config.num_codes, state, CODEBOOK_KEY, 0),
        dim_check("code_dim", config.code_dim, state, CODEBOOK_KEY, 1),
        dim_check("ch", config.ch, state, "encoder.conv_in.weight", 0),
        dim_check("in_channels", config.in_channels, state, "encoder.conv_in.weight", 1),
        dim_check("z_channels", config.z_channels, state, "encoder.conv_out.weight", 0),
        dim_check("out_channels", config.out_channels, state, "decoder.conv_out.weight", 0),
        count_check("len(ch_mult)", len(config.ch_mult), state, "encoder.down"),
        count_check("num_res_blocks", config.num_res_blocks, state, "encoder.down.0.block"),
    ]
    for i in range(levels):
        checks.append(dim_check(f"ch_mult[{i}]", config.ch_mult[i], state, f"encoder.down.{i}.block.0.conv1.weight",
                                0, scale=config.ch))
        checks.append(dim_check(f"decoder_ch_mult[{i}]", config.decoder_ch_mult[i], state,
                                f"decoder.up.{i}.block.0.conv1.weight", 0, scale=config.ch))
    return checks
