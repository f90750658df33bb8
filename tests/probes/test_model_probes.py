"""Hostile and unlucky inputs to the models, decoders and readers (issue 23), one test per defect id.

Each test replays the probe that found the defect and asserts the promised behaviour: a clear error naming
the file / argument / field before work starts, or the correct result; no code ever runs from a checkpoint;
decoders of untrusted ids allocate memory bounded by their input. The table in docs/robustness.md
("Models and decoders") lists the promise, the cases and these tests.
"""
from __future__ import annotations

import os
import pickle
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))


# ---------------------------------------------------------------------------------------------------- 2
class _Payload:
    """Unpickling this writes a marker file: the proof that a loader ran code from a checkpoint."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def _hostile_files(tmp_path):
    """The same payload as a torch.save zip, a raw pickle and inside a plausible state_dict layout."""
    marker = str(tmp_path / "PWNED")
    files = []
    for name, obj in [("zip.pt", _Payload(marker)), ("state.ckpt", {"state_dict": {"w": _Payload(marker)}}),
                      ("dac.pth", {"state_dict": {}, "metadata": {"kwargs": _Payload(marker)}})]:
        path = tmp_path / name
        torch.save(obj, path)
        files.append(str(path))
    raw = tmp_path / "raw.bin"
    raw.write_bytes(pickle.dumps(_Payload(marker)))
    files.append(str(raw))
    return marker, files


def test_2_no_loader_runs_code_from_a_checkpoint(tmp_path, seed):
    """Training --resume / --init and every inference loader refuse a pickle that would run code, naming the
    file, and the code never runs."""
    from test_train_loop import smooth_photos, tiny_config

    from mmtok.audio.codec.checkpoint import read_dac_file
    from mmtok.image.checkpoints import read_torch_checkpoint
    from mmtok.tokenizer.weights import read_torch_pickle
    from mmtok.train.checkpoint import load_checkpoint
    from mmtok.train.perceptual import LPIPS
    from mmtok.train.trainer import VQGANTrainer

    marker, files = _hostile_files(tmp_path)
    trainer = VQGANTrainer(tiny_config(tmp_path / "run", steps=1, seed=seed % 1000),
                           smooth_photos(1, torch.Generator().manual_seed(seed)), progress=False)
    loaders = [load_checkpoint, trainer.resume, trainer.init_weights, read_torch_checkpoint, read_torch_pickle,
               read_dac_file, LPIPS.from_file]
    for path in files:
        for loader in loaders:
            with pytest.raises(ValueError) as info:
                loader(path)
            assert path in str(info.value), (loader, str(info.value))
            assert not os.path.exists(marker), f"{loader} ran code from {path}"
    # a checkpoint directory whose latest.safetensors is really a pickle is refused the same way
    directory = tmp_path / "ckpts"
    directory.mkdir()
    os.link(files[0], directory / "latest.safetensors")
    with pytest.raises(ValueError, match="not an mmtok training checkpoint"):
        trainer.resume(str(directory))
    assert not os.path.exists(marker)


def test_2_train_state_round_trips_without_pickle(tmp_path, seed):
    """The checkpoint is plain safetensors + JSON: it opens with safetensors alone and restores every piece of
    state (optimizer int keys, tuples, NumPy's uint32 key, Python's RNG tuple) exactly."""
    import random

    import numpy as np
    from safetensors import safe_open

    from mmtok.train.checkpoint import load_checkpoint, save_checkpoint

    random.seed(seed)
    np.random.seed(seed % 2**32)
    state = {"config": {"lr": 1e-4, "betas": (0.5, 0.9)}, "step": 7, "model": {"w": torch.randn(3, 2)},
             "disc": {}, "opt_g": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2)}},
                                   "param_groups": [{"params": [0], "betas": (0.5, 0.9), "fused": None}]},
             "opt_d": {"state": {}, "param_groups": []},
             "ranks": [{"rng": {"python": random.getstate(), "numpy": np.random.get_state(),
                                "torch": torch.get_rng_state()}}]}
    path = str(tmp_path / "step_0000007.safetensors")
    save_checkpoint(path, state)
    with safe_open(path, framework="pt") as f:
        assert "mmtok.train_state" in f.metadata()
    back = load_checkpoint(str(tmp_path))  # the directory's latest.safetensors
    assert back["opt_g"]["state"][0]["step"].item() == 3.0 and back["config"]["betas"] == (0.5, 0.9)
    assert torch.equal(back["model"]["w"], state["model"]["w"])
    assert back["ranks"][0]["rng"]["python"] == random.getstate()
    np_state = back["ranks"][0]["rng"]["numpy"]
    assert np_state[1].dtype == np.uint32 and (np_state[1] == np.random.get_state()[1]).all()
    random.setstate(back["ranks"][0]["rng"]["python"])
    np.random.set_state(np_state)
