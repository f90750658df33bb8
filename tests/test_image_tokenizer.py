"""ImageTokenizer against the upstream fixtures (taming-transformers and LlamaGen tiny VQ-GANs), formats, errors."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch
import yaml

from mmtok import ImageTokenizer
from mmtok.image import VQGANConfig

CKPT = "checkpoints"
DATA = pathlib.Path(__file__).parent / "data"


def _fixture(data_dir, name):
    return {k: torch.from_numpy(v) for k, v in np.load(data_dir / CKPT / name / "io.npz").items()}


def _load(data_dir, name, **kwargs):
    folder = data_dir / CKPT / name
    if name == "taming_tiny":
        return ImageTokenizer.from_taming(folder / "model.ckpt", folder / "config.yaml", **kwargs)
    return ImageTokenizer.from_llamagen(folder / "model.pt", config_path=folder / "config.json", **kwargs)


@pytest.fixture(scope="module")
def tokenizers():
    return {name: _load(DATA, name) for name in ("taming_tiny", "llamagen_tiny")}


def _close(actual, expected, atol, rtol=0.0, what=""):
    diff = (actual - expected).abs()
    bound = atol + rtol * expected.abs()
    assert bool((diff <= bound).all()), f"{what}: max abs diff {diff.max().item():.3g} (atol {atol}, rtol {rtol})"


# --------------------------------------------------------------------------------------- fixtures, fp32


@pytest.mark.parametrize("name", ["taming_tiny", "llamagen_tiny"])
def test_fixture_numerics_fp32(tokenizers, data_dir, name):
    tok, io = tokenizers[name], _fixture(data_dir, name)
    assert tok.num_codes == 512 and tok.downsample_factor == 4 and tok.image_size == 64
    x = io["x"]
    _close(tok.encode_latents(x), io["z_e"], 1e-5, what="z_e")
    codes = tok.encode(x)
    assert codes.dtype == torch.int64 and codes.shape == (2, 16, 16)
    assert torch.equal(codes, io["indices"]), f"{(codes != io['indices']).sum()} indices differ"
    _close(tok.lookup_latents(codes), io["z_q_lookup"], 1e-6, what="z_q_lookup")
    _close(tok.lookup_latents(codes), io["z_q"], 1e-5, what="z_q")
    _close(tok.decode(io["indices"], clamp=False), io["x_dec_from_indices"], 1e-4, 1e-4, what="decoded from indices")
    _close(tok.decode(io["indices"]), io["x_dec_from_indices"].clamp(-1, 1), 1e-4, 1e-4, what="clamped decode")
    _close(tok.reconstruct(x), io["x_rec"], 1e-4, 1e-4, what="reconstruction")


def test_llamagen_codebook_is_normalised_at_use_only(tokenizers, data_dir):
    """The stored codebook stays raw (rows are not unit-norm); lookups use the normalised rows."""
    tok = tokenizers["llamagen_tiny"]
    raw = torch.load(data_dir / CKPT / "llamagen_tiny" / "model.pt", weights_only=True)["model"]["quantize.embedding.weight"]
    assert torch.equal(tok.model.quantize.codebook.detach(), raw)
    assert (raw.norm(dim=1) - 1).abs().max() > 0.5
    rows = tok.lookup_latents(torch.arange(512).reshape(1, 16, 32))
    _close(rows.norm(dim=1), torch.ones(1, 16, 32), 1e-5, what="looked-up row norms")


def test_llamagen_sizes_inferred_without_config(data_dir):
    tok = ImageTokenizer.from_llamagen(data_dir / CKPT / "llamagen_tiny" / "model.pt")
    cfg = tok.config
    assert (cfg["ch"], cfg["num_res_blocks"], cfg["ch_mult"], cfg["z_channels"], cfg["code_dim"]) == (32, 1, [1, 2, 2], 64, 8)
    assert cfg["l2_normalize"] and cfg["attn_levels"] == [2] and cfg["image_size"] == 256
    json.dumps(cfg)
    with pytest.raises(ValueError, match="ch=64"):
        ImageTokenizer.from_llamagen(data_dir / CKPT / "llamagen_tiny" / "model.pt", ch=64)


@pytest.mark.parametrize("name", ["taming_tiny"])
def test_nchw_layout_matches(tokenizers, data_dir, name):
    """channels_last=False (contiguous NCHW, PyTorch's own GroupNorm) meets the same tolerances."""
    io = _fixture(data_dir, name)
    assert tokenizers[name].model.encoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    tok = _load(data_dir, name, channels_last=False)
    assert tok.model.encoder.conv_in.weight.is_contiguous()
    _close(tok.encode_latents(io["x"]), io["z_e"], 1e-5, what="z_e")
    assert torch.equal(tok.encode(io["x"]), io["indices"])
    _close(tok.decode(io["indices"], clamp=False), io["x_dec_from_indices"], 1e-4, 1e-4, what="NCHW decode")


@pytest.mark.parametrize("name", ["taming_tiny", "llamagen_tiny"])
def test_bf16_mixed_precision(data_dir, name):
    """bf16 encoder policy, fp32 lookup: every code whose fp32 margin exceeds 1e-2 is unchanged; bf16 decode stays
    close to fp32 (PSNR floor).

    `index_margin` is the fixture's own float64 gap between the 2nd-best and best squared L2 distance (between
    l2-normalised vectors for LlamaGen), the same quantity our lookup ranks by, so masking by it is exact.
    """
    io = _fixture(data_dir, name)
    tok = _load(data_dir, name, dtype=torch.bfloat16)
    z = tok.encode_latents(io["x"])
    change = ((z - io["z_e"]).norm() / io["z_e"].norm()).item()
    assert 1e-4 < change < 0.015, f"bf16 latents moved by {change:.2g} (relative; > 1e-4 shows bf16 really ran)"
    codes = tok.encode(io["x"])
    margin, agree = io["index_margin"], codes == io["indices"]
    assert int((margin > 1e-2).sum()) > 400
    assert bool(agree[margin > 1e-2].all()), (
        f"{int((~agree[margin > 1e-2]).sum())} codes with margin > 1e-2 differ; margins of the flips: "
        f"{margin[~agree].tolist()}")
    assert agree.float().mean() >= 0.97
    dec = tok.decode(io["indices"], clamp=False)
    assert dec.dtype == torch.float32
    for reference in (io["x_dec_from_indices"], tok.model.decode_latents(tok.lookup_latents(io["indices"]))):
        mse = (dec - reference).square().mean()
        assert 10 * torch.log10(4.0 / mse) > 40.0  # peak-to-peak 2 ([-1, 1]): 40 dB is an RMS error of 0.02
        assert (dec - reference).abs().max() < 0.1


def _bf16_round(t: torch.Tensor) -> torch.Tensor:
    """float64 -> nearest bfloat16 value (ties to even), kept in float64.

    Not `t.to(torch.bfloat16)`: torch converts float64 through float32, a double rounding that lands a value just
    inside a bf16 midpoint ON the midpoint (fp32 rounding) and then on the wrong neighbour (ties to even)."""
    ulp = torch.exp2(torch.floor(torch.log2(t.abs().clamp_min(2.0**-126))) - 7)  # 8 significant bits
    return torch.round(t / ulp) * ulp  # exact in float64: a power-of-two scaling and an integer


def test_lowp_conv_rounds_only_inputs_weights_and_output(seed):
    """A wide layer multiplies bf16-rounded inputs and weights, rounds its sum once and adds the bias in fp32;
    layers reading no more channels than GroupNorm groups stay fp32."""
    from mmtok.image.layers import lowp_conv

    conv = torch.nn.Conv2d(64, 48, 3, padding=1, stride=2)
    x = torch.randn(2, 64, 9, 11).contiguous(memory_format=torch.channels_last)
    bf = lambda t: t.to(torch.bfloat16).double()  # noqa: E731  (fp32 -> bf16 is a single rounding)
    exact = torch.nn.functional.conv2d(bf(x), bf(conv.weight), None, 2, 1)
    bias = conv.bias.double().view(1, -1, 1, 1)
    with torch.inference_mode():
        y = lowp_conv(conv, x, torch.bfloat16)
    assert y.dtype == torch.float32 and y.shape == exact.shape
    # y = fp32(bf16(s) + bias): removing the bias leaves a bf16 value, up to the fp32 add's half ulp
    rounded = y.double() - bias
    on_grid = _bf16_round(rounded)
    assert bool(((rounded - on_grid).abs() <= y.double().abs() * 2.0**-24 + 1e-12).all()), "output not bf16-rounded"
    # that value is bf16(s) for the fp32-accumulated sum s: the nearest bf16 neighbour of the exact sum, or the
    # other one where the exact sum lies within s's accumulation-order error (1e-5 here) of their midpoint
    half_ulp = torch.exp2(torch.floor(torch.log2(exact.abs().clamp_min(2.0**-126))) - 8)
    assert bool(((on_grid - exact).abs() <= half_ulp + 1e-5).all())
    assert bool((on_grid == _bf16_round(exact)).double().mean() > 0.99)  # a flip only at a rounding boundary
    narrow = torch.nn.Conv2d(32, 48, 3, padding=1)
    x32 = torch.randn(2, 32, 8, 8)
    with torch.inference_mode():
        assert torch.equal(lowp_conv(narrow, x32, torch.bfloat16), narrow(x32))


def test_compile_traces_without_graph_breaks(seed):
    """Every block type (ResNet, attention, down/upsample, GroupNorm) traces with fullgraph=True."""
    cfg = VQGANConfig(num_codes=64, code_dim=8, z_channels=32, ch=32, ch_mult=[1, 2], num_res_blocks=1,
                      attn_levels=[1], image_size=16)
    eager = ImageTokenizer(cfg)
    compiled = ImageTokenizer(cfg, eager.model)
    x = torch.rand(2, 3, 16, 24) * 2 - 1
    codes = eager.encode(x)
    expected = eager.decode(codes)
    torch._dynamo.reset()
    compiled.compile(backend="eager", fullgraph=True)
    assert torch.equal(compiled.encode(x), codes)
    _close(compiled.decode(codes), expected, 1e-6, what="compiled decode")
    # the bf16 encoder policy (fp32 32-channel level, bf16 64-channel level and attention) traces as well
    eager_bf16 = ImageTokenizer(cfg, eager.model, dtype=torch.bfloat16)
    latents = eager_bf16.encode_latents(x)
    assert (latents - eager.encode_latents(x)).abs().max() > 0  # bf16 really ran
    compiled_bf16 = ImageTokenizer(cfg, eager.model, dtype=torch.bfloat16).compile(backend="eager", fullgraph=True)
    _close(compiled_bf16.encode_latents(x), latents, 1e-6, what="compiled bf16 latents")


# ------------------------------------------------------------------------------------------ formats


def test_save_pretrained_round_trip(tokenizers, tmp_path, seed):
    tok = tokenizers["llamagen_tiny"]
    tok.save_pretrained(tmp_path / "tok")
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == ["config.json", "model.safetensors"]
    again = ImageTokenizer.from_pretrained(tmp_path / "tok")
    assert again.config == tok.config
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    codes = tok.encode(x)
    assert torch.equal(again.encode(x), codes)
    assert torch.equal(again.decode(codes), tok.decode(codes))
    with pytest.raises(FileNotFoundError):
        ImageTokenizer.from_pretrained(tmp_path / "missing")
    with pytest.raises(ValueError, match="local"):
        ImageTokenizer.from_pretrained("https://example.com/tok")


def test_batch_invariance(tokenizers, seed):
    tok = tokenizers["taming_tiny"]
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    together = tok.encode(x)
    apart = torch.cat([tok.encode(x[i : i + 1]) for i in range(3)])
    assert torch.equal(together, apart)


# ------------------------------------------------------------------------------------------- errors


def _taming_paths(data_dir):
    folder = data_dir / CKPT / "taming_tiny"
    return folder / "model.ckpt", folder / "config.yaml"


def test_wrong_checkpoint_errors(data_dir, tmp_path):
    ckpt, config = _taming_paths(data_dir)
    llamagen = data_dir / CKPT / "llamagen_tiny" / "model.pt"
    with pytest.raises(ValueError, match="from_llamagen"):
        ImageTokenizer.from_taming(llamagen, config)
    with pytest.raises(ValueError, match="from_taming"):
        ImageTokenizer.from_llamagen(ckpt)
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        ImageTokenizer.from_taming(tmp_path / "nope.ckpt", config)
    junk = tmp_path / "junk.ckpt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="junk.ckpt"):
        ImageTokenizer.from_taming(junk, config)


def test_missing_and_unexpected_keys_are_listed(data_dir, tmp_path):
    ckpt, config = _taming_paths(data_dir)
    raw = torch.load(ckpt, weights_only=True)
    sd = dict(raw["state_dict"])
    del sd["decoder.up.1.upsample.conv.weight"]
    sd["encoder.extra.weight"] = torch.ones(3)
    torch.save({"state_dict": sd}, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError) as err:
        ImageTokenizer.from_taming(tmp_path / "bad.ckpt", config)
    message = str(err.value)
    assert "decoder.up.1.upsample.conv.weight" in message and "encoder.extra.weight" in message
    assert "loss." not in message  # the fixture's loss.* entries are ignored


def test_wrong_size_codebook(data_dir, tmp_path):
    ckpt, config = _taming_paths(data_dir)
    doc = yaml.safe_load(config.read_text())
    doc["model"]["params"]["n_embed"] = 1024
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError, match="codebook has shape \\(512, 32\\).*1024"):
        ImageTokenizer.from_taming(ckpt, tmp_path / "config.yaml")


def test_out_of_range_codes(tokenizers, seed):
    tok = tokenizers["taming_tiny"]
    codes = torch.randint(0, 512, (2, 4, 5))
    codes[1, 2, 3] = 512
    with pytest.raises(ValueError, match=r"code 512 at position \(b, i, j\) = \(1, 2, 3\)"):
        tok.decode(codes)
    codes[1, 2, 3] = 7
    codes[0, 1, 4] = -3
    with pytest.raises(ValueError, match=r"code -3 at position \(b, i, j\) = \(0, 1, 4\)"):
        tok.decode(codes)
    with pytest.raises(ValueError, match="integer"):
        tok.decode(codes.float())


def test_bad_tensor_inputs(tokenizers, seed):
    tok = tokenizers["taming_tiny"]
    with pytest.raises(ValueError, match="multiples of the downsample factor 4"):
        tok.encode(torch.rand(1, 3, 30, 32))
    with pytest.raises(ValueError, match="float"):
        tok.encode(torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        tok.encode(torch.rand(1, 3, 32, 32) * 255)
