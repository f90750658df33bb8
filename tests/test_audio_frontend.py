"""The log-mel frontends against the references they imitate, on real speech."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mmtok.audio.fbank import KaldiFbank
from mmtok.audio.io import load_audio
from mmtok.audio.whisper_mel import WhisperLogMel


@pytest.fixture
def speech(data_dir):
    return load_audio(data_dir / "audio" / "arctic_a0007.wav")


def _random_clip(speech: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    start = int(rng.integers(0, 8000))
    length = int(rng.integers(16000, len(speech) - start))
    return speech[start: start + length] * float(rng.uniform(0.05, 1.0))


def _assert_relative(ours: np.ndarray, ref: np.ndarray, rel: float = 1e-3) -> None:
    assert ours.shape == ref.shape
    err = np.abs(ours - ref) / np.maximum(np.abs(ref), 1.0)
    assert err.max() <= rel, f"max relative error {err.max():.2e}"


def _knf(x: torch.Tensor, **opts) -> np.ndarray:
    knf = pytest.importorskip("kaldi_native_fbank", reason="kaldi-native-fbank is a test-only extra")
    o = knf.FbankOptions()
    o.frame_opts.dither = 0.0
    o.mel_opts.num_bins = opts.pop("num_mel_bins", 80)
    for key, value in opts.items():
        target = o.mel_opts if key in ("low_freq", "high_freq") else o.frame_opts
        setattr(target, key, value)
    fb = knf.OnlineFbank(o)
    fb.accept_waveform(16000, (x.double().numpy() * 32768.0).tolist())
    fb.input_finished()
    return np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)])


@pytest.mark.parametrize("snip_edges", [True, False])
def test_fbank_matches_kaldi_native_fbank(speech, seed, snip_edges):
    clip = _random_clip(speech, np.random.default_rng(seed))
    ours, frames = KaldiFbank(snip_edges=snip_edges)(clip)
    ref = _knf(clip, snip_edges=snip_edges)
    assert int(frames) == len(ref)
    _assert_relative(ours.numpy(), ref)


def test_fbank_other_settings_match_kaldi_native_fbank(speech, seed):
    rng = np.random.default_rng(seed)
    clip = _random_clip(speech, rng)
    window = str(rng.choice(["hamming", "hanning", "rectangular", "blackman"]))
    opts = dict(num_mel_bins=int(rng.integers(20, 64)), window_type=window, low_freq=float(rng.uniform(0, 200)),
                high_freq=float(rng.uniform(-1000, 0)), preemph_coeff=float(rng.uniform(0, 0.97)))
    ours, _ = KaldiFbank(**opts)(clip)
    _assert_relative(ours.numpy(), _knf(clip, **opts))


def test_whisper_log_mel_matches_librosa(speech, seed):
    librosa = pytest.importorskip("librosa", reason="librosa is a test-only extra")
    clip = _random_clip(speech, np.random.default_rng(seed))
    power = librosa.feature.melspectrogram(y=clip.double().numpy(), sr=16000, n_fft=400, hop_length=160, n_mels=80,
                                           center=True, pad_mode="reflect", power=2.0, htk=False, norm="slaney")
    ref = np.log10(np.maximum(power, 1e-10)).T
    ours, frames = WhisperLogMel()(clip)
    assert int(frames) == len(ref) == 1 + len(clip) // 160
    _assert_relative(ours.numpy(), ref)
    filters = librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)
    np.testing.assert_allclose(WhisperLogMel().mel_filters.numpy().T, filters, atol=1e-7)


@pytest.mark.parametrize("frontend", [KaldiFbank(), KaldiFbank(snip_edges=False), WhisperLogMel()])
def test_batched_with_lengths_equals_one_by_one(speech, seed, frontend):
    rng = np.random.default_rng(seed)
    clips = [_random_clip(speech, rng) for _ in range(3)]
    lengths = torch.tensor([len(c) for c in clips])
    padded = torch.zeros(3, int(lengths.max()))
    for i, c in enumerate(clips):
        padded[i, : len(c)] = c
        padded[i, len(c):] = 0.5  # garbage after the end must not leak in
    feats, counts = frontend(padded, lengths)
    for i, c in enumerate(clips):
        alone, n = frontend(c)
        assert int(counts[i]) == int(n)
        assert torch.equal(feats[i, : int(n)], alone)
        assert not feats[i, int(n):].any()


def test_fbank_frame_counts_and_too_short():
    fb = KaldiFbank()
    assert fb.num_frames(399) == 0 and fb.num_frames(400) == 1 and fb.num_frames(16000) == 98
    with pytest.raises(ValueError, match="too short"):
        fb(torch.randn(399))
    with pytest.raises(ValueError, match="dither"):
        KaldiFbank(dither=1.0)


def test_fbank_never_reads_uninitialised_memory(speech, seed, monkeypatch):
    """Scratch buffers full of NaN (as fresh memory may be) must not leak into any frame."""
    clip = _random_clip(speech, np.random.default_rng(seed))
    expected, _ = KaldiFbank()(clip)
    real_empty_like, real_empty = torch.empty_like, torch.empty
    monkeypatch.setattr(torch, "empty_like", lambda t, **kw: real_empty_like(t, **kw).fill_(float("nan")))
    monkeypatch.setattr(torch, "empty", lambda *a, **kw: real_empty(*a, **kw).fill_(float("nan")))
    poisoned, _ = KaldiFbank()(clip)
    assert torch.equal(poisoned, expected)
