"""Folders and token shards written before the shared save layer (tests/data/legacy_folders, frozen by
scripts/fixtures/make_legacy_folders.py with the old writers) still load, give the same codes, and re-save
through the new layer without changing a value."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch

import mmtok

LEGACY = pathlib.Path(__file__).parent / "data" / "legacy_folders"


@pytest.fixture(scope="module")
def expected():
    return dict(np.load(LEGACY / "expected.npz"))


def _codes(tok, name, expected):
    if name.startswith("image"):
        return tok.encode(torch.from_numpy(expected[f"{name}_images"]))
    with torch.no_grad():
        return tok.encode(torch.from_numpy(expected[f"{name}_wave"]), 16000)


@pytest.mark.parametrize("name", ["image_l2", "image_taming", "audio_bestrq", "audio_codec"])
def test_legacy_folder_loads_with_identical_codes(name, expected, tmp_path):
    tok = mmtok.load(LEGACY / name)
    codes = _codes(tok, name, expected)
    assert torch.equal(codes, torch.from_numpy(expected[f"{name}_codes"]))
    if f"{name}_decoded" in expected:
        with torch.no_grad():
            decoded = tok.decode(codes)
        np.testing.assert_allclose(decoded.numpy(), expected[f"{name}_decoded"], rtol=0, atol=1e-5)
    # re-saved through the shared layer: same tensors, same codes, a versioned marker, deterministic bytes
    tok.save_pretrained(tmp_path / "a")
    tok.save_pretrained(tmp_path / "b")
    for file in ("config.json", "model.safetensors"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["format"].startswith("mmtok.") and config["format_version"] == 1
    again = mmtok.load(tmp_path / "a")
    assert type(again) is type(tok) and again.config == tok.config
    old, new = tok.state_dict(), again.state_dict()
    assert set(old) == set(new) and all(torch.equal(old[k], new[k]) for k in old)
    assert torch.equal(_codes(again, name, expected), codes)


def test_legacy_token_shards_load_and_match_their_tokenizer_hash():
    from mmtok.data import TokenShards
    from mmtok.data.tokenizers import tokenizer_hash

    shards = TokenShards(LEGACY / "shards")
    manifest = json.loads((LEGACY / "shards" / "manifest.json").read_text())
    entry = manifest["tokenizers"]["image"]
    # the hash that made the run still describes the tokenizer, loaded from its copy or its own folder
    assert tokenizer_hash(mmtok.load(LEGACY / "shards" / entry["path"])) == entry["hash"]
    assert tokenizer_hash(mmtok.load(LEGACY / "image_l2")) == entry["hash"]
    assert len(shards) == 2
    for i in range(len(shards)):
        pixels = shards.decode(i)
        assert len(pixels) == 1 and pixels[0].shape[0] == 3 and float(pixels[0].abs().max()) <= 1.0
