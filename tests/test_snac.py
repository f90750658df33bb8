"""SNAC from its Hub folder (config.json + pytorch_model.bin) against the `snac` package's own encode / decode
(fixtures: scripts/fixtures/make_snac_fixtures.py), on speech and noise, two unusual configs (local attention,
depthwise convs, decoder noise, vq_strides [6, 3, 1]; and no attention, full convs, vq_strides [5, 1])."""
from __future__ import annotations

import math
import pathlib
import shutil

import pytest
import torch

from codec_fixtures import SURE, npz_tensors, release_copy
import mmtok
import mmtok.tokenizer.registry as registry
from mmtok.audio.snac import SnacCodec

DATA = pathlib.Path(__file__).parent / "data" / "snac"
NAMES = ["attn", "plain"]


@pytest.fixture(scope="module")
def outputs():
    return npz_tensors(DATA / "outputs.npz")


@pytest.fixture(scope="module")
def codecs():
    return {name: registry.load(DATA / name) for name in NAMES}


def _levels(outputs, key, n):
    return [outputs[f"{key}/codes/{k}"].long() for k in range(n)]


def _assert_levels(levels, expected, margins):
    """Equal wherever the margin is safe; a flip is allowed only where the float64 margin is unsure."""
    assert [lv.shape for lv in levels] == [e.shape for e in expected]
    for lv, e, m in zip(levels, expected, margins):
        sure = m > SURE
        assert torch.equal(lv[sure], e[sure])
        assert int((lv != e).sum()) <= int((~sure).sum())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", ["speech", "noise"])
def test_codes_and_audio_match_upstream(outputs, codecs, name, kind):
    codec = codecs[name]
    assert isinstance(codec, SnacCodec)
    key = f"{name}/{kind}"
    audio = outputs[f"{key}/audio"]
    expected = _levels(outputs, key, codec.num_levels)
    margins = [outputs[f"{key}/margin/{k}"] for k in range(codec.num_levels)]
    levels = codec.encode_levels(audio, codec.sample_rate)
    _assert_levels(levels, expected, margins)
    # padding as upstream's preprocess: to hop * lcm(first stride, window) samples
    unit = codec.hop_length * math.lcm(codec.vq_strides[0], codec.config["attn_window_size"] or 1)
    steps = math.ceil(audio.numel() / unit) * unit // codec.hop_length
    assert [lv.numel() for lv in levels] == [steps // s for s in codec.vq_strides]
    frames = codec.encode(audio, codec.sample_rate)
    assert frames.shape == (codec.codes_per_frame, codec.frames_for(audio.numel()))
    assert all(torch.equal(a, b) for a, b in zip(codec.to_levels(frames), levels))
    # deterministic decode (noise blocks off) from the upstream codes, in both code layouts
    decoded = codec.decode(expected)
    assert decoded.shape == outputs[f"{key}/decoded"].shape
    torch.testing.assert_close(decoded, outputs[f"{key}/decoded"], atol=1e-4, rtol=0)
    assert torch.equal(codec.decode(codec.from_levels(expected)), decoded)
    forward = outputs[f"{key}/forward"]
    torch.testing.assert_close(decoded[: forward.numel()], forward, atol=1e-4, rtol=0)
    # upstream's stochastic noise: torch.manual_seed(1234); model.decode(codes) == decode(noise_seed=1234)
    noisy = codec.decode(expected, noise_seed=1234)
    torch.testing.assert_close(noisy, outputs[f"{key}/decoded_seed1234"], atol=1e-4, rtol=0)
    if codec.config["noise"]:
        assert float((noisy - decoded).abs().max()) > 1e-2  # the noise is real, and off by default
        assert torch.equal(codec.decode(expected), decoded)


def test_layout_detection_and_protocol(codecs, tmp_path):
    for name in NAMES:
        assert registry.detect_layout(DATA / name).name == "snac"
        assert registry.detect_layout(DATA / name / "pytorch_model.bin").name == "snac"
    codec = codecs["attn"]
    spec = codec.code_spec
    assert spec.modality == "audio" and spec.axes == ("codebook", "t")
    assert spec.codebook_sizes == (32,) * 9 and spec.downsample == (36,)  # 1 + 2 + 6 codes per 6 * 6 samples
    assert spec.sample_rate == 16000 and spec.frame_rate == 16000 / 36
    assert spec.extra["levels"] == [0, 1, 1, 2, 2, 2, 2, 2, 2] and spec.extra["vq_strides"] == [6, 3, 1]
    assert codecs["plain"].code_spec.codebook_sizes == (16,) * 6
    # the weight file anywhere, with config_path=
    shutil.copy(DATA / "plain" / "pytorch_model.bin", tmp_path / "weights.bin")
    shutil.copy(DATA / "plain" / "config.json", tmp_path / "snac_config.json")
    other = mmtok.load(tmp_path / "weights.bin", format="snac", config_path=tmp_path / "snac_config.json")
    x = torch.randn(777) * 0.1
    assert torch.equal(other.encode(x, 8000), codecs["plain"].encode(x, 8000))


def test_frame_layout_round_trip(codecs, seed):
    codec = codecs["attn"]
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, codec.codebook_size, (3, codec.codes_per_frame, 4), generator=g)
    levels = codec.to_levels(frames)
    assert [lv.shape for lv in levels] == [(3, 4), (3, 8), (3, 24)]
    # frame t holds level 1's codes 2t, 2t+1 and level 2's 6t .. 6t+5
    assert torch.equal(frames[:, 1:3].transpose(1, 2).reshape(3, -1), levels[1])
    assert torch.equal(levels[2][:, 6:12], frames[:, 3:9, 1])
    assert torch.equal(codec.from_levels(levels), frames)
    assert torch.equal(codec.from_levels([lv[0] for lv in levels]), frames[0])


@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_single(outputs, codecs, name, seed):
    codec = codecs[name]
    speech = outputs[f"{name}/speech/audio"]
    clips = [speech[:3007], torch.randn(2100) * 0.1, speech[1000:1000 + 3007], speech[500:600]]
    lengths = [c.numel() for c in clips]
    batch = torch.randn(len(clips), 1, max(lengths))  # junk padding: must be ignored
    for b, c in enumerate(clips):
        batch[b, 0, : c.numel()] = c
    codes = codec.encode_batch(batch, lengths)
    frames = [codec.frames_for(n) for n in lengths]
    singles = [codec.encode(c, codec.sample_rate) for c in clips]
    for b, single in enumerate(singles):
        assert torch.equal(codes[b, :, : frames[b]], single)
        assert not bool(codes[b, :, frames[b]:].any())
    audio = codec.decode_batch(codes, frames)
    per_frame = codec.decode(singles[0]).numel() // frames[0]
    for b, single in enumerate(singles):
        torch.testing.assert_close(audio[b, 0, : frames[b] * per_frame], codec.decode(single), atol=1e-6, rtol=0)
        assert not bool(audio[b, 0, frames[b] * per_frame:].any())
    same = torch.stack([clips[0], clips[2]]).unsqueeze(1)  # equal lengths: one batched pass
    together = codec.encode_batch(same)
    assert torch.equal(together[1], singles[2]) and torch.equal(together[0], singles[0])
    levels = codec.to_levels(together)  # upstream's (B, T_k) list decodes like the frame layout
    torch.testing.assert_close(codec.decode_batch(levels), codec.decode_batch(together), atol=0, rtol=0)


def test_save_load_round_trip(codecs, tmp_path, seed):
    codec = codecs["attn"]
    codec.save_pretrained(tmp_path / "saved")
    assert registry.detect_layout(tmp_path / "saved").name == "mmtok"
    again = mmtok.load(tmp_path / "saved")
    assert isinstance(again, SnacCodec) and again.config == codec.config
    for key, value in codec.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    x = torch.randn(1500) * 0.1
    codes = codec.encode(x, 16000)
    assert torch.equal(again.encode(x, 16000), codes)
    assert torch.equal(again.decode(codes), codec.decode(codes))


def _copy(tmp_path, name, edit_state=None, edit_config=None):
    return release_copy(tmp_path, DATA / name, "pytorch_model.bin", edit_state, edit_config)


def test_weight_norm_forms(codecs, tmp_path, seed):
    codec = codecs["plain"]
    x = torch.randn(1200) * 0.1
    expected = codec.encode(x, 8000)

    def legacy(state):
        out = {}
        for k, v in state.items():
            k = k.replace(".parametrizations.weight.original0", ".weight_g")
            out[k.replace(".parametrizations.weight.original1", ".weight_v")] = v
        return out

    def folded(state):
        out = {k: v for k, v in state.items() if ".parametrizations." not in k}
        for k in state:
            if k.endswith(".original0"):
                base = k[: -len(".parametrizations.weight.original0")]
                g, v = state[k], state[base + ".parametrizations.weight.original1"]
                out[base + ".weight"] = v * (g / v.norm(dim=tuple(range(1, v.dim())), keepdim=True))
        return out

    for edit in (legacy, folded):
        other = registry.load(_copy(tmp_path, "plain", edit))
        assert torch.equal(other.encode(x, 8000), expected)
        torch.testing.assert_close(other.decode(expected), codec.decode(expected), atol=1e-6, rtol=0)


def test_mismatched_weights_and_configs(tmp_path):
    def wider(config):
        config["decoder_dim"] = 32

    with pytest.raises(ValueError, match=r"wrong shapes: .*decoder\.model\.0\.weight \(weights \[24, 16, 7\], "
                                         r"model expects \[32, 16, 7\]\)"):
        registry.load(_copy(tmp_path, "plain", edit_config=wider))

    def no_attention(config):
        config["attn_window_size"] = None

    with pytest.raises(ValueError, match=r"unexpected keys: .*decoder\.model\.2\.rel_pos\.inv_freq"):
        registry.load(_copy(tmp_path, "attn", edit_config=no_attention))

    def drop_codebook(state):
        return {k: v for k, v in state.items() if k != "quantizer.quantizers.1.codebook.weight"}

    with pytest.raises(ValueError, match=r"missing keys: quantizer\.quantizers\.1\.codebook\.weight"):
        registry.load(_copy(tmp_path, "plain", drop_codebook))

    def noise_on(config):
        config["noise"] = True

    with pytest.raises(ValueError, match=r"missing keys: decoder\.model\.1\.block\.2\.linear\.weight"):
        registry.load(_copy(tmp_path, "plain", edit_config=noise_on))

    for edit, message in ((lambda c: c.update(vq_strides=[5, 2]), r"every vq stride must divide the first"),
                          (lambda c: c.update(latent_dim=12), r"latent_dim 12 differs from the encoder's output"),
                          (lambda c: c.update(attn_window_size=4), r"local attention needs the encoder output \(16\) to be a multiple of its 64-channel heads"),
                          (lambda c: c.update(hop=3), r"unknown SNAC config fields \['hop'\]"),
                          (lambda c: c.update(noise="yes"), r"noise must be true or false")):
        with pytest.raises(ValueError, match=r"config\.json: " + message):
            registry.load(_copy(tmp_path, "plain", edit_config=edit))


def test_bad_codes(codecs, tmp_path):
    codec = codecs["attn"]  # 9 codes per frame, 32 codes, decoder attention window 4 (frames must be even)
    good = torch.zeros(9, 2, dtype=torch.long)
    bad = good.clone()
    bad[3, 1] = 32
    with pytest.raises(ValueError, match=r"codes must lie in 0\.\.31, got 0\.\.32"):
        codec.decode(bad)
    with pytest.raises(ValueError, match=r"expected frame codes \(9, frames\) .* got shape \(7, 2\)"):
        codec.decode(torch.zeros(7, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="integer codes"):
        codec.decode(good.float())
    with pytest.raises(ValueError, match=r"2 levels, this SNAC has 3"):
        codec.decode([torch.zeros(2, dtype=torch.long), torch.zeros(4, dtype=torch.long)])
    with pytest.raises(ValueError, match=r"level lengths .* do not fit the strides \[6, 3, 1\]"):
        codec.decode([torch.zeros(2, dtype=torch.long), torch.zeros(4, dtype=torch.long),
                      torch.zeros(11, dtype=torch.long)])
    with pytest.raises(ValueError, match=r"codes\[2\]: codes must lie in 0\.\.31, got -1"):
        codec.decode([torch.zeros(2, dtype=torch.long), torch.zeros(4, dtype=torch.long),
                      torch.full((12,), -1)])
    with pytest.raises(ValueError, match=r"decoder attention needs a multiple of its window \(4\), i\.e\. frames "
                                         r"a multiple of 2"):
        codec.decode(torch.zeros(9, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="lengths must give"):
        codec.encode_batch(torch.randn(2, 1, 100), [100, 101])
    with pytest.raises(ValueError, match=r"audio must be \(B, 1, samples\)"):
        codec.encode_batch(torch.randn(2, 100))
    with pytest.raises(ValueError, match="float32"):
        mmtok.load(DATA / "plain", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="unknown options"):
        mmtok.load(DATA / "plain", bandwidth=3)
