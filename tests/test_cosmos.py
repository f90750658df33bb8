"""NVIDIA Cosmos discrete image tokenizers from their TorchScript release files, against Cosmos-Tokenizer's own
code (fixtures: scripts/fixtures/make_cosmos_fixtures.py); the TorchScript reader runs no archive code."""
from __future__ import annotations

import pathlib
import pickle
import shutil
import zipfile

import numpy as np
import pytest
import torch

import mmtok.tokenizer.registry as registry
from mmtok.image.cosmos import CosmosImageTokenizer, patch, unpatch
from mmtok.tokenizer.torchscript import read_torchscript

DATA = pathlib.Path(__file__).parent / "data" / "cosmos"


@pytest.fixture(scope="module")
def outputs():
    with np.load(DATA / "outputs.npz") as f:
        return {k: torch.from_numpy(f[k]) for k in f.files}


@pytest.mark.parametrize("name", ["haar", "rearrange"])
def test_codes_and_pixels_match_cosmos(outputs, name):
    assert registry.detect_layout(DATA / name).name == "cosmos"
    tok = registry.load(DATA / name)
    assert isinstance(tok, CosmosImageTokenizer)
    codes = tok.encode(outputs[f"{name}/images"])
    sure = outputs[f"{name}/margins"] > 1e-4
    assert sure.float().mean() > 0.95
    assert torch.equal(codes[sure], outputs[f"{name}/indices"].long()[sure])
    # within 1e-4 of the output's range (the random-weight decoders of the fixtures reach |x| ~ 5)
    reference = outputs[f"{name}/decoded"]
    torch.testing.assert_close(tok.decode(outputs[f"{name}/indices"], clamp=False), reference,
                               atol=1e-4 * max(1.0, float(reference.abs().max())), rtol=0)
    assert tok.code_spec.downsample == (8, 8)


def test_patching_round_trips(seed):
    x = torch.randn(2, 3, 16, 8, dtype=torch.float64)
    for size, method in ((2, "haar"), (4, "haar"), (4, "rearrange")):
        torch.testing.assert_close(unpatch(patch(x, size, method), size, method), x)


def test_round_trip_and_refusals(outputs, tmp_path):
    tok = registry.load(DATA / "haar")
    tok.save_pretrained(tmp_path / "c")
    again = registry.load(tmp_path / "c")
    x = outputs["haar/images"]
    assert torch.equal(again.encode(x), tok.encode(x))
    with pytest.raises(ValueError, match="outside 0..59"):
        tok.decode(torch.full((1, 2, 3), 60))
    enc_only = tmp_path / "enc_only"
    enc_only.mkdir()
    shutil.copy(DATA / "haar" / "encoder.jit", enc_only)
    partial = registry.load(enc_only)
    assert torch.equal(partial.encode(x), tok.encode(x)) and not partial.code_spec.decodable
    with pytest.raises(ValueError, match="decoder.jit"):
        partial.decode(tok.encode(x))


def test_torchscript_reader_refuses_foreign_globals(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran code",))

    path = tmp_path / "evil.jit"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps(Evil()))
    with pytest.raises(ValueError, match="refusing to unpickle builtins.print"):
        read_torchscript(path)
    (tmp_path / "junk.jit").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a TorchScript archive"):
        read_torchscript(tmp_path / "junk.jit")
    truncated = tmp_path / "t" / "encoder.jit"
    truncated.parent.mkdir()
    data = (DATA / "haar" / "encoder.jit").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError):
        registry.load(truncated.parent)
