"""Every layout's fixture through the one protocol: detected as its layout, a `Tokenizer` whose code_spec
describes what encode returns, and `mmtok convert` round trips (same class, config, tensors and codes)."""
from __future__ import annotations

import pathlib

import pytest
import torch

import mmtok
from mmtok.tokenizer import Tokenizer, detect_layout
from mmtok.tokenizer.cli import convert, same_tokenizer

DATA = pathlib.Path(__file__).parent / "data"
CASES = [  # (path, layout, loader options)
    (DATA / "checkpoints" / "taming_tiny" / "model.ckpt", "taming", {}),
    (DATA / "chameleon" / "original", "taming", {}),
    (DATA / "checkpoints" / "llamagen_tiny" / "model.pt", "llamagen", {}),
    (DATA / "checkpoints" / "dac_tiny" / "model.pth", "dac", {}),
    (DATA / "chameleon" / "hf", "chameleon", {}),
    (DATA / "janus" / "hf", "janus", {}),
    (DATA / "emu3" / "model", "emu3", {}),
    (DATA / "emu35_ibq" / "standalone", "emu35-ibq", {}),
    (DATA / "diffusers_vq" / "group_tiny_bin", "diffusers-vq", {}),
    (DATA / "var" / "vae" / "vae_ch32v12z5.pth", "var", {}),
    (DATA / "legacy_folders" / "audio_bestrq", "mmtok", {}),
]


def _input(spec, g):
    if spec.modality == "audio":
        return (0.1 * torch.randn(spec.sample_rate // 10, generator=g), spec.sample_rate)
    f = spec.spatial_downsample
    if spec.axes == ("token",):
        h = w = spec.image_size
    else:
        h, w = 3 * f, 2 * f
    if spec.modality == "video":
        return (torch.rand(1, spec.temporal_downsample, 3, h, w, generator=g) * 2 - 1,)
    return (torch.rand(1, 3, h, w, generator=g) * 2 - 1,)


@pytest.mark.parametrize("path,layout,options", CASES, ids=[f"{c[1]}:{c[0].name}" for c in CASES])
def test_fixture_follows_protocol_and_converts(path, layout, options, tmp_path, seed):
    if not path.exists():
        pytest.skip(f"fixture {path} not in this checkout")
    assert detect_layout(path).name == layout
    tok = mmtok.load(path, **options)
    assert isinstance(tok, Tokenizer)
    spec = tok.code_spec
    g = torch.Generator().manual_seed(seed)
    args = _input(spec, g)
    with torch.no_grad():
        codes = tok.encode(*args)
    checked = spec.check_codes(codes)  # shape (batch, *axes), every code in range
    if spec.modality != "audio":
        assert checked.shape[0] == 1
    convert(path, tmp_path / "converted", **options)
    again = mmtok.load(tmp_path / "converted")
    assert same_tokenizer(tok, again) == []
    with torch.no_grad():
        assert torch.equal(again.encode(*args), codes)
