"""EnCodec from transformers' EncodecModel folders against transformers' own encode / decode (fixtures:
scripts/fixtures/make_encodec_fixtures.py), on speech and noise, at every bandwidth."""
from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest
import torch

import mmtok.tokenizer.registry as registry
from mmtok.audio.encodec import EncodecCodec
from mmtok.audio.encodec.model import fold_weight_norm

DATA = pathlib.Path(__file__).parent / "data" / "encodec"
BANDWIDTHS = {"causal": [4.0, 8.0, 12.0], "noncausal": [5.0, 10.0]}


@pytest.fixture(scope="module")
def outputs():
    with np.load(DATA / "outputs.npz") as f:
        return {k: torch.from_numpy(f[k]) for k in f.files}


@pytest.mark.parametrize("name", ["causal", "noncausal"])
@pytest.mark.parametrize("kind", ["speech", "noise"])
def test_codes_and_audio_match_transformers(outputs, name, kind):
    assert registry.detect_layout(DATA / name).name == "encodec"
    codec = registry.load(DATA / name)
    assert isinstance(codec, EncodecCodec)
    audio = outputs[f"{name}/{kind}/audio"]
    sure = outputs[f"{name}/{kind}/margin"] > 1e-4
    for bw in BANDWIDTHS[name]:
        codes = codec.encode(audio, codec.sample_rate, bandwidth=bw)
        expected = outputs[f"{name}/{kind}/codes_{bw}"].long()
        assert codes.shape == expected.shape
        assert torch.equal(codes[0][sure], expected[0][sure])
        if bool(sure.all()):
            assert torch.equal(codes, expected)
        reference = outputs[f"{name}/{kind}/decoded_{bw}"][0]
        torch.testing.assert_close(codec.decode(expected), reference, atol=1e-4, rtol=0)


def test_batch_equals_single_and_round_trip(outputs, tmp_path):
    codec = registry.load(DATA / "causal")
    clip = outputs["causal/speech/audio"][:1200]
    noise = outputs["causal/noise/audio"][:1200]
    batch = codec.encode_batch(torch.stack([clip, noise]).unsqueeze(1), bandwidth=12.0)
    assert torch.equal(batch[0], codec.encode(clip, codec.sample_rate, bandwidth=12.0))
    assert torch.equal(batch[1], codec.encode(noise, codec.sample_rate, bandwidth=12.0))
    codec.save_pretrained(tmp_path / "e")
    again = registry.load(tmp_path / "e")
    assert torch.equal(again.encode(clip, codec.sample_rate), codec.encode(clip, codec.sample_rate))
    spec = codec.code_spec
    assert spec.axes == ("codebook", "t") and spec.num_codebooks == 3 and spec.sample_rate == 6000


def test_weight_norm_forms_agree(seed):
    v, g = torch.randn(5, 3, 4), torch.rand(5, 1, 1) + 0.5
    a = fold_weight_norm({"c.parametrizations.weight.original0": g, "c.parametrizations.weight.original1": v})
    b = fold_weight_norm({"c.weight_g": g, "c.weight_v": v})
    ref = torch.nn.utils.parametrizations.weight_norm(torch.nn.Conv1d(3, 5, 4))
    with torch.no_grad():
        ref.parametrizations.weight.original0.copy_(g)
        ref.parametrizations.weight.original1.copy_(v)
    torch.testing.assert_close(a["c.weight"], ref.weight)
    torch.testing.assert_close(b["c.weight"], ref.weight)


def test_refusals(outputs, tmp_path):
    codec = registry.load(DATA / "causal")
    with pytest.raises(ValueError, match="bandwidth 6.0 is not one of"):
        codec.encode(outputs["causal/speech/audio"], 6000, bandwidth=6.0)
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        codec.decode(torch.full((1, 5), 16))
    with pytest.raises(ValueError, match="1 <= K <= 3"):
        codec.decode(torch.zeros(4, 5, dtype=torch.long))
    bad = tmp_path / "bad"
    shutil.copytree(DATA / "causal", bad)
    config = json.loads((bad / "config.json").read_text())
    config["hidden_size"] = 10
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="wrong shapes"):
        registry.load(bad)
    config["chunk_length_s"] = 1.0
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="chunked EnCodec"):
        registry.load(bad)
