"""The BEST-RQ robustness set: copies of the speech fixtures that a dataset could hold instead of the clean clip.

Used by tests/test_audio_robustness.py (the agreement bars) and benchmarks/audio_robustness.py (the table).
Every copy is made deterministically (seeded noise) from a clean 16 kHz clip:
- resampling: 16 kHz from 22.05 / 44.1 / 48 kHz sources, by soxr (the tokenizer's own resampler, inside
  `encode`) and by scipy's polyphase `resample_poly` (Kaiser window) before `encode`; sources the fixture
  does not come at are made from it with soxr's very-high-quality setting;
- channels: stereo and 6-channel copies of the mono signal, in memory and as a 48 kHz 24-bit stereo FLAC;
- files: int16 / float32 WAV, int24 FLAC, Ogg Vorbis (lossy: reported, no bar), read with `encode_file`;
- int16 re-quantization in memory; gain x0.25 / x0.5 / x2 (float, so nothing clips);
- white and pink noise at 80 and 60 dB SNR (over the clip's mean power);
- 3 s of digital silence before and after (the clip's tokens are compared at their shifted place).
Agreement: the fraction of token positions (over the shorter of the two) equal to the clean clip's tokens.
"""
from __future__ import annotations

import pathlib
import tempfile
from dataclasses import dataclass
from typing import Callable

import numpy as np
import soundfile
import soxr
import torch

DATA = pathlib.Path(__file__).parent / "data" / "audio"
CLIPS = {"arctic": DATA / "arctic_a0007.wav", "espeak": DATA / "espeak_22k.flac"}
PAD_SECONDS = 3.0  # a multiple of 40 ms: the clip's tokens keep their alignment


@dataclass
class Copy:
    name: str
    group: str  # what the bars in the issue are stated for
    encode: Callable  # tokenizer -> LongTensor (codebooks, T)
    offset: int = 0  # token index where the clean clip starts in this copy


def load_clip(name: str) -> tuple[np.ndarray, int]:
    data, rate = soundfile.read(str(CLIPS[name]), dtype="float32")
    return data, rate


def clean_16k(name: str) -> np.ndarray:
    data, rate = load_clip(name)
    return data if rate == 16000 else soxr.resample(data, rate, 16000, quality="HQ").astype(np.float32)


def _poly(x: np.ndarray, rate: int) -> np.ndarray:
    from scipy.signal import resample_poly

    g = np.gcd(16000, rate)
    return resample_poly(x.astype(np.float64), 16000 // g, rate // g).astype(np.float32)


def _noise(n: int, kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(n)
    if kind == "white":
        return white
    spectrum = np.fft.rfft(white)
    spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))  # 1/f power
    spectrum[0] = 0.0
    return np.fft.irfft(spectrum, n)


def copies(name: str, workdir: pathlib.Path) -> list[Copy]:
    """Every perturbed copy of clip `name`; files are written under `workdir`."""
    native, native_rate = load_clip(name)
    x = clean_16k(name)
    out: list[Copy] = []

    def array(label, group, samples, rate=16000, offset=0):
        samples = np.ascontiguousarray(samples)
        out.append(Copy(label, group, lambda tok: tok.encode(samples, rate), offset))

    def file(label, group, path):
        out.append(Copy(label, group, lambda tok: tok.encode_file(path)))

    for rate in (22050, 44100, 48000):
        if rate == native_rate:
            source = native
        else:
            source = soxr.resample(native, native_rate, rate, quality="VHQ").astype(np.float32)
        if rate != native_rate:  # the native source through soxr is the clean clip itself
            array(f"{rate // 1000 if rate % 1000 == 0 else rate / 1000:g} kHz, soxr", "resampled", source, rate)
        array(f"{rate // 1000 if rate % 1000 == 0 else rate / 1000:g} kHz, resample_poly", "resampled",
              _poly(source, rate))
    array("stereo", "channels", np.stack([x, x]))
    array("6 channels", "channels", np.stack([x] * 6))
    stereo48 = soxr.resample(native, native_rate, 48000, quality="VHQ").astype(np.float32)
    path = workdir / f"{name}_stereo48k_24bit.flac"
    soundfile.write(str(path), np.stack([stereo48, stereo48], axis=1), 48000, subtype="PCM_24")
    file("stereo 48 kHz FLAC 24-bit", "channels", path)
    for label, fmt, subtype, suffix in (("WAV int16", "WAV", "PCM_16", "wav"), ("WAV float32", "WAV", "FLOAT", "wav"),
                                        ("FLAC int24", "FLAC", "PCM_24", "flac"), ("OGG Vorbis", "OGG", "VORBIS", "ogg")):
        path = workdir / f"{name}_{subtype.lower()}.{suffix}"
        soundfile.write(str(path), x, 16000, format=fmt, subtype=subtype)
        file(f"file {label}", "lossy" if fmt == "OGG" else ("int16" if subtype == "PCM_16" else "files"), path)
    array("int16 re-quantized", "int16", np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16))
    for gain in (0.25, 0.5, 2.0):
        array(f"gain x{gain:g}", "gain", x * np.float32(gain))
    power = float(np.mean(x.astype(np.float64) ** 2))
    for kind in ("white", "pink"):
        for snr in (80, 60):
            noise = _noise(len(x), kind, seed=snr + (1 if kind == "pink" else 0))
            noise *= np.sqrt(power * 10 ** (-snr / 10) / np.mean(noise ** 2))
            array(f"{kind} noise {snr} dB SNR", f"noise {snr} dB", (x + noise).astype(np.float32))
    pad = np.zeros(int(PAD_SECONDS * 16000), np.float32)
    array("3 s digital silence both ends", "silence", np.concatenate([pad, x, pad]), offset=int(PAD_SECONDS * 25))
    return out


def agreement(clean: torch.Tensor, other: torch.Tensor, offset: int = 0) -> float:
    """Fraction of the clean tokens (all codebooks) found at the same place in `other`."""
    other = other[:, offset: offset + clean.shape[1]]
    n = min(clean.shape[1], other.shape[1])
    return float((clean[:, :n] == other[:, :n]).double().mean())


def agreement_table(tokenizer, names=tuple(CLIPS)) -> dict[str, dict[str, tuple[str, float]]]:
    """{clip: {copy name: (group, agreement)}} for one tokenizer (anything with encode / encode_file)."""
    table = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            clean = tokenizer.encode(clean_16k(name), 16000)
            table[name] = {c.name: (c.group, agreement(clean, c.encode(tokenizer), c.offset))
                           for c in copies(name, pathlib.Path(tmp))}
    return table
