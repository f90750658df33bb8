"""BEST-RQ token agreement under the copies a dataset may hold: mmtok's frontends vs the SpeechBrain / NeMo recipes.

For each clip of the robustness set (tests/audio_robustness_set.py: the real CMU ARCTIC clip and the espeak-ng
clip, both in tests/data/audio) and each perturbed copy (resampling by soxr and scipy's resample_poly from
22.05 / 44.1 / 48 kHz, stereo / 6-channel, int16 / int24 / float32 / Ogg files, int16 re-quantization, gains,
white and pink noise at 80 / 60 dB SNR, 3 s of digital silence at both ends), the share of tokens equal to the
clean clip's tokens. Columns:
  kaldi v1 / whisper v1     mmtok's frontends with the absolute log floor (frontend_variant="absolute-floor")
  kaldi / whisper           the relative-floor variant (the default of new tokenizers)
  speechbrain-style         80-bin triangular mel (HTK scale, unnormalised), hamming 25 ms, centred
                            zero-padded STFT, 10 log10(max(P, 1e-10)) clipped at max - 80 dB (top_db),
                            per-utterance mean/variance
  nemo-style                pre-emphasis 0.97, hann 25 ms in a 512 FFT, centred zero-padded, Slaney mel,
                            log(P + 2**-24), per-feature normalisation (std + 1e-5); no dither (NeMo's eval mode)
All columns share the same stacking (4 frames) and random-projection quantizer (seed 0, 8192 codes), so only the
frontend and normalisation differ. The recipes are re-implemented here from their documented settings; no
upstream code is imported.

    python benchmarks/audio_robustness.py [--clips arctic espeak]
"""
from __future__ import annotations

import argparse
import math
import pathlib
import sys

import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _common import print_table, write_json  # noqa: E402
from audio_robustness_set import CLIPS, agreement_table  # noqa: E402

from mmtok.audio.features import FeatureStats, stack_frames  # noqa: E402
from mmtok.audio.io import load_audio, prepare_waveform  # noqa: E402
from mmtok.audio.tokenizer import AudioTokenizer  # noqa: E402
from mmtok.audio.whisper_mel import slaney_mel_filters  # noqa: E402

BARS = {"resampled": 0.97, "int16": 0.99, "noise 80 dB": 0.95, "noise 60 dB": 0.85, "gain": 1.0, "channels": 0.99,
        "files": 0.99, "silence": 0.95}


def htk_triangular_filters(num_bins: int, n_fft: int, sample_rate: int, fmin: float = 0.0,
                           fmax: float = 8000.0) -> torch.Tensor:
    """(n_fft // 2 + 1, num_bins) triangles equally spaced on 2595 log10(1 + f / 700), peak 1."""
    def mel(f):
        return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)

    points = torch.linspace(float(mel(fmin)), float(mel(fmax)), num_bins + 2, dtype=torch.float64)
    hz = 700.0 * (10.0 ** (points / 2595.0) - 1.0)
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    left, center, right = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    up = (freqs[None] - left) / (center - left)
    down = (right - freqs[None]) / (right - center)
    return torch.clamp(torch.minimum(up, down), min=0.0).T.to(torch.float32).contiguous()


class RecipeTokenizer:
    """A whole-clip frontend + per-utterance normalisation in front of an AudioTokenizer's quantizer."""

    def __init__(self, style: str, quantizer_of: AudioTokenizer):
        self.style, self.tok = style, quantizer_of
        if style == "speechbrain-style":
            self.n_fft, self.window = 400, torch.hamming_window(400, periodic=True)
            self.filters = htk_triangular_filters(80, 400, 16000)
        else:
            self.n_fft, self.window = 512, torch.hann_window(400, periodic=False)
            self.filters = slaney_mel_filters(80, 512, 16000).to(torch.float32)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.style == "nemo-style":
            x = torch.cat([x[:1], x[1:] - 0.97 * x[:-1]])
        spec = torch.stft(x, self.n_fft, hop_length=160, win_length=400, window=self.window, center=True,
                          pad_mode="constant", return_complex=True)
        power = spec.abs().square().T @ self.filters  # (frames, mels)
        if self.style == "speechbrain-style":
            db = 10.0 * torch.log10(power.clamp_min(1e-10))
            return torch.maximum(db, db.max() - 80.0)
        return torch.log(power + 2.0 ** -24)

    def encode(self, waveform, sample_rate: int) -> torch.Tensor:
        feats = self.features(prepare_waveform(waveform, sample_rate))
        normalized = FeatureStats.from_features(feats).normalize(feats)
        return self.tok.quantize_stacked([stack_frames(normalized, 4)])

    def encode_file(self, path) -> torch.Tensor:
        return self.encode(load_audio(path), 16000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", nargs="+", default=sorted(CLIPS), choices=sorted(CLIPS))
    args = parser.parse_args()
    base = AudioTokenizer(seed=0)
    columns = {
        "kaldi v1": AudioTokenizer(seed=0, frontend_variant="absolute-floor"),
        "kaldi (default)": base,
        "whisper v1": AudioTokenizer(seed=0, frontend="whisper", frontend_variant="absolute-floor"),
        "whisper": AudioTokenizer(seed=0, frontend="whisper"),
        "speechbrain-style": RecipeTokenizer("speechbrain-style", base),
        "nemo-style": RecipeTokenizer("nemo-style", base),
    }
    tables = {label: agreement_table(tok, names=tuple(args.clips)) for label, tok in columns.items()}
    labels = list(columns)
    results = {}
    for clip in args.clips:
        copies = tables[labels[0]][clip]
        rows = []
        for name, (group, _) in copies.items():
            values = {label: tables[label][clip][name][1] for label in labels}
            results.setdefault(clip, {})[name] = {"group": group, "bar": BARS.get(group), **values}
            bar = BARS.get(group)
            rows.append([name, "-" if bar is None else f"{100 * bar:g}"] + [f"{100 * values[l]:.1f}" for l in labels])
        print(f"\n{clip}: % of the clean clip's tokens unchanged (bar: what the tests require of the default)")
        print_table(["copy", "bar %"] + labels, rows)
    worst = {label: min((results[c][n][label] for c in results for n in results[c] if results[c][n]["bar"]),
                        default=math.nan) for label in labels}
    passed = {label: sum(results[c][n][label] >= results[c][n]["bar"] for c in results for n in results[c]
                         if results[c][n]["bar"]) for label in labels}
    total = sum(1 for c in results for n in results[c] if results[c][n]["bar"])
    print("\nsummary over the barred copies")
    print_table(["", *labels], [["worst %", *[f"{100 * worst[l]:.1f}" for l in labels]],
                                ["bars met", *[f"{passed[l]}/{total}" for l in labels]]])
    write_json("audio_robustness", {"clips": args.clips, "bars": BARS, "agreement": results, "worst": worst,
                                    "bars_met": passed, "barred_copies": total})


if __name__ == "__main__":
    main()
