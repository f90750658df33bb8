"""transformers ChameleonVQVAE / JanusVQVAE folders against the upstream fixtures (tests/data/chameleon, janus).

The fixtures hold tiny random models saved by transformers' own `save_pretrained` and what transformers, the
original Chameleon `vqgan.py` and Janus' `vq_model.py` computed on a fixed non-square input (see their README.md).
"""
from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import mmtok
from mmtok.image.transformers_vq import TransformersVQTokenizer
from mmtok.tokenizer import CodeSpec, Tokenizer, detect_layout, load

DATA = pathlib.Path(__file__).parent / "data"
CHAMELEON, JANUS = DATA / "chameleon", DATA / "janus"
DECODER = CHAMELEON / "original" / "vqgan.ckpt"


def _io(folder):
    return {k: torch.from_numpy(v) for k, v in np.load(folder / "io.npz").items()}


@pytest.fixture(scope="module")
def cham_io():
    return _io(CHAMELEON)


@pytest.fixture(scope="module")
def janus_io():
    return _io(JANUS)


@pytest.fixture(scope="module")
def chameleon():
    return load(CHAMELEON / "hf", decoder_checkpoint=DECODER)


@pytest.fixture(scope="module")
def janus():
    return load(JANUS / "hf")


def _close(actual, expected, atol, rtol=0.0, what=""):
    diff = (actual - expected).abs()
    assert bool((diff <= atol + rtol * expected.abs()).all()), f"{what}: max abs diff {diff.max().item():.3g}"


def _codes_match(codes, expected, margin, threshold=1e-4, what="codes"):
    sure = margin > threshold
    assert int(sure.sum()) > 0.9 * margin.numel(), f"{what}: too few decisive positions in the fixture"
    bad = int((codes != expected)[sure].sum())
    assert bad == 0, f"{what}: {bad} of {int(sure.sum())} codes with margin > {threshold} differ"


# ------------------------------------------------------------------------------------------ Chameleon

def test_chameleon_encode_matches_transformers(chameleon, cham_io):
    assert isinstance(chameleon, TransformersVQTokenizer) and isinstance(chameleon, Tokenizer)
    assert chameleon.family == "chameleon" and chameleon.num_codes == 300 and chameleon.downsample_factor == 2
    x = cham_io["x_chameleon"]
    _close(chameleon.encode_latents(x), cham_io["z_e"], 1e-4, what="z_e")
    codes = chameleon.encode(x)
    assert codes.dtype == torch.int64 and codes.shape == (2, 20, 36)
    _codes_match(codes, cham_io["codes"], cham_io["margin"])


def test_chameleon_preprocessings(cham_io):
    """Default: the original `u8 / 255 * 2 - 1`; "transformers": ChameleonImageProcessor's `u8 * 0.0078 - 1`."""
    u8 = cham_io["images_u8"].permute(0, 3, 1, 2).contiguous()
    original = load(CHAMELEON / "hf")
    assert original.preprocessing == "original"
    assert torch.equal(original.pixels(u8), cham_io["x_chameleon"])
    _codes_match(original.encode(u8), cham_io["codes"], cham_io["margin"], what="original preprocessing")
    hf = load(CHAMELEON / "hf", preprocessing="transformers")
    _close(hf.pixels(u8), cham_io["x_transformers"], 2e-7, what="processor pixels")
    assert float(hf.pixels(u8).max()) < 0.99 < float(original.pixels(u8).max())  # 255 -> 0.989 vs 1.0
    _codes_match(hf.encode(u8), cham_io["codes_transformers"], cham_io["margin_transformers"],
                 what="transformers preprocessing")
    assert not torch.equal(cham_io["codes"], cham_io["codes_transformers"])  # the two really differ
    # PIL images at their own size go through the same conversion
    pil = [Image.fromarray(a.numpy()) for a in cham_io["images_u8"]]
    assert torch.equal(original.encode(pil, mode="native"), original.encode(u8))
    assert torch.equal(hf.encode(pil, mode="native"), hf.encode(u8))


def test_chameleon_decode_with_original_decoder(chameleon, cham_io):
    _close(chameleon.decode(cham_io["codes"], clamp=False), cham_io["decoded"], 1e-4, 1e-4, what="decoded")
    _close(chameleon.decode(cham_io["codes"]), cham_io["decoded"].clamp(-1, 1), 1e-4, 1e-4, what="clamped")
    _close(chameleon.reconstruct(cham_io["x_chameleon"]), cham_io["reconstructed"], 1e-4, 1e-4, what="reconstruct")


def test_chameleon_without_decoder_says_so(cham_io):
    tok = load(CHAMELEON / "hf")
    assert not tok.has_decoder and tok.model.decoder is None
    with pytest.raises(ValueError, match="decoder_checkpoint"):
        tok.decode(cham_io["codes"])


def test_chameleon_decoder_of_another_model_is_refused(tmp_path):
    ckpt = torch.load(DECODER, weights_only=True)
    ckpt["state_dict"]["quantize.embedding.weight"] = ckpt["state_dict"]["quantize.embedding.weight"] + 1e-3
    torch.save(ckpt, tmp_path / "vqgan.ckpt")
    with pytest.raises(ValueError, match="another VQ-GAN"):
        load(CHAMELEON / "hf", decoder_checkpoint=tmp_path / "vqgan.ckpt")
    ckpt_ok = torch.load(DECODER, weights_only=True)
    ckpt_ok["state_dict"] = {k: v for k, v in ckpt_ok["state_dict"].items() if k != "decoder.conv_out.weight"}
    torch.save(ckpt_ok, tmp_path / "partial.ckpt")
    with pytest.raises(ValueError, match="decoder.conv_out.weight"):
        load(CHAMELEON / "hf", decoder_checkpoint=tmp_path / "partial.ckpt")


def test_original_release_checkpoint_loads_as_taming(cham_io):
    """The original vqgan.ckpt + vqgan.yaml is also a taming checkpoint on its own (encoder and decoder)."""
    tok = mmtok.ImageTokenizer.from_taming(DECODER, CHAMELEON / "original" / "vqgan.yaml")
    _codes_match(tok.encode(cham_io["x_chameleon"]), cham_io["codes"], cham_io["margin"])


# ---------------------------------------------------------------------------------------------- Janus

def test_janus_upstream_codes_and_decode(janus, janus_io):
    assert janus.family == "janus" and janus.lookup == "upstream" and janus.num_codes == 500
    x = janus_io["x"]
    _close(janus.encode_latents(x), janus_io["z_e"], 1e-5, what="z_e")
    codes = janus.encode(x)
    assert codes.shape == (2, 20, 36)
    _codes_match(codes, janus_io["codes"], janus_io["margin"])
    _close(janus.decode(janus_io["codes"], clamp=False), janus_io["decoded"], 1e-4, 1e-4, what="decoded")
    _close(janus.decode(janus_io["codes_transformers"], clamp=False), janus_io["decoded_transformers_codes"],
           1e-4, 1e-4, what="decoded transformers codes")


def test_janus_transformers_lookup_is_an_explicit_option(janus_io):
    tok = load(JANUS / "hf", lookup="transformers")
    codes = tok.encode(janus_io["x"])
    margin = janus_io["margin_transformers"]
    sure = margin > 1e-4
    assert int(sure.sum()) > 0.5 * margin.numel()
    assert int((codes != janus_io["codes_transformers"])[sure].sum()) == 0
    # transformers' encode really differs from upstream Janus (no l2-normalisation), and mmtok's default follows Janus
    assert float((janus_io["codes"] != janus_io["codes_transformers"]).float().mean()) > 0.2
    with pytest.raises(ValueError, match="Janus only"):
        load(CHAMELEON / "hf", lookup="transformers")
    with pytest.raises(ValueError, match="Chameleon only"):
        load(JANUS / "hf", preprocessing="transformers")


def test_janus_decoder_level_order_is_reversed():
    """transformers' decoder.up.0 (applied first, lowest resolution) is our level L-1; the mid-level attention sits
    there, so a taming-order mapping would not even load."""
    state = load_file(str(JANUS / "hf" / "model.safetensors"))
    assert any(k.startswith("decoder.up.0.attn.") for k in state)
    assert not any(k.startswith("decoder.up.1.attn.") for k in state)
    tok = load(JANUS / "hf")
    assert len(tok.model.decoder.up[1].attn) == 2 and len(tok.model.decoder.up[0].attn) == 0
    assert torch.equal(tok.model.decoder.up[1].block[0].conv1.weight, state["decoder.up.0.block.0.conv1.weight"])


# ------------------------------------------------------------------------------------------------ bf16

@pytest.mark.parametrize("family", ["chameleon", "janus"])
def test_bf16_codes_equal_where_margin_large(family, cham_io, janus_io):
    """bf16: codes equal wherever the fixture margin is > 1e-2; the decoder runs under bf16 autocast. (The tiny
    models are 32 channels wide, which mmtok's bf16 encode policy keeps in fp32, see docs/image.md.)"""
    folder, io = (CHAMELEON, cham_io) if family == "chameleon" else (JANUS, janus_io)
    x = io["x_chameleon"] if family == "chameleon" else io["x"]
    options = {"decoder_checkpoint": DECODER} if family == "chameleon" else {}
    tok = load(folder / "hf", dtype=torch.bfloat16, **options)
    sure = io["margin"] > 1e-2
    assert int(sure.sum()) > 0.5 * io["margin"].numel()
    assert int((tok.encode(x) != io["codes"])[sure].sum()) == 0
    decoded = tok.decode(io["codes"], clamp=False)
    assert decoded.dtype == torch.float32
    error = (decoded - io["decoded"]).abs()
    assert 1e-5 < float(error.max()) < 0.1 * float(io["decoded"].abs().max()), float(error.max())


# -------------------------------------------------------------------------------------------- round trip

@pytest.mark.parametrize("which", ["chameleon", "chameleon-encoder-only", "janus", "janus-transformers"])
def test_save_pretrained_round_trip(which, tmp_path, cham_io, janus_io):
    if which.startswith("chameleon"):
        options = {"decoder_checkpoint": DECODER} if which == "chameleon" else {}
        tok, x, codes = load(CHAMELEON / "hf", **options), cham_io["x_chameleon"], cham_io["codes"]
    else:
        options = {"lookup": "transformers"} if which == "janus-transformers" else {}
        tok, x, codes = load(JANUS / "hf", **options), janus_io["x"], janus_io["codes"]
    tok.save_pretrained(tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert config["format"] == "mmtok.image.transformers_vq"
    assert detect_layout(tmp_path / "saved").name == "mmtok"
    again = load(tmp_path / "saved")
    assert type(again) is TransformersVQTokenizer and again.config == tok.config
    assert torch.equal(again.encode(x), tok.encode(x))
    if tok.has_decoder:
        assert torch.equal(again.decode(codes, clamp=False), tok.decode(codes, clamp=False))
    else:
        assert not again.has_decoder
    direct = TransformersVQTokenizer.from_pretrained(tmp_path / "saved")
    assert torch.equal(direct.encode(x), tok.encode(x))
    assert set(tok.state_dict()) == set(load_file(str(tmp_path / "saved" / "model.safetensors")))


def test_code_spec(chameleon, janus):
    assert chameleon.code_spec == CodeSpec("image", ("h", "w"), (300,), (2, 2), image_size=chameleon.image_size)
    assert janus.code_spec.codebook_sizes == (500,)


# ------------------------------------------------------------------------------------ files and detection

def test_detection():
    assert detect_layout(CHAMELEON / "hf").name == "chameleon"
    assert detect_layout(JANUS / "hf").name == "janus"
    with pytest.raises(ValueError, match="not a transformers janus folder"):
        load(CHAMELEON / "hf", format="janus")


def _copy(src, dst, *, weights="safetensors"):
    dst.mkdir()
    shutil.copy(src / "config.json", dst / "config.json")
    state = load_file(str(src / "model.safetensors"))
    if weights == "bin":
        torch.save(state, dst / "pytorch_model.bin")
    elif weights == "sharded":
        keys = sorted(state)
        half = len(keys) // 2
        shards = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
        for name, part in shards.items():
            save_file({k: state[k] for k in part}, str(dst / name))
        index = {"metadata": {}, "weight_map": {k: n for n, part in shards.items() for k in part}}
        (dst / "model.safetensors.index.json").write_text(json.dumps(index))
    else:
        shutil.copy(src / "model.safetensors", dst / "model.safetensors")
    return state


@pytest.mark.parametrize("weights", ["bin", "sharded"])
def test_weight_file_kinds(weights, tmp_path, janus_io):
    _copy(JANUS / "hf", tmp_path / "m", weights=weights)
    tok = load(tmp_path / "m")
    _codes_match(tok.encode(janus_io["x"]), janus_io["codes"], janus_io["margin"])


@pytest.mark.parametrize("family", ["chameleon", "janus"])
def test_full_model_folder(family, tmp_path, cham_io, janus_io):
    """A full Chameleon / Janus model folder: `model_type` chameleon / janus, the VQ under `vq_config` and its keys
    under `model.vqmodel.`; only the shards holding those keys are read."""
    src = CHAMELEON / "hf" if family == "chameleon" else JANUS / "hf"
    vq_config = json.loads((src / "config.json").read_text())
    state = load_file(str(src / "model.safetensors"))
    folder = tmp_path / "full"
    folder.mkdir()
    config = {"model_type": family, "architectures": [f"{family.title()}ForConditionalGeneration"],
              "vq_config": vq_config, "text_config": {"hidden_size": 8}}
    (folder / "config.json").write_text(json.dumps(config))
    save_file({"model.vqmodel." + k: v for k, v in state.items()}, str(folder / "model-00002-of-00002.safetensors"))
    (folder / "model-00001-of-00002.safetensors").write_bytes(b"not read: holds no vqmodel key")
    weight_map = {"model.vqmodel." + k: "model-00002-of-00002.safetensors" for k in state}
    weight_map["lm_head.weight"] = "model-00001-of-00002.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert detect_layout(folder).name == family
    tok = load(folder)
    io = cham_io if family == "chameleon" else janus_io
    x = io["x_chameleon"] if family == "chameleon" else io["x"]
    _codes_match(tok.encode(x), io["codes"], io["margin"])


# ------------------------------------------------------------------------------------------------- errors

def test_config_that_does_not_match_weights(tmp_path):
    folder = tmp_path / "m"
    _copy(CHAMELEON / "hf", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_embeddings": 301}))
    with pytest.raises(ValueError, match=r"codebook has shape \(300, 12\).*301"):
        load(folder)
    (folder / "config.json").write_text(json.dumps({**config, "channel_multiplier": [1, 1, 1]}))
    with pytest.raises(ValueError, match=r"missing keys: .*encoder\.down\.2\.block\.0"):
        load(folder)
    (folder / "config.json").write_text(json.dumps({**config, "base_channels": 64}))
    with pytest.raises(ValueError, match=r"encoder\.conv_in\.weight \(32, 3, 3, 3\) \(model expects \(64, 3, 3, 3\)\)"):
        load(folder)


def test_truncated_weights_are_refused(tmp_path):
    folder = tmp_path / "m"
    _copy(JANUS / "hf", folder)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="model.safetensors"):
        load(folder)


def test_unsupported_configs_are_named(tmp_path):
    folder = tmp_path / "m"
    _copy(CHAMELEON / "hf", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "double_latent": True}))
    with pytest.raises(ValueError, match="double_latent"):
        load(folder)


def test_out_of_range_codes(janus, chameleon):
    codes = torch.zeros(1, 20, 36, dtype=torch.long)
    codes[0, 3, 4] = 500
    with pytest.raises(ValueError, match=r"code 500 at position .*\(0, 3, 4\)"):
        janus.decode(codes)
    codes[0, 3, 4] = -1
    with pytest.raises(ValueError, match="code -1"):
        chameleon.decode(codes)
    with pytest.raises(ValueError, match="integer"):
        janus.decode(codes.float())


def test_uint8_input_checked(janus):
    with pytest.raises(ValueError, match="multiples of the downsample factor"):
        janus.encode(torch.zeros(1, 3, 41, 72, dtype=torch.uint8))
