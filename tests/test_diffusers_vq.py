"""diffusers VQModel (aMUSEd / VQ-Diffusion group norm, MoVQ spatial norm) against diffusers' own outputs.

Fixtures: tests/data/diffusers_vq (scripts/fixtures/make_diffusers_fixtures.py, diffusers 0.42.1): tiny random
models with unusual configs saved by `VQModel.save_pretrained`, and what upstream's encode / quantize / decode
gave on a fixed non-square input, with the best-vs-second-best code margin of every position.
"""
import json
import pathlib
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import mmtok
from mmtok.image.diffusers_vq import DiffusersVQConfig, DiffusersVQTokenizer
from mmtok.tokenizer import detect_layout

DATA = pathlib.Path(__file__).parent / "data" / "diffusers_vq"
MODELS = ["group_tiny", "group_attn", "spatial"]
WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def outputs():
    with np.load(DATA / "outputs.npz") as f:
        return {k: torch.from_numpy(f[k]) for k in f.files}


def upstream(outputs, name, key):
    return outputs[f"{name}.{key}"]


def assert_codes(codes, expected, margin, threshold):
    sure = margin > threshold
    assert int(sure.sum()) > 0.5 * sure.numel()  # the comparison covers most positions
    assert codes.shape == expected.shape
    assert torch.equal(codes[sure], expected[sure]), f"{int((codes != expected)[sure].sum())} codes differ"


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("name", MODELS)
def test_matches_upstream_fp32(outputs, name, channels_last):
    tok = DiffusersVQTokenizer.from_diffusers(DATA / name, channels_last=channels_last)
    images = upstream(outputs, name, "images")
    latents = tok.encode_latents(images)
    torch.testing.assert_close(latents, upstream(outputs, name, "latents"), rtol=0, atol=1e-4)
    codes = tok.encode(images)
    assert_codes(codes, upstream(outputs, name, "codes"), upstream(outputs, name, "margin"), 1e-4)
    # upstream's rows went through the straight-through z + (e - z), which rounds
    torch.testing.assert_close(tok.lookup_latents(codes), upstream(outputs, name, "quantized"), rtol=0, atol=1e-6)
    pixels = tok.decode(upstream(outputs, name, "codes"), clamp=False)
    torch.testing.assert_close(pixels, upstream(outputs, name, "pixels_codes"), rtol=0, atol=1e-4)
    torch.testing.assert_close(tok.reconstruct(images), upstream(outputs, name, "pixels_latents"), rtol=0, atol=1e-4)
    clamped = tok.decode(codes)
    assert float(clamped.abs().max()) <= 1.0
    if f"{name}.pixels_continuous" in outputs:  # Kandinsky's movq.decode(latents, force_not_quantize=True)
        torch.testing.assert_close(tok.decode_latents(upstream(outputs, name, "latents")),
                                   upstream(outputs, name, "pixels_continuous"), rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_bf16_codes_agree_where_the_margin_is_clear(outputs, name):
    tok = DiffusersVQTokenizer.from_diffusers(DATA / name, dtype=torch.bfloat16)
    codes = tok.encode(upstream(outputs, name, "images"))
    assert codes.dtype == torch.int64
    assert_codes(codes, upstream(outputs, name, "codes"), upstream(outputs, name, "margin"), 1e-2)
    pixels = tok.decode(codes, clamp=False)
    assert pixels.dtype == torch.float32
    close = (pixels - upstream(outputs, name, "pixels_codes")).abs().mean()
    assert float(close) < 0.05


def test_force_upcast_and_scaling_factor(outputs):
    tiny = DiffusersVQTokenizer.from_diffusers(DATA / "group_tiny", dtype=torch.float16)  # force_upcast: true
    assert tiny.compute_dtype == torch.float32
    images = upstream(outputs, "group_tiny", "images")
    assert torch.equal(tiny.encode(images), DiffusersVQTokenizer.from_diffusers(DATA / "group_tiny").encode(images))
    attn = DiffusersVQTokenizer.from_diffusers(DATA / "group_attn", dtype="fp16")  # force_upcast: false
    assert attn.compute_dtype == torch.float16
    assert tiny.scaling_factor == 0.3
    z = tiny.encode_latents(images)
    torch.testing.assert_close(tiny.encode_latents(images, scaled=True), z * 0.3)
    attn32 = DiffusersVQTokenizer.from_diffusers(DATA / "group_attn")
    za = attn32.encode_latents(upstream(outputs, "group_attn", "images"))
    torch.testing.assert_close(attn32.decode_latents(za * 0.7, scaled=True), attn32.decode_latents(za),
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("variant", ["group_tiny_bin", "group_tiny_sharded"])
def test_bin_and_sharded_checkpoints(variant, outputs):
    reference = DiffusersVQTokenizer.from_diffusers(DATA / "group_tiny")
    tok = DiffusersVQTokenizer.from_diffusers(DATA / variant)
    for key, value in reference.state_dict().items():
        assert torch.equal(tok.state_dict()[key], value), key
    images = upstream(outputs, "group_tiny", "images")
    assert torch.equal(tok.encode(images), reference.encode(images))


def test_fp16_stored_weights_load_as_fp32():
    stored = load_file(str(DATA / "spatial" / WEIGHTS))
    assert {v.dtype for v in stored.values()} == {torch.float16}
    tok = DiffusersVQTokenizer.from_diffusers(DATA / "spatial")
    assert {v.dtype for v in tok.state_dict().values()} == {torch.float32}


@pytest.mark.parametrize("name", MODELS)
def test_mmtok_load_detects_and_round_trips(outputs, name, tmp_path):
    assert detect_layout(DATA / name).name == "diffusers-vq"
    tok = mmtok.tokenizer.load(DATA / name)
    assert isinstance(tok, DiffusersVQTokenizer) and isinstance(tok, mmtok.tokenizer.Tokenizer)
    spec = tok.code_spec
    assert spec.modality == "image" and spec.axes == ("h", "w") and spec.image_size == 256
    config = json.loads((DATA / name / "config.json").read_text())
    assert spec.codebook_sizes == (config["num_vq_embeddings"],)
    assert spec.downsample == (2 ** (len(config["block_out_channels"]) - 1),) * 2
    images = upstream(outputs, name, "images")
    codes = tok.encode(images)
    # mmtok's own folder: save_pretrained -> from_pretrained and mmtok.load, identical weights and codes
    saved = tok.save_pretrained(tmp_path / "mmtok")
    assert json.loads((tmp_path / "mmtok" / "config.json").read_text())["format"] == "mmtok.image.diffusers_vq"
    assert detect_layout(saved).name == "mmtok"
    for again in (DiffusersVQTokenizer.from_pretrained(saved), mmtok.tokenizer.load(saved)):
        assert isinstance(again, DiffusersVQTokenizer)
        assert again.config == tok.config
        assert all(torch.equal(again.state_dict()[k], v) for k, v in tok.state_dict().items())
        assert torch.equal(again.encode(images), codes)
    # and back to the diffusers layout
    back = DiffusersVQTokenizer.from_diffusers(tok.save_diffusers(tmp_path / "diffusers"))
    assert torch.equal(back.encode(images), codes)
    assert json.loads((tmp_path / "diffusers" / "config.json").read_text())["_class_name"] == "VQModel"


@pytest.mark.parametrize("name", ["group_tiny_sharded", "spatial"])
def test_mmtok_convert(outputs, name, tmp_path):
    from mmtok.tokenizer.cli import convert, same_tokenizer

    base = name.replace("_sharded", "")
    original = mmtok.tokenizer.load(DATA / name)
    convert(DATA / name, tmp_path / "out")
    converted = mmtok.tokenizer.load(tmp_path / "out")
    assert isinstance(converted, DiffusersVQTokenizer)
    assert same_tokenizer(original, converted) == []
    images = upstream(outputs, base, "images")
    assert_codes(converted.encode(images), upstream(outputs, base, "codes"), upstream(outputs, base, "margin"), 1e-4)
    torch.testing.assert_close(converted.decode(upstream(outputs, base, "codes"), clamp=False),
                               upstream(outputs, base, "pixels_codes"), rtol=0, atol=1e-4)
    convert(tmp_path / "out", tmp_path / "again")  # re-converting changes no byte
    for file in ("config.json", "model.safetensors"):
        assert (tmp_path / "out" / file).read_bytes() == (tmp_path / "again" / file).read_bytes()


def test_pipeline_folder_with_vqvae_subfolder(tmp_path, outputs):
    shutil.copytree(DATA / "group_tiny", tmp_path / "vqvae")
    (tmp_path / "model_index.json").write_text('{"_class_name": "AmusedPipeline"}')
    assert detect_layout(tmp_path).name == "diffusers-vq"
    tok = mmtok.tokenizer.load(tmp_path, dtype="bf16")
    assert tok.dtype == torch.bfloat16
    images = upstream(outputs, "group_tiny", "images")
    assert tok.encode(images).shape == upstream(outputs, "group_tiny", "codes").shape


def _copy(tmp_path, name="group_tiny"):
    folder = tmp_path / name
    shutil.copytree(DATA / name, folder)
    return folder


def test_config_not_matching_weights_lists_keys_and_shapes(tmp_path):
    folder = _copy(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["num_vq_embeddings"] = 38
    config["latent_channels"] = 6
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as err:
        DiffusersVQTokenizer.from_diffusers(folder)
    message = str(err.value)
    assert WEIGHTS in message
    assert "quantize.embedding.weight (weights [37, 3], model expects [38, 3])" in message
    assert "encoder.conv_out.weight" in message


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    folder = _copy(tmp_path)
    state = load_file(str(folder / WEIGHTS))
    state.pop("decoder.conv_out.bias")
    state["decoder.extra.weight"] = torch.zeros(2)
    save_file(state, str(folder / WEIGHTS))
    with pytest.raises(ValueError, match=r"missing keys: decoder.conv_out.bias.*unexpected keys: decoder.extra.weight"):
        mmtok.tokenizer.load(folder)


def test_bad_configs_are_refused_before_the_weights(tmp_path):
    folder = _copy(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    for change, expected in [({"norm_typ": "group"}, "unknown VQModel config keys \\['norm_typ'\\]"),
                             ({"down_block_types": ["CrossAttnDownBlock2D"] * 3}, "CrossAttnDownBlock2D"),
                             ({"act_fn": "gelu"}, "act_fn"),
                             ({"norm_num_groups": 3}, "not divisible by norm_num_groups 3"),
                             ({"block_out_channels": [4, 6]}, "3 down_block_types")]:
        (folder / "config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(ValueError, match=expected):
            DiffusersVQTokenizer.from_diffusers(folder)
    with pytest.raises(ValueError, match="vq_embed_dim"):
        DiffusersVQConfig(block_out_channels=[32], norm_type="spatial", latent_channels=4, vq_embed_dim=3)
    (folder / "config.json").write_text(json.dumps({**config, "_class_name": "AutoencoderKL"}))
    with pytest.raises(ValueError, match="no known tokenizer layout"):
        mmtok.tokenizer.load(folder)
    with pytest.raises(ValueError, match="expected 'VQModel'"):
        DiffusersVQTokenizer.from_diffusers(folder)


def test_truncated_weights_and_hub_ids_are_refused(tmp_path):
    folder = _copy(tmp_path)
    data = (folder / WEIGHTS).read_bytes()
    (folder / WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"{WEIGHTS}: not a readable safetensors file"):
        mmtok.tokenizer.load(folder)
    (folder / WEIGHTS).unlink()
    with pytest.raises(FileNotFoundError, match="no weights found"):
        mmtok.tokenizer.load(folder)
    with pytest.raises(ValueError, match="Hub id"):
        mmtok.tokenizer.load("amused/amused-256")


def test_out_of_range_codes_are_refused(outputs):
    tok = DiffusersVQTokenizer.from_diffusers(DATA / "group_tiny")
    codes = upstream(outputs, "group_tiny", "codes").clone()
    codes[1, 2, 3] = 37
    with pytest.raises(ValueError, match=r"code 37 at position \(b, i, j\) = \(1, 2, 3\) is out of range \[0, 37\)"):
        tok.decode(codes)
    with pytest.raises(ValueError, match="integer"):
        tok.decode(codes.float())
    with pytest.raises(ValueError, match="latents must be"):
        tok.decode_latents(torch.zeros(1, 4, 2, 2))


def test_compiled_stages_match_eager(outputs):
    tok = DiffusersVQTokenizer.from_diffusers(DATA / "spatial")
    images = upstream(outputs, "spatial", "images")
    codes, pixels = tok.encode(images), tok.decode(upstream(outputs, "spatial", "codes"), clamp=False)
    tok.compile(backend="eager", fullgraph=True)
    assert torch.equal(tok.encode(images), codes)
    torch.testing.assert_close(tok.decode(upstream(outputs, "spatial", "codes"), clamp=False), pixels,
                               rtol=0, atol=1e-5)
