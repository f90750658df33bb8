"""The shipped default image tokenizer: loads offline, is small, and reconstructs held-out photos
recognisably; the demo grid helper writes its PNG and reports PSNR and tokens per image."""
from __future__ import annotations

import json
import os

import pytest
import torch
from PIL import Image

from mmtok.train.default_model import DEFAULT_MODEL_DIR, load_default_image_tokenizer
from mmtok.train.demo_grid import reconstruction_grid
from mmtok.train.metrics import psnr

SHIPPED = os.path.isfile(os.path.join(DEFAULT_MODEL_DIR, "model.safetensors"))


def test_default_model_is_shipped_and_small():
    assert SHIPPED, f"default tokenizer missing from {DEFAULT_MODEL_DIR}"
    size = os.path.getsize(os.path.join(DEFAULT_MODEL_DIR, "model.safetensors"))
    assert size <= 30 * 2**20
    with open(os.path.join(DEFAULT_MODEL_DIR, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    assert 2 ** (len(config["ch_mult"]) - 1) in (8, 16) and 1024 <= config["num_codes"] <= 8192


@pytest.mark.skipif(not SHIPPED, reason="default tokenizer not shipped")
def test_default_model_reconstructs_a_held_out_photo(data_dir, tmp_path):
    tok = load_default_image_tokenizer()
    photo = data_dir / "images" / "chelsea.png"  # held out: never in the training set
    out = reconstruction_grid(tok, [photo], str(tmp_path / "grid.png"), size=128)
    assert out["tokens"] == {"chelsea.png": (128 // tok.downsample_factor) ** 2}
    assert out["psnr"]["chelsea.png"] > 20.0  # random weights give < 12 dB
    grid = Image.open(tmp_path / "grid.png")
    assert grid.size[1] > 2 * 128 and grid.size[0] >= 128
    # the grid's bottom row is the decoded image: recompute PSNR from the PNG itself
    x = tok.prepare_images([photo], size=128)
    rec = torch.from_numpy(__import__("numpy").asarray(grid.convert("RGB"))[2 + 128 + 2:2 + 128 + 2 + 128, 2:130].copy())
    rec = rec.permute(2, 0, 1).float().div(127.5).sub(1).unsqueeze(0)
    assert abs(float(psnr(x, rec)[0]) - out["psnr"]["chelsea.png"]) < 0.05
