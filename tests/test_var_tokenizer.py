"""VAR's VQVAE through mmtok.load: codes and pixels against VAR's own model (tests/data/var/vae, made by
scripts/fixtures/make_var_fixtures.py)."""
from __future__ import annotations

import pathlib
import shutil

import numpy as np
import pytest
import torch

import mmtok.tokenizer.registry as registry
from mmtok.image.var import VARTokenizer

VAE = pathlib.Path(__file__).parent / "data" / "var" / "vae"
CKPT = VAE / "vae_ch32v12z5.pth"
SCALES = (1, 2, 3, 4)


@pytest.fixture(scope="module")
def outputs():
    with np.load(VAE / "outputs.npz") as f:
        return {k: torch.from_numpy(f[k]) for k in f.files}


@pytest.fixture(scope="module")
def tok():
    return registry.load(CKPT, scales=SCALES)


def test_detected_and_exact(tok, outputs):
    assert registry.detect_layout(CKPT).name == "var"
    assert isinstance(tok, VARTokenizer)
    codes = tok.encode(outputs["images"])
    sure = outputs["margins"] > 1e-4
    assert sure.all()
    assert torch.equal(codes, outputs["indices"])
    torch.testing.assert_close(tok.decode(codes), outputs["decoded"], atol=1e-4, rtol=0)
    maps = tok.split(codes)
    assert [tuple(m.shape) for m in maps] == [(2, s, s) for s in SCALES]
    spec = tok.code_spec
    assert spec.axes == ("token",) and spec.codebook_sizes == (12,) and spec.extra["scales"][-1] == [4, 4]


def test_round_trip_through_an_mmtok_folder(tok, outputs, tmp_path):
    tok.save_pretrained(tmp_path / "var")
    again = registry.load(tmp_path / "var")
    assert isinstance(again, VARTokenizer) and again.config == tok.config
    assert torch.equal(again.encode(outputs["images"]), outputs["indices"])


def test_refusals(tok, outputs, tmp_path):
    with pytest.raises(ValueError, match="last scale"):
        registry.load(CKPT, scales=(1, 2)).encode(outputs["images"])
    with pytest.raises(ValueError, match="outside 0..11"):
        tok.decode(torch.full((1, 30), 12))
    with pytest.raises(ValueError, match=r"\(batch, token\)"):
        tok.decode(torch.zeros(1, 2, 3, dtype=torch.long))
    state = torch.load(CKPT, weights_only=True)
    state.pop("decoder.conv_out.bias")
    state["quantize.embedding.weight"] = torch.zeros(13, 5)
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="missing keys: decoder.conv_out.bias"):
        registry.load(tmp_path / "broken.pth", scales=SCALES)
    truncated = tmp_path / "truncated.pth"
    shutil.copy(CKPT, truncated)
    with open(truncated, "r+b") as f:
        f.truncate(CKPT.stat().st_size // 2)
    with pytest.raises(ValueError):
        registry.load(truncated, format="var", scales=SCALES)
