"""Training checkpoints: everything needed to continue a run bit for bit, in one safetensors file.

Model, discriminator, both optimizers, the step, the data stream's generator and the global RNG states
(torch, Python, NumPy: k-means init and dead-code re-seeding draw from torch's). Every tensor (and NumPy array)
is a safetensors entry; the rest of the state is JSON in the file's metadata under `mmtok.train_state`, with
tensors referenced by name. Reading one therefore never unpickles anything: a hostile file can fail to load,
but it cannot run code (`torch.save` checkpoints are refused for that reason). Written to a temporary file and
renamed, so a run killed mid-save never leaves a truncated `latest.safetensors`.
"""
from __future__ import annotations

import glob
import json
import os
import random

import numpy as np
import torch

LATEST = "latest.safetensors"
SUFFIX = ".safetensors"
STATE_KEY = "mmtok.train_state"
FORMAT = "mmtok-train-checkpoint/1"


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])


# ---- nested state <-> (JSON tree, flat tensors) --------------------------------------------------------------
def _encode(obj, tensors: dict):
    """`obj` as a JSON-able tree; tensors and arrays move to `tensors` and are referenced by name."""
    if isinstance(obj, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = obj.detach().cpu().clone().contiguous()  # clone: safetensors refuses shared storage
        return {"__tensor__": name}
    if isinstance(obj, np.ndarray):
        name = f"t{len(tensors)}"
        stored = obj.astype(np.int64) if obj.dtype.kind in "iub" else obj.astype(np.float64)
        tensors[name] = torch.from_numpy(np.ascontiguousarray(stored))
        return {"__ndarray__": name, "dtype": obj.dtype.str}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors) for k, v in obj.items()}
        return {"__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"training state holds a {type(obj).__name__}, which a checkpoint cannot store")


def _decode(node, tensors: dict, path: str):
    if isinstance(node, list):
        return [_decode(v, tensors, path) for v in node]
    if not isinstance(node, dict):
        return node
    if "__tensor__" in node or "__ndarray__" in node:
        name = node.get("__tensor__", node.get("__ndarray__"))
        if name not in tensors:
            raise ValueError(f"{path}: training state refers to tensor {name!r}, which the file does not hold")
        if "__tensor__" in node:
            return tensors[name]
        return tensors[name].numpy().astype(np.dtype(node["dtype"]))
    if "__tuple__" in node:
        return tuple(_decode(v, tensors, path) for v in node["__tuple__"])
    if "__items__" in node:
        return {_decode(k, tensors, path): _decode(v, tensors, path) for k, v in node["__items__"]}
    return {k: _decode(v, tensors, path) for k, v in node.items()}


# ---- files --------------------------------------------------------------------------------------------------
def save_checkpoint(path: str, state: dict, keep: int = 0) -> None:
    """Atomically write `state` to `path` and point `latest.safetensors` next to it at it; keep the newest
    `keep` step files."""
    from safetensors.torch import save_file

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tensors: dict = {}
    tree = _encode(state, tensors)
    tmp = path + ".tmp"
    save_file(tensors, tmp, metadata={"format": FORMAT, STATE_KEY: json.dumps(tree, allow_nan=True)})
    os.replace(tmp, path)
    latest = os.path.join(directory, LATEST)
    if os.path.abspath(path) != latest:
        tmp_link = latest + ".tmp"
        if os.path.lexists(tmp_link):
            os.remove(tmp_link)
        os.symlink(os.path.basename(path), tmp_link)
        os.replace(tmp_link, latest)
    if keep > 0:
        steps = sorted(glob.glob(os.path.join(directory, "step_*" + SUFFIX)))
        for old in steps[:-keep]:
            os.remove(old)


def is_checkpoint_dir(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, LATEST))


def load_checkpoint(path: str) -> dict:
    """The state `save_checkpoint` wrote (a file, or a directory holding `latest.safetensors`). ValueError naming
    the file for anything else, a `torch.save` pickle included: nothing in the file is ever executed."""
    from safetensors import SafetensorError, safe_open

    path = str(path)
    if os.path.isdir(path):
        path = os.path.join(path, LATEST)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT or STATE_KEY not in metadata:
                raise ValueError("no mmtok training state in its metadata")
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        tree = json.loads(metadata[STATE_KEY])
    except (SafetensorError, OSError, ValueError) as exc:  # a pickle, a foreign file, truncation, bad JSON
        raise ValueError(f"{path}: not an mmtok training checkpoint (a safetensors file written by train-vqgan;"
                         f" torch.save pickles are never loaded, since unpickling can run code): {exc}") from exc
    state = _decode(tree, tensors, path)
    missing = [k for k in ("config", "step", "model", "disc", "opt_g", "opt_d", "ranks") if k not in state]
    if missing:
        raise ValueError(f"{path}: training checkpoint lacks {missing}")
    return state
