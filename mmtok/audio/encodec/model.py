"""`EncodecCodec`: EnCodec from a `transformers` `EncodecModel` folder, with transformers' numerics.

Codes are (num_quantizers, frames) int64 for one clip, frames = ceil(samples / hop) (hop = prod of the
upsampling ratios, 320 at 24 kHz); the number of quantizers follows the bandwidth (`bandwidth=` in kbps, one of
the config's `target_bandwidths`; the smallest by default, as transformers). The residual VQ lookup is
`mmtok.nearest_code` (squared L2, as EnCodec's euclidean codebook; no distance matrix). Weight norm is folded at
load time from any of its stored forms (`parametrizations.weight.original0/1`, `weight_g/weight_v`) or read
folded. Chunked configurations (the 48 kHz model: `chunk_length_s`, per-chunk scales) are refused for now with a
message; the 24 kHz model and other unchunked configs load.
"""
from __future__ import annotations

import math
import os
import pathlib
import re
from typing import Mapping

import torch
from torch import nn

from ...ops import nearest_code
from ...tokenizer.folder import read_config, read_folder, save_folder
from ...tokenizer.protocol import AUDIO_AXES, CodeSpec
from ...tokenizer.weights import find_weights, load_exactly, read_state_dict
from ..io import prepare_waveform
from .layers import LSTMBlock, ResidualBlock, SConv1d, SConvTranspose1d, elu

FORMAT = "mmtok.audio.encodec"
# EncodecConfig defaults (transformers 5.24) for configs that omit a field
DEFAULTS = {"target_bandwidths": [1.5, 3.0, 6.0, 12.0, 24.0], "sampling_rate": 24000, "audio_channels": 1,
            "normalize": False, "chunk_length_s": None, "overlap": None, "hidden_size": 128, "num_filters": 32,
            "num_residual_layers": 1, "upsampling_ratios": [8, 5, 4, 2], "norm_type": "weight_norm",
            "kernel_size": 7, "last_kernel_size": 7, "residual_kernel_size": 3, "dilation_growth_rate": 2,
            "use_causal_conv": True, "pad_mode": "reflect", "compress": 2, "num_lstm_layers": 2,
            "trim_right_ratio": 1.0, "codebook_size": 1024, "codebook_dim": None, "use_conv_shortcut": True}
_INT_FIELDS = ("sampling_rate", "audio_channels", "hidden_size", "num_filters", "num_residual_layers", "kernel_size",
               "last_kernel_size", "residual_kernel_size", "dilation_growth_rate", "compress", "num_lstm_layers",
               "codebook_size")


def settings_from_config(config: Mapping, origin: str) -> dict:
    s = {k: config.get(k, v) for k, v in DEFAULTS.items()}
    for name in _INT_FIELDS:
        if not isinstance(s[name], int) or isinstance(s[name], bool) or not 0 < s[name] <= 1 << 20:
            raise ValueError(f"{origin}: {name} must be a positive int, got {s[name]!r}")
    if s["codebook_dim"] is None:
        s["codebook_dim"] = s["hidden_size"]
    if not isinstance(s["codebook_dim"], int) or isinstance(s["codebook_dim"], bool) or not 0 < s["codebook_dim"] <= 1 << 20:
        raise ValueError(f"{origin}: codebook_dim must be a positive int (or null), got {s['codebook_dim']!r}")
    for name in ("use_causal_conv", "use_conv_shortcut", "normalize"):
        if not isinstance(s[name], bool):
            raise ValueError(f"{origin}: {name} must be true or false, got {s[name]!r}")
    if s["pad_mode"] not in ("reflect", "constant", "replicate", "circular"):
        raise ValueError(f"{origin}: pad_mode must be 'reflect', 'constant', 'replicate' or 'circular', "
                         f"got {s['pad_mode']!r}")
    bands = s["target_bandwidths"]
    if (not isinstance(bands, list) or not bands
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and b > 0 for b in bands)):
        raise ValueError(f"{origin}: target_bandwidths must be a non-empty list of positive numbers, got {bands!r}")
    ratio = s["trim_right_ratio"]
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0 <= ratio <= 1:
        raise ValueError(f"{origin}: trim_right_ratio must be a number in [0, 1], got {ratio!r}")
    if s["norm_type"] not in ("weight_norm", "time_group_norm"):
        raise ValueError(f"{origin}: norm_type must be 'weight_norm' or 'time_group_norm', got {s['norm_type']!r}")
    if s["chunk_length_s"] is not None:
        raise ValueError(f"{origin}: chunked EnCodec configs (chunk_length_s, the 48 kHz model's per-chunk scales) "
                         f"are not supported yet")
    if s["normalize"]:
        raise ValueError(f"{origin}: normalize=True (per-clip scale, the 48 kHz model) is not supported yet")
    if s["codebook_size"] & (s["codebook_size"] - 1):
        raise ValueError(f"{origin}: codebook_size must be a power of 2, got {s['codebook_size']}")
    ratios = s["upsampling_ratios"]
    if not isinstance(ratios, list) or not ratios or not all(isinstance(r, int) and r > 0 for r in ratios):
        raise ValueError(f"{origin}: upsampling_ratios must be a list of positive ints, got {ratios!r}")
    s["target_bandwidths"] = [float(b) for b in s["target_bandwidths"]]
    if num_quantizers(s) < 1:
        raise ValueError(f"{origin}: target_bandwidths {s['target_bandwidths']} give no quantizer at "
                         f"{frame_rate(s)} frames/s and codebook_size {s['codebook_size']}")
    return s


def hop_length(s: dict) -> int:
    return math.prod(s["upsampling_ratios"])


def frame_rate(s: dict) -> int:
    return math.ceil(s["sampling_rate"] / hop_length(s))


def num_quantizers(s: dict, bandwidth: float | None = None) -> int:
    """transformers' rule: all quantizers for the largest bandwidth, floor(bw * 1000 / (log2 K * frame rate))."""
    bits = math.ceil(math.log2(s["codebook_size"]))
    total = int(1000 * s["target_bandwidths"][-1] // (frame_rate(s) * bits))
    if bandwidth is None:
        return total
    return int(max(1, math.floor(bandwidth * 1000 / (math.log2(s["codebook_size"]) * frame_rate(s)))))


class SEANetEncoder(nn.Module):
    """SEANet encoder in EnCodec's layer order (`layers.N` = the original `model.N`). `activation(channels)` makes
    the activations (ELU here; SpeechTokenizer may use Snake); `bidirectional` makes the LSTM a BiLSTM (doubling
    the last conv's input, as SpeechTokenizer's encoder); `num_lstm_layers` 0 leaves the LSTM out."""

    def __init__(self, s: dict, *, activation=elu, bidirectional: bool = False):
        super().__init__()
        conv = dict(causal=s["use_causal_conv"], pad_mode=s["pad_mode"], group_norm=s["norm_type"] == "time_group_norm")
        layers: list[nn.Module] = [SConv1d(s["audio_channels"], s["num_filters"], s["kernel_size"], **conv)]
        scale = 1
        for ratio in reversed(s["upsampling_ratios"]):
            dim = scale * s["num_filters"]
            for j in range(s["num_residual_layers"]):
                layers.append(ResidualBlock(dim, s["residual_kernel_size"], s["dilation_growth_rate"] ** j,
                                            s["compress"], s["use_conv_shortcut"], activation=activation, **conv))
            layers += [activation(dim), SConv1d(dim, dim * 2, ratio * 2, stride=ratio, **conv)]
            scale *= 2
        dim = scale * s["num_filters"]
        if s["num_lstm_layers"]:
            layers.append(LSTMBlock(dim, s["num_lstm_layers"], bidirectional))
            dim *= 2 if bidirectional else 1
        layers += [activation(dim), SConv1d(dim, s["hidden_size"], s["last_kernel_size"], **conv)]
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class SEANetDecoder(nn.Module):
    """SEANet decoder in EnCodec's layer order; `activation` and `num_lstm_layers` 0 as in `SEANetEncoder`."""

    def __init__(self, s: dict, *, activation=elu):
        super().__init__()
        conv = dict(causal=s["use_causal_conv"], pad_mode=s["pad_mode"], group_norm=s["norm_type"] == "time_group_norm")
        scale = 2 ** len(s["upsampling_ratios"])
        layers: list[nn.Module] = [SConv1d(s["hidden_size"], scale * s["num_filters"], s["kernel_size"], **conv)]
        if s["num_lstm_layers"]:
            layers.append(LSTMBlock(scale * s["num_filters"], s["num_lstm_layers"]))
        for ratio in s["upsampling_ratios"]:
            dim = scale * s["num_filters"]
            layers += [activation(dim), SConvTranspose1d(dim, dim // 2, ratio * 2, ratio, causal=s["use_causal_conv"],
                                                         trim_right_ratio=s["trim_right_ratio"],
                                                         group_norm=conv["group_norm"])]
            for j in range(s["num_residual_layers"]):
                layers.append(ResidualBlock(dim // 2, s["residual_kernel_size"], s["dilation_growth_rate"] ** j,
                                            s["compress"], s["use_conv_shortcut"], activation=activation, **conv))
            scale //= 2
        layers += [activation(s["num_filters"]),
                   SConv1d(s["num_filters"], s["audio_channels"], s["last_kernel_size"], **conv)]
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def fold_weight_norm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every weight-normed `<name>` (g, v as parametrizations.weight.original0/1 or weight_g/weight_v) as a plain
    `<name>.weight` = g * v / ||v|| (norm over all dims but the first, as torch's weight_norm(dim=0))."""
    out, pairs = {}, {}
    for key, value in state.items():
        m = re.match(r"^(.*)\.(?:parametrizations\.weight\.original([01])|weight_([gv]))$", key)
        if m:
            part = "g" if (m.group(2) == "0" or m.group(3) == "g") else "v"
            pairs.setdefault(m.group(1), {})[part] = value
        else:
            out[key] = value
    for name, parts in pairs.items():
        if set(parts) != {"g", "v"}:
            raise ValueError(f"{name}: weight norm needs both g and v, found only {sorted(parts)}")
        g, v = parts["g"].float(), parts["v"].float()
        dims = tuple(range(1, v.dim()))
        out[f"{name}.weight"] = v * (g / v.norm(dim=dims, keepdim=True))
    return out


def to_ours(state: Mapping[str, torch.Tensor], quantizers: int) -> dict[str, torch.Tensor]:
    folded = fold_weight_norm(state)
    books = []
    for i in range(quantizers):
        key = f"quantizer.layers.{i}.codebook.embed"
        if key not in folded:
            raise ValueError(f"missing {key}")
        books.append(folded[key])
    ours = {k: v for k, v in folded.items() if not k.startswith("quantizer.")}
    ours["codebooks"] = torch.stack(books)
    return ours


class EncodecCodec(nn.Module):
    """EnCodec: `encode(waveform, sample_rate) -> (num_quantizers, frames)`, `decode(codes) -> (samples,)`."""

    def __init__(self, settings: dict):
        super().__init__()
        self._settings = dict(settings)
        self.encoder = SEANetEncoder(settings)
        self.decoder = SEANetDecoder(settings)
        q = num_quantizers(settings)
        self.codebooks = nn.Parameter(torch.zeros(q, settings["codebook_size"], settings["codebook_dim"]),
                                      requires_grad=False)
        self.eval()

    # ---------------------------------------------------------------------------------------- protocol
    @property
    def config(self) -> dict:
        return dict(self._settings)

    @property
    def sample_rate(self) -> int:
        return self._settings["sampling_rate"]

    @property
    def hop_length(self) -> int:
        return hop_length(self._settings)

    @property
    def device(self) -> torch.device:
        return self.codebooks.device

    @property
    def code_spec(self) -> CodeSpec:
        k = self.codebooks.shape[0]
        return CodeSpec("audio", AUDIO_AXES, (self._settings["codebook_size"],) * k, (self.hop_length,),
                        sample_rate=self.sample_rate, frame_rate=self.sample_rate / self.hop_length)

    # ------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_transformers(cls, directory, *, device=None, dtype=None) -> "EncodecCodec":
        directory = pathlib.Path(os.fspath(directory))
        config_path = directory / "config.json"
        config = read_config(config_path)
        if config.get("model_type") != "encodec":
            raise ValueError(f"{config_path}: model_type {config.get('model_type')!r} is not 'encodec'")
        settings = settings_from_config(config, str(config_path))
        weights = find_weights(directory)
        model = cls(settings)
        state = to_ours(read_state_dict(weights), model.codebooks.shape[0])
        ignored = [k for k in state if k.startswith("quantizer.")]
        load_exactly(model, state, str(weights), ignored=ignored)
        del dtype
        return model.to(device) if device is not None else model

    def save_pretrained(self, directory):
        return save_folder(directory, FORMAT, self.config, self.state_dict())

    @classmethod
    def from_pretrained(cls, directory, *, device=None, dtype=None) -> "EncodecCodec":
        saved = read_folder(directory, expected_format=FORMAT)
        model = cls(settings_from_config(saved.config, str(saved.config_path)))
        load_exactly(model, saved.tensors, str(saved.weights_path))
        return model.to(device) if device is not None else model

    # ---------------------------------------------------------------------------------------- inference
    def _quantizers_for(self, bandwidth: float | None) -> int:
        bands = self._settings["target_bandwidths"]
        if bandwidth is None:
            bandwidth = bands[0]
        if bandwidth not in bands:
            raise ValueError(f"bandwidth {bandwidth} is not one of this model's target_bandwidths {bands}")
        return min(num_quantizers(self._settings, bandwidth), self.codebooks.shape[0])

    @torch.no_grad()
    def encode_batch(self, audio: torch.Tensor, *, bandwidth: float | None = None) -> torch.Tensor:
        """(B, channels, samples) float at the model's rate -> codes (B, num_quantizers, frames)."""
        if audio.dim() != 3 or audio.shape[1] != self._settings["audio_channels"]:
            raise ValueError(f"audio must be (B, {self._settings['audio_channels']}, samples), got {tuple(audio.shape)}")
        residual = self.encoder(audio.to(self.device, torch.float32)).transpose(1, 2)  # (B, T, D)
        codes = []
        for book in self.codebooks[: self._quantizers_for(bandwidth)]:
            idx = nearest_code(residual, book, metric="l2")[0]
            residual = residual - book[idx]
            codes.append(idx)
        return torch.stack(codes, dim=1)

    def encode(self, waveform, sample_rate: int, *, bandwidth: float | None = None) -> torch.Tensor:
        """One clip (samples,) or (channels, samples), any rate (resampled) -> codes (num_quantizers, frames)."""
        mono = self._settings["audio_channels"] == 1
        audio = prepare_waveform(waveform, sample_rate, self.sample_rate, mono=mono)
        audio = audio.view(1, 1, -1) if mono else audio.unsqueeze(0)
        return self.encode_batch(audio, bandwidth=bandwidth)[0]

    @torch.no_grad()
    def decode_batch(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, K, frames) -> audio (B, channels, samples)."""
        if codes.dim() != 3 or not 1 <= codes.shape[1] <= self.codebooks.shape[0]:
            raise ValueError(f"codes must be (B, K, frames) with 1 <= K <= {self.codebooks.shape[0]}, "
                             f"got {tuple(codes.shape)}")
        size = self._settings["codebook_size"]
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= size):
            raise ValueError(f"codes must lie in [0, {size}), got [{int(codes.min())}, {int(codes.max())}]")
        codes = codes.to(self.device).long()
        latent = sum(self.codebooks[k][codes[:, k]] for k in range(codes.shape[1]))  # (B, T, D)
        return self.decoder(latent.transpose(1, 2))

    def decode(self, codes) -> torch.Tensor:
        """codes (K, frames) -> waveform (samples,) (mono) or (channels, samples)."""
        codes = torch.as_tensor(codes)
        if codes.dim() != 2:
            raise ValueError(f"codes must be (num_quantizers, frames) for one clip, got {tuple(codes.shape)}")
        out = self.decode_batch(codes.unsqueeze(0))[0]
        return out[0] if self._settings["audio_channels"] == 1 else out


def load_encodec(path, *, device=None, dtype=None, **options) -> EncodecCodec:
    return EncodecCodec.from_transformers(path, device=device, dtype=dtype, **options)
