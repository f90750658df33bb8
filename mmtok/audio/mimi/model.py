"""`MimiCodec`: Mimi (Kyutai; the codec of Moshi, Sesame CSM, Kyutai STT / TTS) from a `transformers` `MimiModel`
folder (`config.json` with model_type "mimi" + `model.safetensors`, as `kyutai/mimi` on the Hub), with
transformers' numerics.

Encode: causal SEANet encoder (EnCodec's layers from `mmtok.audio.encodec`, no LSTM, constant padding), the encoder
transformer (`transformer.py`), a strided conv down to the code rate (replicate padding, no bias), the split RVQ
(`quantizer.py`). Decode: the code vectors summed per RVQ through their output projections, a grouped transposed
conv up to the SEANet rate, the decoder transformer, the SEANet decoder.

Codes are (levels, frames) int64 for one clip, semantic level(s) first, frames = ceil(samples / frame_size)
(frame_size = hop * latent_stride: 1920 samples, 80 ms, for the 24 kHz release). Decoded audio has
frames * frame_size samples (transformers' `decode` without a padding mask). `num_quantizers` picks a prefix of
the levels (at least the semantic ones, as transformers), per call or as the loaded codec's default
(`mmtok.load(folder, num_quantizers=8)`: Moshi uses 8 of the release's 32). Weights in any weight-norm form are
folded; the Hub's flat key layout and `MimiModel.state_dict()`'s nested one both load.
"""
from __future__ import annotations

import os
import pathlib
import re
from typing import Mapping, Sequence

import torch
from torch import nn

from ...tokenizer.folder import read_config, read_folder, save_folder
from ...tokenizer.protocol import AUDIO_AXES, CodeSpec
from ...tokenizer.weights import find_weights, load_exactly, read_state_dict
from ..encodec.layers import SConv1d, SConvTranspose1d
from ..encodec.model import SEANetDecoder, SEANetEncoder, fold_weight_norm
from ..io import prepare_waveform
from .config import frame_size, latent_stride, seanet_settings, settings_from_config
from .quantizer import SplitResidualVQ, codebooks_from_ema
from .transformer import Transformer

FORMAT = "mmtok.audio.mimi"
# MimiModel.state_dict() (nested halves) -> the flat layout of the Hub files, which our module names follow
_NESTED = [(r"^encoder\.encoder_seanet\.", "encoder."), (r"^encoder\.encoder_transformer\.", "encoder_transformer."),
           (r"^encoder\.downsample\.", "downsample."), (r"^decoder\.upsample\.", "upsample."),
           (r"^decoder\.decoder_transformer\.", "decoder_transformer."), (r"^decoder\.decoder_seanet\.", "decoder.")]


def to_ours(state: Mapping[str, torch.Tensor], s: dict, origin: str) -> dict[str, torch.Tensor]:
    """Upstream tensors (flat or nested layout, weight norm in any form) -> our state dict; unknown keys are kept so
    the strict load lists them."""
    renamed = {}
    for key, value in fold_weight_norm(state).items():
        for pattern, target in _NESTED:
            key = re.sub(pattern, target, key)
        renamed[key] = value
    books, used = codebooks_from_ema(renamed, s, origin)
    ours = {k: v for k, v in renamed.items() if k not in set(used)}
    ours.update(books)
    return ours


class MimiCodec(nn.Module):
    """Mimi: `encode(waveform, sample_rate) -> (levels, frames)`, `decode(codes) -> waveform`."""

    def __init__(self, settings: dict, *, num_quantizers: int | None = None):
        super().__init__()
        self._settings = dict(settings)
        s, hidden, stride = settings, settings["hidden_size"], latent_stride(settings)
        seanet = seanet_settings(s)
        self.encoder = SEANetEncoder(seanet)
        self.encoder_transformer = Transformer(s)
        self.downsample = SConv1d(hidden, hidden, 2 * stride, stride=stride, causal=s["use_causal_conv"],
                                  pad_mode="replicate", bias=False)
        self.quantizer = SplitResidualVQ(s)
        self.upsample = SConvTranspose1d(hidden, hidden, 2 * stride, stride, causal=s["use_causal_conv"],
                                         trim_right_ratio=s["trim_right_ratio"], groups=s["upsample_groups"],
                                         bias=False)
        self.decoder_transformer = Transformer(s)
        self.decoder = SEANetDecoder(seanet)
        self.default_quantizers = self._levels(num_quantizers)
        self.requires_grad_(False)
        self.eval()

    # ---------------------------------------------------------------------------------------- protocol
    @property
    def config(self) -> dict:
        return {**self._settings, "model_type": "mimi", "default_num_quantizers": self.default_quantizers}

    @property
    def sample_rate(self) -> int:
        return self._settings["sampling_rate"]

    @property
    def channels(self) -> int:
        return self._settings["audio_channels"]

    @property
    def frame_size(self) -> int:
        """Samples per code frame (hop of the SEANet times the down / upsampling stride)."""
        return frame_size(self._settings)

    hop_length = frame_size

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.frame_size

    @property
    def num_quantizers(self) -> int:
        """Levels in the weights (semantic + acoustic)."""
        return self._settings["num_quantizers"]

    @property
    def num_semantic_quantizers(self) -> int:
        return self._settings["num_semantic_quantizers"]

    @property
    def device(self) -> torch.device:
        return self.quantizer.semantic_residual_vector_quantizer.codebooks.device

    @property
    def code_spec(self) -> CodeSpec:
        return CodeSpec("audio", AUDIO_AXES, (self._settings["codebook_size"],) * self.default_quantizers,
                        (self.frame_size,), sample_rate=self.sample_rate, frame_rate=self.frame_rate,
                        extra={"semantic_codebooks": self.num_semantic_quantizers, "channels": self.channels})

    # ------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_transformers(cls, directory, *, device=None, num_quantizers: int | None = None) -> "MimiCodec":
        directory = pathlib.Path(os.fspath(directory))
        config_path = directory / "config.json"
        config = read_config(config_path)
        if config.get("model_type") != "mimi":
            raise ValueError(f"{config_path}: model_type {config.get('model_type')!r} is not 'mimi'")
        settings = settings_from_config(config, str(config_path))
        weights = find_weights(directory)
        state = to_ours(read_state_dict(weights), settings, str(weights))
        model = cls(settings, num_quantizers=num_quantizers)
        load_exactly(model, state, str(weights))
        return model.to(device) if device is not None else model

    def save_pretrained(self, directory):
        return save_folder(directory, FORMAT, self.config, self.state_dict())

    @classmethod
    def from_pretrained(cls, directory, *, device=None, dtype=None, num_quantizers: int | None = None) -> "MimiCodec":
        _check_dtype(dtype, directory)
        saved = read_folder(directory, expected_format=FORMAT)
        settings = settings_from_config(saved.config, str(saved.config_path))
        if num_quantizers is None:
            num_quantizers = saved.config.get("default_num_quantizers")
        model = cls(settings, num_quantizers=num_quantizers)
        load_exactly(model, saved.tensors, str(saved.weights_path))
        return model.to(device) if device is not None else model

    # ------------------------------------------------------------------------------------------- checks
    def _levels(self, num_quantizers) -> int:
        total, semantic = self._settings["num_quantizers"], self._settings["num_semantic_quantizers"]
        if num_quantizers is None:
            return getattr(self, "default_quantizers", total)
        if not isinstance(num_quantizers, int) or isinstance(num_quantizers, bool) or \
                not semantic <= num_quantizers <= total:
            raise ValueError(f"num_quantizers must be an int from {semantic} (the semantic levels) to {total}, "
                             f"got {num_quantizers!r}")
        return num_quantizers

    def frames_for(self, samples: int) -> int:
        """Code frames of a clip of `samples` samples: ceil(samples / frame_size)."""
        return -(-int(samples) // self.frame_size)

    # ---------------------------------------------------------------------------------------- inference
    def latents(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, channels, samples) -> the encoder's continuous latents (B, hidden, frames), before the quantizer."""
        x = self.encoder(audio)
        x = self.encoder_transformer(x.transpose(1, 2)).transpose(1, 2)
        return self.downsample(x)

    @torch.no_grad()
    def encode_batch(self, audio: torch.Tensor, lengths: Sequence[int] | None = None, *,
                     num_quantizers: int | None = None) -> torch.Tensor:
        """(B, channels, samples) float at the model's rate -> codes (B, levels, frames).

        `lengths` (samples per clip; right padding beyond them is ignored): clip b's codes are
        `codes[b, :, :frames_for(lengths[b])]`, equal to encoding it alone (clips of one length run together), and
        the frames past it are 0."""
        levels = self._levels(num_quantizers)
        if audio.dim() != 3 or audio.shape[1] != self.channels or audio.shape[-1] == 0:
            raise ValueError(f"audio must be (B, {self.channels}, samples) with samples > 0, got {tuple(audio.shape)}")
        audio = audio.to(self.device, torch.float32)
        if lengths is None:
            return self.quantizer.encode(self.latents(audio), levels)
        lengths = [int(n) for n in lengths]
        total = audio.shape[-1]
        if len(lengths) != audio.shape[0] or not all(0 < n <= total for n in lengths):
            raise ValueError(f"lengths must give 1..{total} samples for each of the {audio.shape[0]} clips, "
                             f"got {lengths}")
        out = torch.zeros(audio.shape[0], levels, self.frames_for(max(lengths)), dtype=torch.int64,
                          device=self.device)
        for n in sorted(set(lengths)):
            rows = [b for b, m in enumerate(lengths) if m == n]
            out[rows, :, : self.frames_for(n)] = self.quantizer.encode(self.latents(audio[rows, :, :n]), levels)
        return out

    def encode(self, waveform, sample_rate: int, *, num_quantizers: int | None = None) -> torch.Tensor:
        """One clip (samples,) or (channels, samples), any rate (resampled; a mono model averages channels) ->
        codes (levels, frames)."""
        mono = self.channels == 1
        audio = prepare_waveform(waveform, sample_rate, self.sample_rate, mono=mono)
        if not mono and (audio.dim() != 2 or audio.shape[0] != self.channels):
            raise ValueError(f"waveform: this Mimi is {self.channels}-channel; expected ({self.channels}, samples), "
                             f"got {tuple(audio.shape)}")
        audio = audio.view(1, 1, -1) if mono else audio.unsqueeze(0)
        return self.encode_batch(audio, num_quantizers=num_quantizers)[0]

    def check_codes(self, codes, name: str = "codes") -> torch.Tensor:
        """codes (B, K, frames), integer, 1 <= K <= num_quantizers, values in range -> int64 on the device."""
        codes = torch.as_tensor(codes)
        if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
            raise ValueError(f"{name}: expected integer codes, got dtype {codes.dtype}")
        if codes.dim() != 3 or codes.shape[-1] == 0:
            raise ValueError(f"{name}: expected shape (B, levels, frames) with frames > 0, got {tuple(codes.shape)}")
        if not 1 <= codes.shape[1] <= self.num_quantizers:
            raise ValueError(f"{name}: {codes.shape[1]} codebooks; this Mimi has {self.num_quantizers} "
                             f"({self.num_semantic_quantizers} semantic first, then acoustic; a prefix decodes)")
        size = self._settings["codebook_size"]
        low, high = int(codes.min()), int(codes.max())
        if low < 0 or high >= size:
            raise ValueError(f"{name}: codes must lie in 0..{size - 1}, got {low}..{high}")
        return codes.to(self.device, torch.int64)

    def _decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        x = self.upsample(latent)
        x = self.decoder_transformer(x.transpose(1, 2)).transpose(1, 2)
        return self.decoder(x)

    @torch.no_grad()
    def decode_batch(self, codes, frames: Sequence[int] | None = None) -> torch.Tensor:
        """codes (B, K, frames) -> audio (B, channels, frames * frame_size). `frames` (per clip): clip b is decoded
        from its first frames[b] frames alone (equal to decoding it alone; samples past them are 0)."""
        codes = self.check_codes(codes)
        latent = self.quantizer.decode(codes)
        if frames is None:
            return self._decode_latent(latent)
        frames = [int(n) for n in frames]
        total = latent.shape[-1]
        if len(frames) != latent.shape[0] or not all(0 < n <= total for n in frames):
            raise ValueError(f"frames must give 1..{total} frames for each of the {latent.shape[0]} clips, "
                             f"got {frames}")
        out = torch.zeros(latent.shape[0], self.channels, max(frames) * self.frame_size, device=self.device)
        for n in sorted(set(frames)):
            rows = [b for b, m in enumerate(frames) if m == n]
            out[rows, :, : n * self.frame_size] = self._decode_latent(latent[rows, :, :n])
        return out

    def stream_encoder(self, *, num_quantizers: int | None = None):
        """A `streaming.EncodeStream`: `push(audio (B, channels, n))` -> codes (B, levels, m) of the frames completed
        so far, `flush()` -> the rest; all pieces together equal `encode_batch` of the whole (causal configs)."""
        from .streaming import EncodeStream

        return EncodeStream(self, num_quantizers)

    def stream_decoder(self):
        """A `streaming.DecodeStream`: `push(codes (B, K, m))` -> the samples completed so far (m * frame_size for
        the released trim), `flush()` -> the rest; together equal to `decode_batch` (causal configs)."""
        from .streaming import DecodeStream

        return DecodeStream(self)

    def decode(self, codes) -> torch.Tensor:
        """codes (K, frames) (any prefix of the levels) -> waveform (frames * frame_size,) for a mono model, else
        (channels, frames * frame_size)."""
        codes = torch.as_tensor(codes)
        if codes.dim() != 2:
            raise ValueError(f"codes must be (levels, frames) for one clip, got {tuple(codes.shape)}")
        out = self.decode_batch(codes.unsqueeze(0))[0]
        return out[0] if self.channels == 1 else out


def _check_dtype(dtype, path) -> None:
    if dtype is not None and dtype not in ("float32", "fp32", torch.float32):
        raise ValueError(f"{path}: the Mimi codec runs in float32; dtype={dtype!r} is not supported")


def load_mimi(path, *, device=None, dtype=None, num_quantizers: int | None = None, **options) -> MimiCodec:
    """`mmtok.load` entry for a transformers MimiModel folder; `num_quantizers` sets the default prefix of levels."""
    if options:
        raise ValueError(f"{path}: unknown options for a Mimi folder: {sorted(options)} (known: num_quantizers)")
    _check_dtype(dtype, path)
    return MimiCodec.from_transformers(path, device=device, num_quantizers=num_quantizers)
