"""`SnacCodec`: SNAC (hubertsiuzdak/snac; Orpheus TTS, mini-omni) from its Hub folder (`config.json` +
`pytorch_model.bin`), with the `snac` package's numerics.

Codes. SNAC quantises at several rates: level k has one code per `vq_strides[k]` latent steps (24 kHz release:
strides [4, 2, 1], hop 512, so 11.7 / 23.4 / 46.9 codes per second). Upstream returns a list of (B, T_k) tensors;
`encode_levels` / `to_levels` give that list. The standard layout (`encode`, `decode`, `code_spec`) is one code
frame per coarse step (the first stride): a (K, T_0) tensor whose rows are the levels' codes of that frame,
level by level and in time order inside a level (24 kHz: K = 1 + 2 + 4 = 7 rows, one frame per 2048 samples =
85.3 ms): row r of level k with s = strides[0] / strides[k] rows is `level_k[s * t + j]`. `from_levels` and
`to_levels` convert exactly. Orpheus' 7-tokens-per-frame order is a layout in `mmtok.stream.audio_layouts`.

Lengths. `encode` pads the waveform with zeros on the right to a multiple of hop * lcm(strides[0], attention
window) samples, as upstream's `preprocess`, so T_0 = ceil(samples / that) * lcm / strides[0]. `decode` returns
T_0 * strides[0] * prod(decoder_rates) samples (upstream's `decode` does not trim; crop to your length).

Noise. Upstream's decoder adds `randn * conv1x1(x)` after every upsampling (when `noise` is set), drawn from
torch's global RNG, in eval mode too: two decodes of the same codes differ. Here decoding is deterministic by
default (the noise blocks are the identity); `decode(..., noise_seed=S)` draws the noise from a generator seeded
S, which reproduces upstream's `torch.manual_seed(S); model.decode(codes)` exactly (same draws, same order).
"""
from __future__ import annotations

import math
import os
import pathlib
import re
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...tokenizer.folder import CONFIG_NAME, read_config, read_folder, save_folder
from ...tokenizer.protocol import AUDIO_AXES, CodeSpec
from ...tokenizer.weights import find_weights, load_exactly, read_state_dict
from ..encodec.model import fold_weight_norm
from ..io import prepare_waveform
from .config import WEIGHTS_NAME, hop_length, pad_unit, settings_from_config, slots
from .layers import Decoder, Encoder, MultiRateQuantizer

FORMAT = "mmtok.audio.snac"
_PROJ = re.compile(r"^(quantizer\.quantizers\.\d+\.(?:in|out)_proj)\.(.+)$")


def to_ours(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Upstream tensors -> ours: weight norm folded into `<conv>.weight` everywhere but the VQ projections, which
    keep it as `weight_g` / `weight_v` (DAC's CodebookStage; `parametrizations.weight.original0/1` renamed, a
    folded projection weight w stored as g = ||w||, v = w)."""
    projections, rest = {}, {}
    for key, value in state.items():
        m = _PROJ.match(key)
        (projections if m else rest)[key] = value
    ours = fold_weight_norm(rest)
    for key, value in projections.items():
        name, leaf = _PROJ.match(key).groups()
        if leaf in ("parametrizations.weight.original0", "weight_g"):
            ours[f"{name}.weight_g"] = value
        elif leaf in ("parametrizations.weight.original1", "weight_v"):
            ours[f"{name}.weight_v"] = value
        elif leaf == "weight":
            ours[f"{name}.weight_v"] = value
            ours[f"{name}.weight_g"] = value.flatten(1).norm(dim=1).view(-1, *([1] * (value.dim() - 1)))
        else:
            ours[key] = value
    return ours


class SnacCodec(nn.Module):
    """SNAC: `encode(waveform, sample_rate) -> (K, T_0)` frame codes, `decode(codes) -> (samples,)`."""

    def __init__(self, settings: dict):
        super().__init__()
        s = self._settings = dict(settings)
        window = s["attn_window_size"]
        self.encoder = Encoder(s["encoder_dim"], s["encoder_rates"], depthwise=s["depthwise"], window=window)
        self.quantizer = MultiRateQuantizer(s["latent_dim"], s["codebook_size"], s["codebook_dim"], s["vq_strides"])
        self.decoder = Decoder(s["latent_dim"], s["decoder_dim"], s["decoder_rates"], noise=s["noise"],
                               depthwise=s["depthwise"], window=window)
        self.requires_grad_(False)
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
        """Samples per finest-level step (prod(encoder_rates))."""
        return hop_length(self._settings)

    @property
    def frame_length(self) -> int:
        """Samples per code frame (one coarsest-level code): hop * vq_strides[0]."""
        return self.hop_length * self._settings["vq_strides"][0]

    @property
    def vq_strides(self) -> list[int]:
        return list(self._settings["vq_strides"])

    @property
    def num_levels(self) -> int:
        return len(self._settings["vq_strides"])

    @property
    def level_slots(self) -> list[int]:
        """Codes per frame of each level (e.g. [1, 2, 4])."""
        return slots(self._settings)

    @property
    def codes_per_frame(self) -> int:
        return sum(self.level_slots)

    @property
    def codebook_size(self) -> int:
        return self._settings["codebook_size"]

    @property
    def device(self) -> torch.device:
        return self.quantizer.quantizers[0].codebook.weight.device

    @property
    def code_spec(self) -> CodeSpec:
        levels = [k for k, n in enumerate(self.level_slots) for _ in range(n)]
        return CodeSpec("audio", AUDIO_AXES, (self.codebook_size,) * self.codes_per_frame, (self.frame_length,),
                        sample_rate=self.sample_rate, frame_rate=self.sample_rate / self.frame_length,
                        extra={"layout": "snac_frames", "levels": levels, "vq_strides": self.vq_strides})

    # ------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_release(cls, config_path, weights_path, *, device=None) -> "SnacCodec":
        """The Hub folder's two files (what `SNAC.from_pretrained(folder)` reads)."""
        config_path = pathlib.Path(os.fspath(config_path))
        weights_path = pathlib.Path(os.fspath(weights_path))
        settings = settings_from_config(read_config(config_path), str(config_path))
        model = cls(settings)
        load_exactly(model, to_ours(read_state_dict(weights_path)), str(weights_path))
        return model.to(device) if device is not None else model

    def save_pretrained(self, directory):
        return save_folder(directory, FORMAT, self.config, self.state_dict())

    @classmethod
    def from_pretrained(cls, directory, *, device=None, dtype=None) -> "SnacCodec":
        _check_dtype(dtype, directory)
        saved = read_folder(directory, expected_format=FORMAT)
        model = cls(settings_from_config(saved.config, str(saved.config_path)))
        load_exactly(model, saved.tensors, str(saved.weights_path))
        return model.to(device) if device is not None else model

    # ------------------------------------------------------------------------------------------ layouts
    def frames_for(self, samples: int) -> int:
        """Code frames of a clip of `samples` samples (after upstream's padding)."""
        unit = pad_unit(self._settings)
        latent = -(-int(samples) // (self.hop_length * unit)) * unit
        return latent // self._settings["vq_strides"][0]

    def to_levels(self, codes) -> list[torch.Tensor]:
        """Frame codes (K, T_0) or (B, K, T_0) -> upstream's list of per-level codes (T_k,) or (B, T_k)."""
        codes = self._frame_codes(codes, "codes")
        single = codes.dim() == 2
        codes = codes.unsqueeze(0) if single else codes
        out, row = [], 0
        for n in self.level_slots:
            level = codes[:, row: row + n].transpose(1, 2).reshape(codes.shape[0], -1)  # (B, T_0 * n)
            out.append(level[0] if single else level)
            row += n
        return out

    def from_levels(self, levels: Sequence) -> torch.Tensor:
        """Upstream's per-level codes, (T_k,) or (B, T_k) each -> frame codes (K, T_0) or (B, K, T_0), checked."""
        levels = self._level_codes(levels, "levels")
        rows = [lv.view(lv.shape[0], -1, n).transpose(1, 2) for lv, n in zip(levels[0], self.level_slots)]
        out = torch.cat(rows, dim=1)
        return out[0] if levels[1] else out

    def _check_values(self, codes: torch.Tensor, name: str) -> torch.Tensor:
        if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
            raise ValueError(f"{name}: expected integer codes, got dtype {codes.dtype}")
        if codes.numel():
            low, high = int(codes.min()), int(codes.max())
            if low < 0 or high >= self.codebook_size:
                raise ValueError(f"{name}: codes must lie in 0..{self.codebook_size - 1}, got {low}..{high}")
        return codes.to(torch.int64)

    def _frame_codes(self, codes, name: str) -> torch.Tensor:
        codes = torch.as_tensor(codes)
        k = self.codes_per_frame
        if codes.dim() not in (2, 3) or codes.shape[-2] != k or codes.shape[-1] == 0:
            raise ValueError(f"{name}: expected frame codes ({k}, frames) or (B, {k}, frames) with frames > 0 "
                             f"(this SNAC has {self.num_levels} levels with {self.level_slots} codes per frame), "
                             f"got shape {tuple(codes.shape)}")
        return self._check_values(codes, name)

    def _level_codes(self, levels, name: str) -> tuple[list[torch.Tensor], bool]:
        """(per-level codes as (B, T_k) int64, whether they were given without a batch axis), checked."""
        if isinstance(levels, torch.Tensor) or not isinstance(levels, Sequence):
            raise ValueError(f"{name}: expected a list of {self.num_levels} per-level code tensors")
        if len(levels) != self.num_levels:
            raise ValueError(f"{name}: {len(levels)} levels, this SNAC has {self.num_levels} "
                             f"(vq_strides {self.vq_strides})")
        levels = [torch.as_tensor(lv) for lv in levels]
        single = levels[0].dim() == 1
        want = 1 if single else 2
        if any(lv.dim() != want for lv in levels):
            raise ValueError(f"{name}: every level must be (T_k,) or every level (B, T_k), got shapes "
                             f"{[tuple(lv.shape) for lv in levels]}")
        levels = [self._check_values(lv.unsqueeze(0) if single else lv, f"{name}[{k}]") for k, lv in enumerate(levels)]
        frames, rem = divmod(levels[0].shape[-1], self.level_slots[0])
        expected = [frames * n for n in self.level_slots]
        if frames == 0 or rem or [lv.shape[-1] for lv in levels] != expected or len({lv.shape[0] for lv in levels}) != 1:
            raise ValueError(f"{name}: level lengths {[tuple(lv.shape) for lv in levels]} do not fit the strides "
                             f"{self.vq_strides} (level k needs frames * {self.level_slots}[k] codes, one batch)")
        return levels, single

    # ---------------------------------------------------------------------------------------- inference
    def _pad(self, audio: torch.Tensor) -> torch.Tensor:
        unit = self.hop_length * pad_unit(self._settings)
        return F.pad(audio, (0, -(-audio.shape[-1] // unit) * unit - audio.shape[-1]))

    @torch.no_grad()
    def _encode_equal(self, audio: torch.Tensor) -> torch.Tensor:
        levels = self.quantizer.encode(self.encoder(self._pad(audio)))
        return self.from_levels(levels)

    @torch.no_grad()
    def encode_batch(self, audio: torch.Tensor, lengths: Sequence[int] | None = None) -> torch.Tensor:
        """(B, 1, samples) float at the model's rate -> frame codes (B, K, T_0).

        `lengths` (samples per clip; right padding beyond them is ignored): clip b's codes are
        `codes[b, :, :frames_for(lengths[b])]`, equal to encoding it alone, and the frames past it are 0. Clips
        with the same padded length run together."""
        if not isinstance(audio, torch.Tensor) or audio.dim() != 3 or audio.shape[1] != 1 or audio.shape[-1] == 0:
            shape = tuple(audio.shape) if isinstance(audio, torch.Tensor) else type(audio).__name__
            raise ValueError(f"audio must be (B, 1, samples) with samples > 0, got {shape}")
        audio = audio.to(self.device, torch.float32)
        if lengths is None:
            return self._encode_equal(audio)
        total = audio.shape[-1]
        lengths = [int(n) for n in lengths]
        if len(lengths) != audio.shape[0] or not all(0 < n <= total for n in lengths):
            raise ValueError(f"lengths must give 1..{total} samples for each of the {audio.shape[0]} clips, "
                             f"got {lengths}")
        frames = [self.frames_for(n) for n in lengths]
        out = torch.zeros(audio.shape[0], self.codes_per_frame, max(frames), dtype=torch.int64, device=self.device)
        for f in sorted(set(frames)):
            rows = [b for b, m in enumerate(frames) if m == f]
            group = torch.zeros(len(rows), 1, max(lengths[b] for b in rows), device=self.device)
            for i, b in enumerate(rows):
                group[i, 0, : lengths[b]] = audio[b, 0, : lengths[b]]
            out[rows, :, :f] = self._encode_equal(group)
        return out

    def encode(self, waveform, sample_rate: int) -> torch.Tensor:
        """One clip (samples,) or (channels, samples; averaged), any rate (resampled) -> frame codes (K, T_0)."""
        audio = prepare_waveform(waveform, sample_rate, self.sample_rate)
        return self.encode_batch(audio.view(1, 1, -1))[0]

    def encode_levels(self, waveform, sample_rate: int) -> list[torch.Tensor]:
        """One clip -> upstream's codes: one int64 (T_k,) tensor per level."""
        return self.to_levels(self.encode(waveform, sample_rate))

    def _as_levels(self, codes, name: str) -> list[torch.Tensor]:
        """Frame codes (B, K, T_0) or per-level codes (B, T_k) -> per-level (B, T_k), checked for the decoder."""
        if isinstance(codes, (list, tuple)):
            levels, single = self._level_codes(codes, name)
            if single:
                raise ValueError(f"{name}: batched decoding takes (B, T_k) levels")
        else:
            codes = self._frame_codes(codes, name)
            if codes.dim() != 3:
                raise ValueError(f"{name}: batched decoding takes (B, {self.codes_per_frame}, frames) codes")
            levels = self.to_levels(codes)
        window = self._settings["attn_window_size"]
        steps = levels[-1].shape[-1] * self._settings["vq_strides"][-1]
        if window is not None and steps % window:
            raise ValueError(f"{name}: {levels[0].shape[-1]} frames give {steps} latent steps; this SNAC's decoder "
                             f"attention needs a multiple of its window ({window}), i.e. frames a multiple of "
                             f"{window // math.gcd(window, self._settings['vq_strides'][0])}")
        return [lv.to(self.device) for lv in levels]

    @torch.no_grad()
    def decode_batch(self, codes, frames: Sequence[int] | None = None, *, noise_seed: int | None = None) -> torch.Tensor:
        """Frame codes (B, K, T_0), or upstream's list of (B, T_k) -> audio (B, 1, T_0 * frame samples).

        `frames` (per clip): clip b is decoded from its first frames[b] frames alone (equal to decoding it
        alone; samples past are 0). `noise_seed`: upstream's stochastic noise from a generator seeded so
        (groups of equal `frames` draw one after another); None: no noise (deterministic)."""
        levels = self._as_levels(codes, "codes")
        generator = None if noise_seed is None else torch.Generator(self.device).manual_seed(int(noise_seed))
        if frames is None:
            return self.decoder(self.quantizer.decode(levels), generator)
        batch, total = levels[0].shape[0], levels[0].shape[-1] // self.level_slots[0]
        frames = [int(n) for n in frames]
        if len(frames) != batch or not all(0 < n <= total for n in frames):
            raise ValueError(f"frames must give 1..{total} frames for each of the {batch} clips, got {frames}")
        per_frame = self._settings["vq_strides"][0] * self._decoder_scale
        out = torch.zeros(batch, 1, max(frames) * per_frame, device=self.device)
        for n in sorted(set(frames)):
            rows = [b for b, m in enumerate(frames) if m == n]
            part = self._as_levels([lv[rows, : n * s] for lv, s in zip(levels, self.level_slots)], "codes")
            out[rows, :, : n * per_frame] = self.decoder(self.quantizer.decode(part), generator)
        return out

    @property
    def _decoder_scale(self) -> int:
        return math.prod(self._settings["decoder_rates"])

    def decode(self, codes, *, noise_seed: int | None = None) -> torch.Tensor:
        """Frame codes (K, T_0), or upstream's list of per-level (T_k,) codes -> waveform
        (T_0 * vq_strides[0] * prod(decoder_rates),). Deterministic unless `noise_seed` is given."""
        if isinstance(codes, (list, tuple)):
            levels, single = self._level_codes(codes, "codes")
            if not single:
                raise ValueError("codes: decode takes one clip's levels (T_k,); use decode_batch for (B, T_k)")
            return self.decode_batch(levels, noise_seed=noise_seed)[0, 0]
        codes = self._frame_codes(codes, "codes")
        if codes.dim() != 2:
            raise ValueError(f"codes: decode takes one clip's ({self.codes_per_frame}, frames) codes; use "
                             f"decode_batch for a batch")
        return self.decode_batch(codes.unsqueeze(0), noise_seed=noise_seed)[0, 0]


def _check_dtype(dtype, path) -> None:
    if dtype is not None and dtype not in ("float32", "fp32", torch.float32):
        raise ValueError(f"{path}: the SNAC codec runs in float32; dtype={dtype!r} is not supported")


def load_snac(path, *, device=None, dtype=None, config_path=None, **options) -> SnacCodec:
    """`mmtok.load` entry: a SNAC Hub folder (config.json + pytorch_model.bin), or the weight file with
    `config_path=` (default: the config.json beside it)."""
    if options:
        raise ValueError(f"{path}: unknown options for a SNAC checkpoint: {sorted(options)}")
    _check_dtype(dtype, path)
    path = pathlib.Path(os.fspath(path))
    if path.is_dir():
        weights = find_weights(path, (WEIGHTS_NAME, "model.safetensors"))
        config_path = path / CONFIG_NAME if config_path is None else config_path
    else:
        weights = path
        config_path = path.parent / CONFIG_NAME if config_path is None else config_path
    return SnacCodec.from_release(config_path, weights, device=device)
