"""Whisper/librosa-style log-mel spectrogram in plain torch (the second frontend).

librosa.feature.melspectrogram(center=True, pad_mode="reflect", power=2) with a periodic
Hann window and Slaney mel filters (Slaney scale and area normalisation, as Whisper's
mel_filters), then log10 floored at 1e-10. Whisper's own last step (clip to max - 8, then
(x + 4) / 4) uses the utterance maximum, so it is optional here (`whisper_scaling`): the
tokenizer normalises each mel channel instead, which makes an affine rescaling irrelevant.
"""
from __future__ import annotations

import math

import torch

from .frontend import BandedProduct, FrameFrontend


def slaney_hz_to_mel(freq: torch.Tensor) -> torch.Tensor:
    freq = torch.as_tensor(freq, dtype=torch.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    linear = freq / f_sp
    return torch.where(freq >= min_log_hz, min_log_hz / f_sp + torch.log(freq.clamp_min(1e-10) / min_log_hz) / logstep,
                       linear)


def slaney_mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return torch.where(mel >= min_log_mel, min_log_hz * torch.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def slaney_mel_filters(num_bins: int, n_fft: int, sample_rate: float, fmin: float = 0.0,
                       fmax: float | None = None) -> torch.Tensor:
    """(n_fft // 2 + 1, num_bins) Slaney-normalised triangular filters (librosa.filters.mel defaults)."""
    fmax = sample_rate / 2 if fmax is None else fmax
    fft_freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    mel_points = torch.linspace(float(slaney_hz_to_mel(torch.tensor(fmin))), float(slaney_hz_to_mel(torch.tensor(fmax))),
                                num_bins + 2, dtype=torch.float64)
    hz_points = slaney_mel_to_hz(mel_points)
    widths = hz_points[1:] - hz_points[:-1]
    ramps = hz_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = torch.clamp(torch.minimum(lower, upper), min=0.0)
    weights *= (2.0 / (hz_points[2:] - hz_points[:-2]))[:, None]
    return weights.T.contiguous()


class WhisperLogMel(FrameFrontend):
    """log10 mel power spectrogram, (frames, num_mel_bins) float32 per clip, 1 + samples // hop frames."""

    name = "whisper"
    pad_mode = "reflect"

    def __init__(self, *, sample_rate: int = 16000, num_mel_bins: int = 80, n_fft: int = 400,
                 hop_length: int = 160, fmin: float = 0.0, fmax: float | None = None, log_floor: float = 1e-10,
                 whisper_scaling: bool = False):
        self.sample_rate, self.num_mel_bins = int(sample_rate), int(num_mel_bins)
        self.frame_length, self.frame_shift = int(n_fft), int(hop_length)
        self.left_pad = self.frame_length // 2
        self.fft_size = self.frame_length
        self.fmin, self.fmax = float(fmin), (None if fmax is None else float(fmax))
        self.log_floor, self.whisper_scaling = float(log_floor), bool(whisper_scaling)
        n = torch.arange(self.frame_length, dtype=torch.float64)
        self.window = (0.5 - 0.5 * torch.cos(2 * math.pi * n / self.frame_length)).to(torch.float32)  # periodic
        self.mel_filters = slaney_mel_filters(self.num_mel_bins, self.frame_length, sample_rate, fmin, fmax).to(
            torch.float32)
        self._mel_product = BandedProduct(self.mel_filters)

    def num_frames(self, num_samples: int) -> int:
        return 1 + num_samples // self.frame_shift

    def frame_inputs(self, segment: torch.Tensor, count: int, out: torch.Tensor, aux: torch.Tensor) -> None:
        torch.mul(segment.unfold(0, self.frame_length, self.frame_shift)[:count], self.window, out=out)

    def mel_power(self, frames: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        parts = torch.view_as_real(torch.fft.rfft(frames))
        power = torch.addcmul(parts[..., 0] * parts[..., 0], parts[..., 1], parts[..., 1])
        return self._mel_product(power)

    def log(self, power: torch.Tensor) -> torch.Tensor:
        return power.log10_()

    def mel_weights(self) -> torch.Tensor:
        return self.mel_filters

    def __call__(self, waveform, lengths=None):
        feats, counts = super().__call__(waveform, lengths)
        if self.whisper_scaling:
            feats = self.scale_like_whisper(feats, counts)
        return feats, counts

    @staticmethod
    def scale_like_whisper(feats: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Whisper's utterance-level dynamic range clip (max - 8) and (x + 4) / 4 rescale."""
        if feats.ndim == 2:
            return (torch.maximum(feats, feats.max() - 8.0) + 4.0) / 4.0
        valid = torch.arange(feats.shape[1])[None, :] < counts[:, None]
        peak = feats.masked_fill(~valid[..., None], -math.inf).amax(dim=(1, 2), keepdim=True)
        return ((torch.maximum(feats, peak - 8.0) + 4.0) / 4.0) * valid[..., None]

    def config(self) -> dict:
        return {"name": self.name, "sample_rate": self.sample_rate, "num_mel_bins": self.num_mel_bins,
                "n_fft": self.frame_length, "hop_length": self.frame_shift, "window": "hann (periodic)",
                "center": True, "pad_mode": "reflect", "fmin": self.fmin, "fmax": self.fmax,
                "mel_scale": "slaney", "mel_norm": "slaney", "log": "log10", "log_floor": self.log_floor,
                "whisper_scaling": self.whisper_scaling}
