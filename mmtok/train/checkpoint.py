"""Training checkpoints: everything needed to continue a run bit for bit, in one `torch.save` file.

Model, discriminator, both optimizers, the step, the data stream's generator and the global RNG states
(torch, Python, NumPy: k-means init and dead-code re-seeding draw from torch's). Written to a temporary
file and renamed, so a run killed mid-save never leaves a truncated `latest.pt`.
"""
from __future__ import annotations

import glob
import os
import random

import numpy as np
import torch


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])


def save_checkpoint(path: str, state: dict, keep: int = 0) -> None:
    """Atomically write `state` to `path` and point `latest.pt` next to it at it; keep the newest `keep` step files."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)
    latest = os.path.join(directory, "latest.pt")
    if os.path.abspath(path) != latest:
        tmp_link = latest + ".tmp"
        if os.path.lexists(tmp_link):
            os.remove(tmp_link)
        os.symlink(os.path.basename(path), tmp_link)
        os.replace(tmp_link, latest)
    if keep > 0:
        steps = sorted(glob.glob(os.path.join(directory, "step_*.pt")))
        for old in steps[:-keep]:
            os.remove(old)


def load_checkpoint(path: str) -> dict:
    if os.path.isdir(path):
        path = os.path.join(path, "latest.pt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable training checkpoint ({exc})") from exc
