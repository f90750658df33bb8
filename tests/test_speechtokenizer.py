"""SpeechTokenizer from its release files (config.json + .pt) against the `speechtokenizer` package's own encode /
decode (fixtures: scripts/fixtures/make_speechtokenizer_fixtures.py), on speech and noise, two unusual configs
(a BiLSTM / ELU / Linear-transform one and a Snake / no-LSTM one)."""
from __future__ import annotations

import math
import pathlib
import shutil

import pytest
import torch

from codec_fixtures import assert_codes, npz_tensors, release_copy
import mmtok
import mmtok.tokenizer.registry as registry
from mmtok.audio.speechtokenizer import SpeechTokenizerCodec

DATA = pathlib.Path(__file__).parent / "data" / "speechtokenizer"
NAMES = ["bilstm", "snake"]


@pytest.fixture(scope="module")
def outputs():
    return npz_tensors(DATA / "outputs.npz")


@pytest.fixture(scope="module")
def codecs():
    return {name: registry.load(DATA / name) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", ["speech", "noise"])
def test_codes_and_audio_match_upstream(outputs, codecs, name, kind):
    codec = codecs[name]
    assert isinstance(codec, SpeechTokenizerCodec)
    key = f"{name}/{kind}"
    audio = outputs[f"{key}/audio"]
    codes = codec.encode(audio, codec.sample_rate)
    expected = outputs[f"{key}/codes"].long()
    assert_codes(codes, expected, outputs[f"{key}/margin"])
    assert codes.shape[1] == math.ceil(audio.numel() / codec.hop_length)  # frames = ceil(samples / hop)
    decoded = codec.decode(expected)
    assert decoded.shape == (expected.shape[1] * codec.hop_length,)  # upstream does not trim to the input
    torch.testing.assert_close(decoded, outputs[f"{key}/decoded"], atol=1e-4, rtol=0)
    torch.testing.assert_close(codec.decode(expected[:1]), outputs[f"{key}/decoded_first"], atol=1e-4, rtol=0)
    torch.testing.assert_close(codec.decode(expected[1:], start=1), outputs[f"{key}/decoded_acoustic"],
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(codec.semantic_features(audio, codec.sample_rate), outputs[f"{key}/feature"],
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_level_options_match_upstream(outputs, codecs, name):
    codec = codecs[name]
    audio = outputs[f"{name}/speech/audio"]
    margin = outputs[f"{name}/speech/margin"]
    assert_codes(codec.encode(audio, codec.sample_rate, n_q=2), outputs[f"{name}/speech/codes_nq2"].long(),
                  margin[:2])
    # upstream's st starts level 1 on the raw latent: not a suffix of the full codes
    start1 = codec.encode(audio, codec.sample_rate, start=1)
    assert torch.equal(start1, outputs[f"{name}/speech/codes_st1"].long())
    assert start1.shape[0] == codec.num_quantizers - 1


def test_layout_detection_and_protocol(codecs, tmp_path):
    for name in NAMES:
        assert registry.detect_layout(DATA / name).name == "speechtokenizer"
        assert registry.detect_layout(DATA / name / "SpeechTokenizer.pt").name == "speechtokenizer"
    spec = codecs["bilstm"].code_spec
    assert spec.modality == "audio" and spec.axes == ("codebook", "t")
    assert spec.codebook_sizes == (32, 32, 32) and spec.downsample == (20,)
    assert spec.sample_rate == 16000 and spec.frame_rate == 800
    # two files anywhere: the .pt with config_path=
    shutil.copy(DATA / "snake" / "SpeechTokenizer.pt", tmp_path / "weights.pt")
    shutil.copy(DATA / "snake" / "config.json", tmp_path / "st_config.json")
    codec = mmtok.load(tmp_path / "weights.pt", format="speechtokenizer", config_path=tmp_path / "st_config.json")
    x = torch.randn(999) * 0.1
    assert torch.equal(codec.encode(x, 8000), codecs["snake"].encode(x, 8000))


@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_single(outputs, codecs, name, seed):
    codec = codecs[name]
    speech = outputs[f"{name}/speech/audio"]
    clips = [speech[: 3000 + 7], torch.randn(2100) * 0.1, speech[1000: 1000 + 3007]]
    lengths = [c.numel() for c in clips]
    batch = torch.zeros(len(clips), 1, max(lengths))
    for b, c in enumerate(clips):
        batch[b, 0, : c.numel()] = c
    codes = codec.encode_batch(batch, lengths)
    frames = [codec.frames_for(n) for n in lengths]
    singles = [codec.encode(c, codec.sample_rate) for c in clips]
    for b, single in enumerate(singles):
        assert torch.equal(codes[b, :, : frames[b]], single)
        assert not bool(codes[b, :, frames[b]:].any())
    audio = codec.decode_batch(codes, frames)
    for b, single in enumerate(singles):
        torch.testing.assert_close(audio[b, 0, : frames[b] * codec.hop_length], codec.decode(single),
                                   atol=1e-6, rtol=0)
    same = torch.stack([clips[0], clips[2]]).unsqueeze(1)  # equal lengths: one batched pass
    assert torch.equal(codec.encode_batch(same)[1], singles[2])


def test_save_load_round_trip(codecs, tmp_path, seed):
    codec = codecs["bilstm"]
    codec.save_pretrained(tmp_path / "saved")
    assert registry.detect_layout(tmp_path / "saved").name == "mmtok"
    again = mmtok.load(tmp_path / "saved")
    assert isinstance(again, SpeechTokenizerCodec) and again.config == codec.config
    for key, value in codec.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    x = torch.randn(16000) * 0.1
    codes = codec.encode(x, 16000)
    assert torch.equal(again.encode(x, 16000), codes)
    assert torch.equal(again.decode(codes), codec.decode(codes))


def _release_copy(tmp_path, name, edit_state=None, edit_config=None):
    return release_copy(tmp_path, DATA / name, "SpeechTokenizer.pt", edit_state, edit_config)


def test_weight_norm_forms_and_ema_codebooks(codecs, tmp_path, seed):
    codec = codecs["bilstm"]
    x = torch.randn(4000) * 0.1
    expected = codec.encode(x, 16000)

    def parametrized(state):
        out = {}
        for k, v in state.items():
            k = k.replace(".weight_g", ".parametrizations.weight.original0")
            out[k.replace(".weight_v", ".parametrizations.weight.original1")] = v
        return out

    def folded(state):
        out = {k: v for k, v in state.items() if not k.endswith((".weight_g", ".weight_v"))}
        for k in state:
            if k.endswith(".weight_g"):
                base = k[: -len("_g")]
                g, v = state[k], state[base + "_v"]
                out[base] = v * (g / v.norm(dim=tuple(range(1, v.dim())), keepdim=True))
        return out

    for edit in (parametrized, folded):
        other = registry.load(_release_copy(tmp_path, "bilstm", edit))
        assert torch.equal(other.encode(x, 16000), expected)
        torch.testing.assert_close(other.decode(expected), codec.decode(expected), atol=1e-6, rtol=0)

    # only the EMA sums stored: embed = embed_avg / smoothed cluster size (float64 reference)
    def ema_only(state):
        return {k: v for k, v in state.items() if not k.endswith("._codebook.embed")}

    ema = registry.load(_release_copy(tmp_path, "bilstm", ema_only))
    state = torch.load(DATA / "bilstm" / "SpeechTokenizer.pt", weights_only=True)
    for q in range(3):
        total = state[f"quantizer.vq.layers.{q}._codebook.embed_avg"].double()
        n = state[f"quantizer.vq.layers.{q}._codebook.cluster_size"].double()
        smoothed = (n + 1e-5) / (n.sum() + n.numel() * 1e-5) * n.sum()
        torch.testing.assert_close(ema.codebooks[q].double(), total / smoothed[:, None], rtol=1e-6, atol=1e-7)


def test_mismatched_weights_are_listed(tmp_path):
    def set_filters(config):
        config["n_filters"] = 8

    with pytest.raises(ValueError, match=r"wrong shapes: .*decoder\.layers\.0\.conv\.weight \(weights \[32, 12, 7\], "
                                         r"model expects \[64, 12, 7\]\)"):
        registry.load(_release_copy(tmp_path, "bilstm", edit_config=set_filters))

    def drop_transform(state):
        return {k: v for k, v in state.items() if not k.startswith("transform.")}

    with pytest.raises(ValueError, match=r"missing keys: transform\.bias, transform\.weight"):
        registry.load(_release_copy(tmp_path, "bilstm", drop_transform))

    def no_lstm(config):
        config["lstm_layers"] = 0

    with pytest.raises(ValueError, match=r"unexpected keys: .*decoder\.layers\.1\.lstm\.weight_hh_l0"):
        registry.load(_release_copy(tmp_path, "bilstm", edit_config=no_lstm))

    def more_levels(config):
        config["n_q"] = 4

    with pytest.raises(ValueError, match=r"3 RVQ levels .* n_q=4"):
        registry.load(_release_copy(tmp_path, "bilstm", edit_config=more_levels))

    def zero_book(state):
        state["quantizer.vq.layers.1._codebook.embed"] = torch.zeros_like(state["quantizer.vq.layers.1._codebook.embed"])
        return state

    with pytest.raises(ValueError, match=r"layers\.1\._codebook\.embed is all zeros"):
        registry.load(_release_copy(tmp_path, "bilstm", zero_book))

    def relu(config):
        config["activation"] = "ReLU"

    with pytest.raises(ValueError, match=r"config\.json: activation must be one of ELU, CELU, Snake"):
        registry.load(_release_copy(tmp_path, "snake", edit_config=relu))


def test_bad_codes_and_levels(codecs, tmp_path):
    codec = codecs["bilstm"]
    with pytest.raises(ValueError, match=r"codes must lie in 0\.\.31, got 0\.\.32"):
        codec.decode(torch.tensor([[0, 32, 1]] * 3))
    with pytest.raises(ValueError, match=r"codes must lie in 0\.\.31, got -1"):
        codec.decode(torch.tensor([[0, -1, 1]]))
    with pytest.raises(ValueError, match=r"4 codebooks from level start=0; this SpeechTokenizer has 3"):
        codec.decode(torch.zeros(4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"3 codebooks from level start=1"):
        codec.decode(torch.zeros(3, 5, dtype=torch.long), start=1)
    with pytest.raises(ValueError, match="integer codes"):
        codec.decode(torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"0 <= start < n_q <= 3"):
        codec.encode(torch.randn(400), 16000, n_q=4)
    with pytest.raises(ValueError, match="lengths must give"):
        codec.encode_batch(torch.randn(2, 1, 100), [100, 101])
    two = tmp_path / "two"
    two.mkdir()
    shutil.copy(DATA / "snake" / "config.json", two / "config.json")
    shutil.copy(DATA / "snake" / "SpeechTokenizer.pt", two / "a.pt")
    shutil.copy(DATA / "snake" / "SpeechTokenizer.pt", two / "b.pt")
    with pytest.raises(ValueError, match=r"one checkpoint .* found \['a\.pt', 'b\.pt'\]"):
        mmtok.load(two)
    with pytest.raises(ValueError, match="float32"):
        mmtok.load(DATA / "snake", dtype=torch.bfloat16)
