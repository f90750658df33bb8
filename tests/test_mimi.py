"""Mimi from transformers' MimiModel folders against transformers' own encode / decode (fixtures:
scripts/fixtures/make_mimi_fixtures.py), on speech and noise, two unusual configs (a causal mono one with quantizer
projections and grouped key / value heads; a non-causal stereo one with 2 semantic levels, attention bias, SiLU)."""
from __future__ import annotations

import math
import pathlib

import pytest
import torch

from codec_fixtures import assert_codes, npz_tensors, release_copy
import mmtok
import mmtok.tokenizer.registry as registry
from mmtok.audio.mimi import MimiCodec
from mmtok.tokenizer.weights import read_safetensors

DATA = pathlib.Path(__file__).parent / "data" / "mimi"
NAMES = ["causal", "noncausal"]


@pytest.fixture(scope="module")
def outputs():
    return npz_tensors(DATA / "outputs.npz")


@pytest.fixture(scope="module")
def codecs():
    return {name: registry.load(DATA / name) for name in NAMES}


def _clip(codec, audio):
    return audio[0] if codec.channels == 1 else audio


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", ["speech", "noise"])
def test_codes_and_audio_match_transformers(outputs, codecs, name, kind):
    codec = codecs[name]
    assert isinstance(codec, MimiCodec)
    key = f"{name}/{kind}"
    audio = outputs[f"{key}/audio"]  # (channels, samples)
    torch.testing.assert_close(codec.latents(audio[None])[0], outputs[f"{key}/latent"], atol=1e-4, rtol=0)
    codes = codec.encode(_clip(codec, audio), codec.sample_rate)
    expected = outputs[f"{key}/codes"].long()
    margin = outputs[f"{key}/margin"]
    assert_codes(codes, expected, margin)
    assert codes.shape[1] == math.ceil(audio.shape[-1] / codec.frame_size)
    assert_codes(codec.encode(_clip(codec, audio), codec.sample_rate, num_quantizers=3),
                  outputs[f"{key}/codes_nq3"].long(), margin[:3])
    decoded = codec.decode(expected)
    reference = outputs[f"{key}/decoded"]
    assert decoded.reshape(reference.shape).shape == (codec.channels, expected.shape[1] * codec.frame_size)
    torch.testing.assert_close(decoded.reshape(reference.shape), reference, atol=1e-4, rtol=0)
    torch.testing.assert_close(codec.decode(expected[:3]).reshape(reference.shape), outputs[f"{key}/decoded_nq3"],
                               atol=1e-4, rtol=0)


def test_rates_and_protocol(codecs, tmp_path):
    for name in NAMES:
        assert registry.detect_layout(DATA / name).name == "mimi"
    causal = codecs["causal"]
    assert causal.frame_size == 60 and causal.frame_rate == 200.0 and causal.sample_rate == 12000
    spec = causal.code_spec
    assert spec.axes == ("codebook", "t") and spec.codebook_sizes == (32,) * 5 and spec.downsample == (60,)
    assert spec.extra["semantic_codebooks"] == 1
    assert codecs["noncausal"].code_spec.extra == {"semantic_codebooks": 2, "channels": 2}
    # a default prefix of the levels at load time (Moshi uses 8 of the release's 32)
    three = mmtok.load(DATA / "causal", num_quantizers=3)
    assert three.code_spec.num_codebooks == 3
    x = torch.randn(1000) * 0.1
    assert torch.equal(three.encode(x, 12000), causal.encode(x, 12000)[:3])
    three.save_pretrained(tmp_path / "three")
    assert mmtok.load(tmp_path / "three").code_spec.num_codebooks == 3


@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_single(outputs, codecs, name, seed):
    codec = codecs[name]
    speech = outputs[f"{name}/speech/audio"]
    c = codec.channels
    clips = [speech[:, : 3000 + 7], torch.randn(c, 2100) * 0.1, speech[:, 1000: 1000 + 3007]]
    lengths = [x.shape[-1] for x in clips]
    batch = torch.zeros(len(clips), c, max(lengths))
    for b, x in enumerate(clips):
        batch[b, :, : x.shape[-1]] = x
    codes = codec.encode_batch(batch, lengths)
    frames = [codec.frames_for(n) for n in lengths]
    singles = [codec.encode(_clip(codec, x), codec.sample_rate) for x in clips]
    for b, single in enumerate(singles):
        assert torch.equal(codes[b, :, : frames[b]], single)
        assert not bool(codes[b, :, frames[b]:].any())
    audio = codec.decode_batch(codes, frames)
    for b, single in enumerate(singles):
        one = codec.decode(single).reshape(c, -1)
        torch.testing.assert_close(audio[b, :, : frames[b] * codec.frame_size], one, atol=1e-5, rtol=0)
    same = torch.stack([clips[0], clips[2]])  # equal lengths: one batched pass
    assert torch.equal(codec.encode_batch(same)[1], singles[2])
    torch.testing.assert_close(codec.decode_batch(torch.stack([singles[0], singles[2]]))[1],
                               codec.decode(singles[2]).reshape(c, -1), atol=1e-5, rtol=0)


def test_save_load_round_trip(codecs, tmp_path, seed):
    codec = codecs["noncausal"]
    codec.save_pretrained(tmp_path / "saved")
    assert registry.detect_layout(tmp_path / "saved").name == "mmtok"
    again = mmtok.load(tmp_path / "saved")
    assert isinstance(again, MimiCodec) and again.config == codec.config
    for key, value in codec.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    x = torch.randn(2, 4000) * 0.1
    codes = codec.encode(x, 8000)
    assert torch.equal(again.encode(x, 8000), codes)
    assert torch.equal(again.decode(codes), codec.decode(codes))


def _copy(tmp_path, name, edit_state=None, edit_config=None):
    return release_copy(tmp_path, DATA / name, "model.safetensors", edit_state, edit_config)


def test_nested_layout_and_weight_norm_forms(codecs, tmp_path, seed):
    codec = codecs["causal"]
    x = torch.randn(3000) * 0.1
    expected = codec.encode(x, 12000)
    audio = codec.decode(expected)

    def nested(state):  # MimiModel.state_dict()'s names (the halves as submodules)
        out = {}
        for k, v in state.items():
            for old, new in (("encoder.layers", "encoder.encoder_seanet.layers"),
                             ("encoder_transformer.", "encoder.encoder_transformer."),
                             ("downsample.", "encoder.downsample."), ("upsample.", "decoder.upsample."),
                             ("decoder_transformer.", "decoder.decoder_transformer."),
                             ("decoder.layers", "decoder.decoder_seanet.layers")):
                if k.startswith(old):
                    k = new + k[len(old):]
                    break
            out[k] = v
        return out

    def weight_normed(state):  # parametrizations.weight.original0/1 (g = norm, v = weight * 2)
        out = {}
        for k, v in state.items():
            if k.endswith("conv.weight") and v.dim() == 3:
                base = k[: -len(".weight")]
                out[base + ".parametrizations.weight.original0"] = v.norm(dim=(1, 2), keepdim=True)
                out[base + ".parametrizations.weight.original1"] = v * 2
            else:
                out[k] = v
        return out

    for edit in (nested, weight_normed):
        other = registry.load(_copy(tmp_path, "causal", edit))
        assert torch.equal(other.encode(x, 12000), expected)
        torch.testing.assert_close(other.decode(expected), audio, atol=1e-5, rtol=0)


def test_codebooks_from_ema_sums_and_no_stale_cache(codecs, tmp_path, seed):
    codec = codecs["causal"]
    state = read_safetensors(DATA / "causal" / "model.safetensors")
    for rvq, levels in (("semantic", 1), ("acoustic", 4)):
        books = getattr(codec.quantizer, f"{rvq}_residual_vector_quantizer").codebooks
        for i in range(levels):
            base = f"quantizer.{rvq}_residual_vector_quantizer.layers.{i}.codebook."
            total, usage = state[base + "embed_sum"].double(), state[base + "cluster_usage"].double()
            assert float(usage.min()) == 0.0  # the fixture's usage-0 entry: reachable through the 1e-5 clamp
            torch.testing.assert_close(books[i].double(), total / usage.clamp(min=1e-5)[:, None], rtol=1e-6,
                                       atol=1e-7)

    def doubled(state):  # halve every usage: the code vectors double
        return {k: v / 2 if k.endswith("cluster_usage") else v for k, v in state.items()}

    other = registry.load(_copy(tmp_path, "causal", doubled))
    x = torch.randn(3000) * 0.1
    fresh = registry.load(DATA / "causal")
    assert not torch.equal(fresh.encode(x, 12000), other.encode(x, 12000))
    fresh.load_state_dict(other.state_dict())  # a later load replaces the codebooks (no first-use cache)
    assert torch.equal(fresh.encode(x, 12000), other.encode(x, 12000))


def test_mismatched_weights_and_configs_are_refused(tmp_path):
    def set_filters(config):
        config["num_filters"] = 8

    with pytest.raises(ValueError, match=r"model\.safetensors: .*wrong shapes: decoder\.layers\.0\.conv\.bias "
                                         r"\(weights \[32\], model expects \[64\]\)"):
        registry.load(_copy(tmp_path, "causal", edit_config=set_filters))

    def drop_scale(state):
        return {k: v for k, v in state.items() if k != "decoder_transformer.layers.1.mlp_layer_scale.scale"}

    with pytest.raises(ValueError, match=r"missing keys: decoder_transformer\.layers\.1\.mlp_layer_scale\.scale"):
        registry.load(_copy(tmp_path, "causal", drop_scale))

    def one_layer(config):
        config["num_hidden_layers"] = 1

    with pytest.raises(ValueError, match=r"unexpected keys: decoder_transformer\.layers\.1\.input_layernorm\.bias"):
        registry.load(_copy(tmp_path, "causal", edit_config=one_layer))

    def more_levels(config):
        config["num_quantizers"] = 6

    with pytest.raises(ValueError, match=r"acoustic_residual_vector_quantizer has levels \[0, 1, 2, 3\] in the "
                                         r"weights, the config says 5"):
        registry.load(_copy(tmp_path, "causal", edit_config=more_levels))

    def zero_book(state):
        key = "quantizer.acoustic_residual_vector_quantizer.layers.2.codebook.embed_sum"
        state[key] = torch.zeros_like(state[key])
        return state

    with pytest.raises(ValueError, match=r"layers\.2\.codebook\.embed_sum is all zeros"):
        registry.load(_copy(tmp_path, "causal", zero_book))

    for field, value, message in (("codebook_size", 48, "power of 2"), ("hidden_act", "mish", "hidden_act must be"),
                                  ("rope_parameters", {"rope_type": "linear", "factor": 2.0}, "default RoPE"),
                                  ("num_semantic_quantizers", 5, "must be lower than num_quantizers"),
                                  ("num_key_value_heads", 3, "multiple of num_key_value_heads"),
                                  ("upsample_groups", 5, "must divide hidden_size")):
        def edit(config, field=field, value=value):
            config[field] = value

        with pytest.raises(ValueError, match=rf"config\.json: .*{message}"):
            registry.load(_copy(tmp_path, "causal", edit_config=edit))
    with pytest.raises(ValueError, match="float32"):
        mmtok.load(DATA / "causal", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match=r"unknown options .*bandwidth"):
        mmtok.load(DATA / "causal", bandwidth=6.0)


def test_bad_codes_and_inputs(codecs):
    codec = codecs["causal"]
    with pytest.raises(ValueError, match=r"codes must lie in 0\.\.31, got 0\.\.32"):
        codec.decode(torch.tensor([[0, 32, 1]] * 5))
    with pytest.raises(ValueError, match=r"codes must lie in 0\.\.31, got -1"):
        codec.decode(torch.tensor([[0, -1, 1]]))
    with pytest.raises(ValueError, match=r"6 codebooks; this Mimi has 5"):
        codec.decode(torch.zeros(6, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="integer codes"):
        codec.decode(torch.zeros(5, 5))
    with pytest.raises(ValueError, match=r"codes must be \(levels, frames\)"):
        codec.decode(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"num_quantizers must be an int from 1 .* to 5, got 6"):
        codec.encode(torch.randn(400), 12000, num_quantizers=6)
    with pytest.raises(ValueError, match=r"num_quantizers must be an int from 2 .* to 4, got 1"):
        codecs["noncausal"].encode(torch.randn(2, 400), 8000, num_quantizers=1)
    with pytest.raises(ValueError, match="lengths must give"):
        codec.encode_batch(torch.randn(2, 1, 100), [100, 101])
    with pytest.raises(ValueError, match=r"audio must be \(B, 1, samples\)"):
        codec.encode_batch(torch.randn(2, 2, 100))
    with pytest.raises(ValueError, match=r"2-channel; expected \(2, samples\)"):
        codecs["noncausal"].encode(torch.randn(400), 8000)


def _pieces(total, sizes):
    pos, i = 0, 0
    while pos < total:
        n = sizes[i % len(sizes)]
        yield pos, min(total, pos + n)
        pos, i = pos + n, i + 1


@pytest.mark.parametrize("trim", [1.0, 0.5])
def test_streamed_equals_one_pass(outputs, tmp_path, trim, seed):
    def edit(config):
        config["trim_right_ratio"] = trim

    codec = registry.load(_copy(tmp_path, "causal", edit_config=edit))
    speech = outputs["causal/speech/audio"][None]
    audio = torch.cat([speech[..., 3000:5500], torch.randn(1, 1, 1500) * 0.1], dim=-1)[..., : 4000 - 13]
    one = codec.encode_batch(audio)
    randoms = torch.randint(1, 400, (8,)).tolist()
    for sizes in ([codec.frame_size], [1, 2, 3, 1000, 59, 61], randoms, [audio.shape[-1]]):
        stream = codec.stream_encoder()
        parts = [stream.push(audio[..., a:b]) for a, b in _pieces(audio.shape[-1], sizes)]
        if sizes == [codec.frame_size]:  # one code frame per frame of audio: no lookahead
            assert all(p.shape[-1] == 1 for p in parts[:-1])
        parts.append(stream.flush())
        assert torch.equal(torch.cat(parts, dim=-1), one), sizes
    reference = codec.decode_batch(one)
    for sizes in ([1], [2, 5, 1, 30], [one.shape[-1]]):
        stream = codec.stream_decoder()
        parts = [stream.push(one[..., a:b]) for a, b in _pieces(one.shape[-1], sizes)]
        if trim == 1.0 and sizes == [1]:
            assert all(p.shape[-1] == codec.frame_size for p in parts)
        parts.append(stream.flush())
        streamed = torch.cat(parts, dim=-1)
        assert streamed.shape == reference.shape
        torch.testing.assert_close(streamed, reference, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="flushed"):
        stream.push(one[..., :1])


def test_streaming_refusals(codecs):
    with pytest.raises(ValueError, match="streaming needs a causal Mimi"):
        codecs["noncausal"].stream_encoder()
    stream = codecs["causal"].stream_encoder(num_quantizers=2)
    assert stream.push(torch.randn(2, 1, 130)).shape == (2, 2, 2)
    with pytest.raises(ValueError, match="batch of 1, the stream started with 2"):
        stream.push(torch.randn(1, 1, 60))
    decoder = codecs["causal"].stream_decoder()
    decoder.push(torch.zeros(1, 3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="4 levels, the stream started with 3"):
        decoder.push(torch.zeros(1, 4, 2, dtype=torch.long))


def test_tokenize_cli_with_mimi(tmp_path):
    """`mmtok tokenize --audio-codec` takes a Mimi folder: the codes are the codec's own, the kept copy decodes."""
    import os
    import subprocess
    import sys

    import soundfile

    from mmtok.audio.io import load_audio
    from mmtok.data import TokenShards

    media = tmp_path / "media"
    media.mkdir()
    speech, rate = soundfile.read(DATA.parent / "audio" / "arctic_a0007.wav", dtype="float32")
    soundfile.write(media / "speech.wav", speech[: rate // 2], rate)
    root = DATA.parents[2]
    proc = subprocess.run([sys.executable, "-m", "mmtok", "tokenize", str(media), "--out", str(tmp_path / "out"),
                           "--audio-codec", str(DATA / "causal"), "--workers", "1", "--no-progress"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root)}, cwd=root)
    assert proc.returncode == 0, proc.stderr
    codec = registry.load(DATA / "causal")
    shards = TokenShards(tmp_path / "out")
    (segment,) = shards.segments(0)
    assert torch.equal(segment.codes, codec.encode(load_audio(shards[0].source, codec.sample_rate), codec.sample_rate))
    copy = mmtok.load(tmp_path / "out" / "tokenizers" / "audio")
    assert isinstance(copy, MimiCodec) and torch.equal(copy.decode(segment.codes), codec.decode(segment.codes))
