"""Open-MAGVIT2 checkpoints (Lightning .ckpt + yaml) against its own modules (fixtures:
scripts/fixtures/make_magvit2_fixtures.py): codes with raw and EMA weights, decode from codes."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch

import mmtok.tokenizer.registry as registry
from mmtok.image.magvit2 import Magvit2Tokenizer, depth_to_space

DATA = pathlib.Path(__file__).parent / "data" / "magvit2"


@pytest.fixture(scope="module")
def outputs():
    with np.load(DATA / "outputs.npz") as f:
        return {k: torch.from_numpy(f[k]) for k in f.files}


@pytest.mark.parametrize("name", ["plain", "factorized"])
@pytest.mark.parametrize("weights", ["ema", "raw"])
def test_codes_and_pixels_match_open_magvit2(outputs, name, weights):
    ckpt = DATA / name / "model.ckpt"
    assert registry.detect_layout(ckpt).name == "magvit2"
    tok = registry.load(ckpt, weights=weights)
    assert isinstance(tok, Magvit2Tokenizer)
    codes = tok.encode(outputs[f"{name}/images"])
    expected = outputs[f"{name}/{weights}_codes"]
    sure = outputs[f"{name}/{weights}_margin"] > 1e-4
    if name == "factorized":
        sure = sure.unsqueeze(1).expand_as(expected)
    assert sure.float().mean() > 0.95
    assert torch.equal(codes[sure], expected[sure])
    torch.testing.assert_close(tok.decode(expected, clamp=False), outputs[f"{name}/{weights}_decoded"],
                               atol=1e-4, rtol=0)


def test_auto_weights_follow_the_yaml_and_the_sets_differ(outputs):
    auto = registry.load(DATA / "plain" / "model.ckpt")
    assert auto.config["weights"] == "ema"  # use_ema: True in the yaml
    assert not torch.equal(outputs["plain/ema_codes"], outputs["plain/raw_codes"])


def test_spec_round_trip_and_refusals(outputs, tmp_path):
    tok = registry.load(DATA / "factorized" / "model.ckpt")
    spec = tok.code_spec
    assert spec.axes == ("codebook", "h", "w") and spec.codebook_sizes == (32, 128) and spec.downsample == (4, 4)
    tok.save_pretrained(tmp_path / "m2")
    again = registry.load(tmp_path / "m2")
    x = outputs["factorized/images"]
    assert torch.equal(again.encode(x), tok.encode(x))
    with pytest.raises(ValueError, match="outside 0..31"):
        tok.decode(torch.full((1, 2, 4, 6), 32))
    with pytest.raises(ValueError, match="weights must be one of"):
        registry.load(DATA / "plain" / "model.ckpt", weights="best")


def test_depth_to_space_is_dcr_not_pixel_shuffle():
    x = torch.arange(2 * 8 * 3 * 2, dtype=torch.float32).view(2, 8, 3, 2)
    y = depth_to_space(x, 2)
    assert y.shape == (2, 2, 6, 4)
    # output channel c at block offset (i, j) comes from input channel (i * 2 + j) * C' + c (C' = 2 here)
    assert y[0, 1, 0, 1] == x[0, (0 * 2 + 1) * 2 + 1, 0, 0] and y[0, 0, 1, 0] == x[0, (1 * 2 + 0) * 2 + 0, 0, 0]
    assert not torch.equal(y, torch.nn.functional.pixel_shuffle(x, 2))
