"""`mmtok tokenize --audio-codec PATH`: audio inputs tokenized by a codec loaded with mmtok.load (the SNAC fixture),
read at the codec's rate, written as codec blocks; a bad file is a failure record; the codes equal the codec's
own encode, and the codec copy kept with the output decodes them."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch

pytestmark = pytest.mark.timeout(240)
ROOT = pathlib.Path(__file__).resolve().parents[1]
SNAC = ROOT / "tests" / "data" / "snac" / "plain"
SPEECH = ROOT / "tests" / "data" / "audio" / "arctic_a0007.wav"


def test_tokenize_with_an_audio_codec(tmp_path, seed):
    import mmtok
    from mmtok.audio.io import load_audio
    from mmtok.data import TokenShards
    from mmtok.stream.segments import AudioCodec

    media = tmp_path / "media"
    media.mkdir()
    speech, rate = soundfile.read(SPEECH, dtype="float32")
    soundfile.write(media / "speech.wav", speech[: rate // 2], rate)
    noise = np.random.default_rng(seed).standard_normal(11025).astype(np.float32) * 0.1
    soundfile.write(media / "noise.flac", noise, 22050)
    (media / "broken.wav").write_bytes(b"RIFF....WAVEfmt not really")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "mmtok", "tokenize", str(media), "--out", str(out), "--audio-codec",
                           str(SNAC), "--workers", "1", "--no-progress"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert proc.returncode == 1, proc.stderr  # finished, with one failed input
    codec = mmtok.load(SNAC)
    shards = TokenShards(out)
    assert sorted(shards[i].key for i in range(len(shards))) == ["noise.flac", "speech.wav"]
    for i in range(len(shards)):
        (segment,) = shards.segments(i)
        assert isinstance(segment, AudioCodec)
        want = codec.encode(load_audio(shards[i].source, codec.sample_rate), codec.sample_rate)
        assert torch.equal(segment.codes, want), shards[i].key
        assert shards[i].grid == list(want.shape)
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [f["key"] for f in failures] == ["broken.wav"]
    vocab = json.loads((out / "manifest.json").read_text())["vocabulary"]
    assert [r["size"] for r in vocab["modalities"]["audio_codec"]] == [16] * codec.codes_per_frame
    assert "audio" not in vocab["modalities"]
    copy = mmtok.load(out / "tokenizers" / "audio")  # the kept copy decodes the tokens
    (segment,) = shards.segments(0)
    assert torch.equal(copy.decode(segment.codes), codec.decode(segment.codes))


def test_audio_codec_option_errors(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    (tmp_path / "a.wav").write_bytes(b"")

    def run(*args):
        return subprocess.run([sys.executable, "-m", "mmtok", "tokenize", str(tmp_path), "--out",
                               str(tmp_path / "out"), "--no-progress", *args], capture_output=True, text=True,
                              env=env, cwd=ROOT)

    proc = run("--audio-codec", str(SNAC), "--audio-tokenizer", "bestrq:seed=0")
    assert proc.returncode == 2 and "--audio-tokenizer and --audio-codec both given" in proc.stderr
    from mmtok.audio.tokenizer import AudioTokenizer

    AudioTokenizer(seed=0).save_pretrained(tmp_path / "bestrq")  # BEST-RQ: tokens that cannot be decoded
    proc = run("--audio-codec", str(tmp_path / "bestrq"))
    assert proc.returncode == 2 and "--audio-codec" in proc.stderr and "decoded" in proc.stderr, proc.stderr
