"""Shared pieces of the codec tests that compare against upstream fixtures (SpeechTokenizer, SNAC, Mimi):
the recorded outputs, the margin rule for codes, and edited copies of a release folder."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import torch

from mmtok.tokenizer.weights import read_safetensors, write_safetensors

SURE = 1e-5  # float64 best-vs-second squared-distance gap above which a code cannot flip on fp32 rounding


def npz_tensors(path: pathlib.Path) -> dict[str, torch.Tensor]:
    """Every array of an outputs.npz as a tensor."""
    with np.load(path) as f:
        return {k: torch.from_numpy(f[k]) for k in f.files}


def assert_codes(codes: torch.Tensor, expected: torch.Tensor, margin: torch.Tensor) -> None:
    """(levels, frames) codes equal wherever every level's margin is safe; elsewhere a flip is allowed only at an
    unsure frame."""
    assert codes.shape == expected.shape
    sure = (margin > SURE).all(dim=0)
    assert torch.equal(codes[:, sure], expected[:, sure])
    assert int((codes != expected).any(dim=0).sum()) <= int((~sure).sum())


def release_copy(tmp_path: pathlib.Path, source: pathlib.Path, weights: str, edit_state=None, edit_config=None
                 ) -> pathlib.Path:
    """A fresh copy of the release folder `source` (config.json + the weight file `weights`, a safetensors file or
    a torch pickle) under tmp_path, with edit_state(state) -> state and edit_config(config) applied."""
    folder = tmp_path / f"{source.name}_{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    safetensors = weights.endswith(".safetensors")
    state = read_safetensors(source / weights) if safetensors else torch.load(source / weights, weights_only=True)
    config = json.loads((source / "config.json").read_text())
    if edit_state:
        state = edit_state(state)
    if edit_config:
        edit_config(config)
    if safetensors:
        write_safetensors(folder / weights, state)
    else:
        torch.save(state, folder / weights)
    (folder / "config.json").write_text(json.dumps(config))
    return folder
