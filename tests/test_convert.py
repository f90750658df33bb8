"""`mmtok convert`: every loadable layout -> mmtok's own folder, giving identical codes and tensors."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch

import mmtok
from mmtok.__main__ import main
from mmtok.tokenizer.cli import convert, parse_options, same_tokenizer

DATA = pathlib.Path(__file__).parent / "data"
CKPT = DATA / "checkpoints"


def _image_codes(tok, io):
    return tok.encode(torch.from_numpy(io["x"]))


@pytest.mark.parametrize("src,options", [
    (CKPT / "taming_tiny" / "model.ckpt", {}),
    (CKPT / "llamagen_tiny" / "model.pt", {"config_path": str(CKPT / "llamagen_tiny" / "config.json")}),
])
def test_convert_image_checkpoints(tmp_path, src, options):
    io = np.load(src.parent / "io.npz")
    original = mmtok.load(src, **options)
    convert(src, tmp_path / "out", **options)
    converted = mmtok.load(tmp_path / "out")
    assert same_tokenizer(original, converted) == []
    codes = _image_codes(converted, io)
    assert torch.equal(codes, torch.from_numpy(io["indices"]))
    np.testing.assert_allclose(converted.decode(codes, clamp=False).numpy(), io["x_dec_from_indices"],
                               rtol=1e-4, atol=1e-4)
    # converting the converted folder again changes no byte
    convert(tmp_path / "out", tmp_path / "again")
    for name in ("config.json", "model.safetensors"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()


def test_convert_dac_through_the_cli(tmp_path, capsys):
    io = np.load(CKPT / "dac_tiny" / "io.npz")
    assert main(["convert", str(CKPT / "dac_tiny" / "model.pth"), str(tmp_path / "codec")]) == 0
    assert "AudioCodec, audio codes ('codebook', 't'), codebooks [64, 64, 64, 64]" in capsys.readouterr().out
    codec = mmtok.load(tmp_path / "codec")
    with torch.no_grad():
        codes = codec.encode(torch.from_numpy(io["x"][0, 0]), 16000)
    assert torch.equal(codes, torch.from_numpy(io["codes"][0]))
    assert json.loads((tmp_path / "codec" / "config.json").read_text())["format"] == "mmtok.AudioCodec"


def test_convert_refuses_and_reports(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    assert main(["convert", str(CKPT / "taming_tiny" / "model.ckpt"), str(tmp_path / "full")]) == 1
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert (tmp_path / "full" / "keep.txt").exists()
    assert main(["convert", str(CKPT / "taming_tiny" / "model.ckpt"), str(tmp_path / "full"), "--overwrite"]) == 0
    assert not (tmp_path / "full" / "keep.txt").exists()
    assert main(["convert", "org/some-model", str(tmp_path / "x")]) == 1
    assert "Hub id" in capsys.readouterr().err
    assert main(["convert", str(CKPT / "taming_tiny" / "config.yaml"), str(tmp_path / "y")]) == 1
    assert "no known tokenizer layout" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()
    assert main(["convert", str(CKPT / "llamagen_tiny" / "model.pt"), str(tmp_path / "z"), "--format", "llamagen",
                 "--option", f"config_path={CKPT / 'llamagen_tiny' / 'config.json'}", "--option", "image_size=64"]) == 0
    assert parse_options(["a=1", "b=true", "c=x.yaml", "d=[1, 2]"]) == {"a": 1, "b": True, "c": "x.yaml", "d": [1, 2]}
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_options(["novalue"])
