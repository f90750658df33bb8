"""Kaldi-compatible log-mel filterbank ("fbank") in plain torch.

Matches Kaldi's `compute-fbank-feats` / kaldi-native-fbank with use_energy=false: per frame,
DC removal, pre-emphasis (first sample against itself), povey window, zero-padded FFT,
power spectrum, triangular HTK-mel filters (1127 ln(1 + f/700)), natural log floored at
FLT_EPSILON. `snip_edges=True` keeps only whole frames; False centres frames on the hop
grid with mirrored edges (Kaldi's convention). Dither defaults to 0 so features are a
deterministic function of the samples. Samples are scaled by `waveform_scale` (32768: the
int16 scale Kaldi recipes use) before analysis, which only moves the log floor.
"""
from __future__ import annotations

import math

import torch

from .frontend import BandedProduct, FrameFrontend, next_pow2

FLT_EPSILON = 1.1920928955078125e-07
WINDOWS = ("povey", "hann", "hanning", "hamming", "rectangular", "blackman")


def kaldi_mel(freq):
    return 1127.0 * torch.log1p(torch.as_tensor(freq, dtype=torch.float64) / 700.0)


def kaldi_mel_banks(num_bins: int, n_fft: int, sample_rate: float, low_freq: float, high_freq: float) -> torch.Tensor:
    """(n_fft // 2 + 1, num_bins) triangular weights, equal in mel, as Kaldi's MelBanks (no VTLN).

    Kaldi leaves the Nyquist bin out of every filter; its row is zero here.
    """
    nyquist = 0.5 * sample_rate
    high = high_freq if high_freq > 0 else nyquist + high_freq
    if not 0 <= low_freq < high <= nyquist:
        raise ValueError(f"fbank: need 0 <= low_freq < high_freq <= {nyquist}, got low_freq={low_freq}, "
                         f"high_freq={high_freq}")
    mel_low, mel_high = kaldi_mel(low_freq), kaldi_mel(high)
    delta = (mel_high - mel_low) / (num_bins + 1)
    edges = mel_low + delta * torch.arange(num_bins + 2, dtype=torch.float64)
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    mel = kaldi_mel(torch.arange(n_fft // 2, dtype=torch.float64) * (sample_rate / n_fft))[None, :]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    weights = torch.where((mel > left) & (mel < right), torch.where(mel <= center, up, down), 0.0)
    return torch.cat([weights, weights.new_zeros(num_bins, 1)], dim=1).T.contiguous()


def kaldi_window(kind: str, length: int, blackman_coeff: float = 0.42) -> torch.Tensor:
    """Kaldi's analysis windows (symmetric, over length - 1)."""
    n = torch.arange(length, dtype=torch.float64)
    a = 2 * math.pi / (length - 1)
    if kind == "povey":
        return (0.5 - 0.5 * torch.cos(a * n)).pow(0.85)
    if kind in ("hann", "hanning"):
        return 0.5 - 0.5 * torch.cos(a * n)
    if kind == "hamming":
        return 0.54 - 0.46 * torch.cos(a * n)
    if kind == "rectangular":
        return torch.ones(length, dtype=torch.float64)
    if kind == "blackman":
        return blackman_coeff - 0.5 * torch.cos(a * n) + (0.5 - blackman_coeff) * torch.cos(2 * a * n)
    raise ValueError(f"fbank: window_type must be one of {WINDOWS}, got {kind!r}")


class KaldiFbank(FrameFrontend):
    """Kaldi fbank features, (frames, num_mel_bins) float32 per clip; see the module docstring."""

    name = "kaldi"

    def __init__(self, *, sample_rate: int = 16000, num_mel_bins: int = 80, frame_length_ms: float = 25.0,
                 frame_shift_ms: float = 10.0, preemph_coeff: float = 0.97, remove_dc_offset: bool = True,
                 window_type: str = "povey", low_freq: float = 20.0, high_freq: float = 0.0,
                 snip_edges: bool = True, dither: float = 0.0, log_floor: float = FLT_EPSILON,
                 waveform_scale: float = 32768.0, round_to_power_of_two: bool = True):
        if dither != 0.0:
            raise ValueError("fbank: dither must be 0 (tokens must be a deterministic function of the audio)")
        if num_mel_bins < 1:
            raise ValueError(f"fbank: num_mel_bins must be >= 1, got {num_mel_bins}")
        self.sample_rate = int(sample_rate)
        self.num_mel_bins = int(num_mel_bins)
        self.frame_length_ms, self.frame_shift_ms = float(frame_length_ms), float(frame_shift_ms)
        self.frame_length = int(sample_rate * frame_length_ms / 1000)
        self.frame_shift = int(sample_rate * frame_shift_ms / 1000)
        if self.frame_length < 2 or self.frame_shift < 1:
            raise ValueError(f"fbank: frame_length_ms={frame_length_ms} / frame_shift_ms={frame_shift_ms} too small")
        self.preemph_coeff, self.remove_dc_offset = float(preemph_coeff), bool(remove_dc_offset)
        self.window_type, self.low_freq, self.high_freq = window_type, float(low_freq), float(high_freq)
        self.snip_edges, self.dither = bool(snip_edges), float(dither)
        self.log_floor, self.waveform_scale = float(log_floor), float(waveform_scale)
        self.round_to_power_of_two = bool(round_to_power_of_two)
        self.n_fft = next_pow2(self.frame_length) if round_to_power_of_two else self.frame_length
        if not snip_edges:
            self.pad_mode = "symmetric"
            self.left_pad = (self.frame_length - self.frame_shift) // 2
        window = kaldi_window(window_type, self.frame_length)
        self.window = window.to(torch.float32)
        self._scaled_window = (window * self.waveform_scale).to(torch.float32)  # scaling folded into the window
        self.fft_size = self.n_fft
        self._window_parts = torch.view_as_real(torch.fft.rfft(window, n=self.n_fft)).reshape(-1).to(torch.float32)
        self.mel_banks = kaldi_mel_banks(self.num_mel_bins, self.n_fft, sample_rate, low_freq, high_freq).to(
            torch.float32)
        self._mel_product = BandedProduct(self.mel_banks)

    def num_frames(self, num_samples: int) -> int:
        if self.snip_edges:
            return 0 if num_samples < self.frame_length else 1 + (num_samples - self.frame_length) // self.frame_shift
        return (num_samples + self.frame_shift // 2) // self.frame_shift

    def max_pad(self) -> int:
        return 0 if self.snip_edges else self.frame_length

    def frame_inputs(self, segment: torch.Tensor, count: int, out: torch.Tensor, aux: torch.Tensor) -> None:
        """Scaled, pre-emphasised, windowed frames into out[:, :L]; each raw frame's sum into aux (for DC removal)."""
        length, shift, k = self.frame_length, self.frame_shift, self.preemph_coeff
        if self.remove_dc_offset:
            # a frame is `whole` full hops plus `rest` samples: sum hop totals, in the same order for every frame
            whole, rest = divmod(length, shift)
            hops = segment[: (count + whole - 1) * shift].view(-1, shift).sum(dim=1)
            total = hops[:count].clone()
            for j in range(1, whole):
                total += hops[j: j + count]
            if rest:
                total += segment[whole * shift:].unfold(0, rest, shift)[:count].sum(dim=1)
            aux.copy_(total)
        if k == 0.0:
            emphasised = segment
        else:
            emphasised = torch.empty_like(segment)
            torch.sub(segment[1:], segment[:-1], alpha=k, out=emphasised[1:])
            torch.mul(segment[:1], 1.0 - k, out=emphasised[:1])  # every element set: no stale NaN reaches a frame
        window = out[:, :length]
        torch.mul(emphasised.unfold(0, length, shift)[:count], self._scaled_window, out=window)
        if k != 0.0 and self.window[0] != 0.0:  # Kaldi: a frame's first sample is pre-emphasised against itself
            window[:, 0] = segment.unfold(0, length, shift)[:count, 0] * ((1.0 - k) * float(self._scaled_window[0]))

    def mel_power(self, frames: torch.Tensor, frame_sums: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.rfft(frames)
        parts = torch.view_as_real(spectrum)
        if self.remove_dc_offset:
            # emph(x - m) = emph(x) - (1 - k) m on every sample: subtract its windowed spectrum (rank one)
            coeff = frame_sums * (-(1.0 - self.preemph_coeff) * self.waveform_scale / self.frame_length)
            parts.view(parts.shape[0], -1).addr_(coeff, self._window_parts)
        power = torch.addcmul(parts[..., 0] * parts[..., 0], parts[..., 1], parts[..., 1])
        return self._mel_product(power)

    def sample_scale(self) -> float:
        return self.waveform_scale

    def mel_weights(self) -> torch.Tensor:
        return self.mel_banks

    def config(self) -> dict:
        return {"name": self.name, "sample_rate": self.sample_rate, "num_mel_bins": self.num_mel_bins,
                "frame_length_ms": self.frame_length_ms, "frame_shift_ms": self.frame_shift_ms,
                "preemph_coeff": self.preemph_coeff, "remove_dc_offset": self.remove_dc_offset,
                "window_type": self.window_type, "low_freq": self.low_freq, "high_freq": self.high_freq,
                "snip_edges": self.snip_edges, "dither": self.dither, "log_floor": self.log_floor,
                "waveform_scale": self.waveform_scale, "round_to_power_of_two": self.round_to_power_of_two,
                "mel_scale": "htk (1127 ln(1 + f/700))", "log": "natural"}
