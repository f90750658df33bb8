"""Audio I/O: file formats, PCM types, downmixing, band-limited resampling and errors that name the file."""
from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile
import soxr
import torch

from mmtok.audio.io import load_audio, prepare_waveform
from mmtok.audio.resample import StreamingResampler, resample


@pytest.fixture
def speech(data_dir):
    return load_audio(data_dir / "audio" / "arctic_a0007.wav")


def test_speech_fixture_loads_as_16k_float(speech):
    assert speech.dtype == torch.float32 and speech.ndim == 1 and speech.shape[0] == 64000
    assert 0.05 < float(speech.abs().max()) <= 1.0


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_16"), ("WAV", "PCM_32"), ("WAV", "FLOAT"),
                                         ("FLAC", "PCM_24"), ("OGG", "VORBIS"),
                                         ("MP3", "MPEG_LAYER_III")])
def test_formats_round_trip(tmp_path, seed, fmt, subtype):
    rng = np.random.default_rng(seed)
    tone = np.sin(2 * np.pi * rng.uniform(200, 2000) * np.arange(8000) / 16000)
    x = (0.3 * tone + 0.05 * rng.standard_normal(8000)).clip(-1, 1).astype(np.float32)
    path = tmp_path / f"clip.{fmt.lower()}"
    soundfile.write(str(path), x, 16000, format=fmt, subtype=subtype)
    y = load_audio(path).numpy()
    assert y.shape == x.shape
    tol = {"PCM_16": 1e-4, "PCM_32": 1e-7, "FLOAT": 0, "PCM_24": 1e-6}.get(subtype)
    if tol is None:  # lossy: compare correlation
        assert np.corrcoef(x, y)[0, 1] > 0.9
    else:
        assert np.abs(x - y).max() <= tol


def test_int_pcm_and_downmix(seed):
    g = torch.Generator().manual_seed(seed)
    pcm = torch.randint(-32768, 32767, (2, 5000), generator=g, dtype=torch.int16)
    out = prepare_waveform(pcm, 16000)
    expected = pcm.to(torch.float64).mean(0) / 32768.0
    torch.testing.assert_close(out.double(), expected, atol=1e-7, rtol=0)
    u8 = torch.randint(0, 256, (3000,), generator=g, dtype=torch.uint8)
    torch.testing.assert_close(prepare_waveform(u8.numpy(), 16000).double(), (u8.double() - 128) / 128, atol=1e-7,
                               rtol=0)
    i32 = torch.randint(-2**31, 2**31 - 1, (3000,), generator=g, dtype=torch.int32)
    torch.testing.assert_close(prepare_waveform(i32, 16000).double(), i32.double() / 2**31, atol=1e-7, rtol=0)


def test_multichannel_file_is_downmixed(tmp_path, seed):
    rng = np.random.default_rng(seed)
    x = (0.2 * rng.standard_normal((4000, 2))).astype(np.float32)
    path = tmp_path / "stereo.wav"
    soundfile.write(str(path), x, 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path).numpy(), x.mean(1), atol=1e-7)
    assert load_audio(path, mono=False).shape == (2, 4000)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampler_matches_analytic_sine(rate, seed):
    rng = np.random.default_rng(seed)
    freq = float(rng.uniform(100, 6500))  # inside the 16 kHz passband
    phase = float(rng.uniform(0, 2 * math.pi))
    if rate == 8000:
        freq = min(freq, 3400.0)
    n = rate  # one second
    t_in = np.arange(n) / rate
    x = torch.from_numpy(np.sin(2 * math.pi * freq * t_in + phase).astype(np.float32))
    y = resample(x, rate, 16000).double().numpy()
    assert abs(len(y) - 16000) <= 1
    t_out = np.arange(len(y)) / 16000
    expected = np.sin(2 * math.pi * freq * t_out + phase)
    interior = slice(800, len(y) - 800)  # the edges see the implicit zeros around the clip
    assert np.abs(y[interior] - expected[interior]).max() < 2e-3


def test_resampler_removes_what_16k_cannot_hold(seed):
    rng = np.random.default_rng(seed)
    freq = float(rng.uniform(8600, 20000))  # above the 8 kHz Nyquist frequency of the output
    x = torch.from_numpy(np.sin(2 * math.pi * freq * np.arange(44100) / 44100).astype(np.float32))
    y = resample(x, 44100, 16000)[800:-800]
    assert float(y.pow(2).mean().sqrt()) < 1e-3  # aliased, it would be a full-scale tone (rms 0.7)


def test_resampler_agrees_with_soxr_and_streams_identically(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(48000 * 3, generator=g) * 0.1
    one_shot = resample(x, 48000, 16000)
    np.testing.assert_array_equal(one_shot.numpy(), soxr.resample(x.numpy(), 48000, 16000, quality="HQ"))
    stream = StreamingResampler(48000, 16000)
    sizes = torch.randint(1, 20000, (64,), generator=g).tolist()
    pieces, start = [], 0
    for size in sizes:
        pieces.append(stream.process(x[start: start + size]))
        start += size
        if start >= len(x):
            break
    pieces.append(stream.process(x[start:]))
    pieces.append(stream.flush())
    assert torch.equal(torch.cat(pieces), one_shot)


def test_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.wav"
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        load_audio(missing)
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio")
    with pytest.raises(ValueError, match="notes.wav"):
        load_audio(text)
    empty = tmp_path / "empty.wav"
    soundfile.write(str(empty), np.zeros(0, np.float32), 16000)
    with pytest.raises(ValueError, match="empty.wav.*empty"):
        load_audio(empty)
    nan = tmp_path / "nan.wav"
    soundfile.write(str(nan), np.array([0.1, np.nan, 0.2] * 100, np.float32), 16000, subtype="FLOAT")
    with pytest.raises(ValueError, match="nan.wav.*NaN"):
        load_audio(nan)


def test_bad_arrays_are_rejected():
    with pytest.raises(ValueError, match="empty"):
        prepare_waveform(torch.zeros(0), 16000)
    with pytest.raises(ValueError, match="NaN"):
        prepare_waveform(torch.tensor([0.1, float("inf")]), 16000)
    with pytest.raises(ValueError, match="channels"):
        prepare_waveform(torch.ones(16000, 2), 16000)
    with pytest.raises(ValueError, match="sample_rate"):
        prepare_waveform(torch.ones(100), 0)
    with pytest.raises(TypeError):
        prepare_waveform("not audio", 16000)
