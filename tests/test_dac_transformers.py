"""DAC from transformers' DacModel folders (weight norm as parametrizations, or folded) against transformers' own
encode / decode (fixtures: scripts/fixtures/make_transformers_dac_fixtures.py), including a decoder width that is
not divisible by 2**len(decoder_rates), which DAC builds and mmtok used to refuse."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch

import mmtok.tokenizer.registry as registry
from mmtok.audio.codec.model import AudioCodec

DATA = pathlib.Path(__file__).parent / "data" / "dac_transformers"


@pytest.fixture(scope="module")
def outputs():
    with np.load(DATA / "outputs.npz") as f:
        return {k: torch.from_numpy(f[k]) for k in f.files}


@pytest.mark.parametrize("name", ["weightnorm", "folded"])
@pytest.mark.parametrize("kind", ["speech", "noise"])
def test_codes_and_audio_match_transformers(outputs, name, kind):
    assert registry.detect_layout(DATA / name).name == "dac-transformers"
    codec = registry.load(DATA / name)
    assert isinstance(codec, AudioCodec)
    audio = outputs[f"{name}/{kind}/audio"]
    codes = codec.encode(audio, codec.sample_rate)
    expected = outputs[f"{name}/{kind}/codes"].long()
    assert codes.shape == expected.shape
    sure = outputs[f"{name}/{kind}/margin"] > 1e-4
    assert torch.equal(codes[0][sure], expected[0][sure])
    reference = outputs[f"{name}/{kind}/decoded"].reshape(-1)
    decoded = codec.decode(expected).reshape(-1)[: reference.numel()]
    torch.testing.assert_close(decoded, reference, atol=1e-4, rtol=0)


def test_round_trip(outputs, tmp_path):
    codec = registry.load(DATA / "weightnorm")
    assert codec.config["decoder_dim"] == 14  # not divisible by 2**2: DAC floors, so do we
    codec.save_pretrained(tmp_path / "d")
    again = registry.load(tmp_path / "d")
    audio = outputs["weightnorm/speech/audio"]
    assert torch.equal(again.encode(audio, codec.sample_rate), codec.encode(audio, codec.sample_rate))
