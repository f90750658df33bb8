"""Emu3.5's IBQ vision tokenizer (transformers Apertus1p5VisionTokenizerModel) against transformers' own encode
(fixtures: scripts/fixtures/make_emu35_ibq_fixtures.py)."""
from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest
import torch

import mmtok.tokenizer.registry as registry
from mmtok.image.emu35_ibq import Emu35IBQTokenizer, smart_size
from mmtok.tokenizer.protocol import Tokenizer

DATA = pathlib.Path(__file__).parent / "data" / "emu35_ibq"


@pytest.fixture(scope="module")
def outputs():
    with np.load(DATA / "outputs.npz") as f:
        return {k: torch.from_numpy(f[k]) for k in f.files}


@pytest.mark.parametrize("folder", ["standalone", "full"])
def test_codes_match_transformers(outputs, folder):
    assert registry.detect_layout(DATA / folder).name == "emu35-ibq"
    tok = registry.load(DATA / folder)
    assert isinstance(tok, Emu35IBQTokenizer) and isinstance(tok, Tokenizer)
    codes = tok.encode(outputs["images"])
    sure = outputs["margins"] > 1e-4
    assert sure.float().mean() > 0.99
    assert torch.equal(codes[sure], outputs["codes"][sure])
    spec = tok.code_spec
    assert spec.codebook_sizes == (300,) and spec.downsample == (2, 2) and not spec.decodable
    assert tuple(codes.shape) == (3, 8, 12)


def test_lookup_is_inner_product_not_l2(outputs):
    tok = registry.load(DATA / "standalone")
    z = tok.model.latents(outputs["images"]).permute(0, 2, 3, 1).reshape(-1, 12).double()
    book = tok.model.codebook.double()
    dot = (z @ book.T).argmax(1)
    l2 = torch.cdist(z, book).argmin(1)
    assert not torch.equal(dot, l2)  # the fixture tells the two apart
    assert torch.equal(tok.encode(outputs["images"]).reshape(-1), dot)


def test_bf16_input_and_round_trip(outputs, tmp_path):
    tok = registry.load(DATA / "standalone")
    assert torch.equal(tok.encode(outputs["images"].bfloat16()), tok.encode(outputs["images"].bfloat16().float()))
    tok.save_pretrained(tmp_path / "ibq")
    again = registry.load(tmp_path / "ibq")
    assert isinstance(again, Emu35IBQTokenizer)
    assert torch.equal(again.encode(outputs["images"]), tok.encode(outputs["images"]))


def test_refusals(outputs, tmp_path):
    tok = registry.load(DATA / "standalone")
    with pytest.raises(NotImplementedError, match="no decoder"):
        tok.decode(torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="multiples"):
        tok.encode(torch.zeros(1, 3, 5, 6))
    bad = tmp_path / "bad"
    shutil.copytree(DATA / "standalone", bad)
    config = json.loads((bad / "config.json").read_text())
    config["codebook_size"] = 301
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"codebook \(weights \[300, 12\], model expects \[301, 12\]\)"):
        registry.load(bad)
    config["channel_multiplier"] = [1, 1, 1]
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="missing keys: encoder.down.1.downsample.conv.bias, .*encoder.down.2.block.0"):
        registry.load(bad)


def test_smart_size_follows_the_image_processor():
    assert smart_size(480, 640) == (480, 640)
    assert smart_size(100, 50) == (192, 96)  # below 128*128 pixels: scaled up
    h, w = smart_size(3000, 2000)
    assert h * w <= 1400 * 1400 and h % 16 == 0 and w % 16 == 0
