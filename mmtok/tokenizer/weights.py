"""Reading published weight files and loading them into a module strictly.

Supported files: `*.safetensors`; torch pickles (`pytorch_model.bin`, `diffusion_pytorch_model.bin`, `.pt`,
`.pth`, `.ckpt`, `.th`) read with `torch.load(weights_only=True)`, so no code in a checkpoint ever runs; and
sharded checkpoints described by an index JSON (`model.safetensors.index.json`, `pytorch_model.bin.index.json`,
...: `{"weight_map": {key: shard file}}`). Every error names the file.

Loading is strict: a half-loaded tokenizer produces plausible garbage, so every missing, unexpected or wrongly
shaped key is an error that lists them (`check_state_dict`).
"""
from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Iterable, Mapping

import torch

MAX_LISTED = 12  # keys listed per kind of mismatch in an error message
TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".th")
# the weight file names that Hugging Face `transformers` / `diffusers` folders use, preferred first
HF_WEIGHT_NAMES = ("model.safetensors", "diffusion_pytorch_model.safetensors", "pytorch_model.bin",
                   "diffusion_pytorch_model.bin")


def listed(keys: Iterable[str]) -> str:
    """A short, sorted listing of keys for an error message."""
    keys = sorted(keys)
    more = f", ... and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else ""
    return ", ".join(keys[:MAX_LISTED]) + more


def existing_path(path, what: str) -> pathlib.Path:
    path = pathlib.Path(os.fspath(path))
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def read_torch_pickle(path) -> object:
    """torch.load(weights_only=True) on CPU: a checkpoint that needs arbitrary code to unpickle is refused."""
    path = existing_path(path, "checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip, EOF and weights_only errors all mean "not a checkpoint we can read"
        raise ValueError(f"{path}: not a readable torch checkpoint ({type(exc).__name__}: {exc})") from None


_SAFETENSORS_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                       torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
                       torch.uint8: "U8", torch.bool: "BOOL"}


def safetensors_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    """A safetensors file's bytes, deterministically: tensors in name order, metadata keys sorted (the
    `safetensors` writer orders metadata by a hash map, so the same tensors gave different bytes per process)."""
    header: dict[str, object] = {}
    if metadata:
        bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise ValueError(f"safetensors metadata must map str to str; bad keys: {listed(map(str, bad))}")
        header["__metadata__"] = {k: metadata[k] for k in sorted(metadata)}
    blobs, offset = [], 0
    for name in sorted(tensors):
        tensor = tensors[name]
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{name}: not a tensor ({type(tensor).__name__})")
        if tensor.dtype not in _SAFETENSORS_DTYPES:
            raise ValueError(f"{name}: dtype {tensor.dtype} cannot be written to safetensors")
        tensor = tensor.detach().to("cpu").contiguous()
        blob = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        header[name] = {"dtype": _SAFETENSORS_DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(blobs)


def write_safetensors(path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> None:
    """Write `safetensors_bytes` to `path` atomically (a temporary file beside it, then renamed)."""
    path = pathlib.Path(os.fspath(path))
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_bytes(safetensors_bytes(tensors, metadata))
    os.replace(temporary, path)


def read_safetensors(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = existing_path(path, "weights file")
    try:
        return load_file(str(path))
    except Exception as exc:  # SafetensorError, OSError, ...: name the file, keep one exception type
        raise ValueError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None


def _tensors(obj, path) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: entries that are not tensors: {listed(bad)}")
    return {str(k): v for k, v in obj.items()}


def read_sharded(index_path) -> dict[str, torch.Tensor]:
    """A sharded checkpoint: the index JSON's `weight_map` names the shard file (beside it) of every key."""
    index_path = existing_path(index_path, "checkpoint index")
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{index_path}: not a checkpoint index with a 'weight_map' ({exc})") from None
    if not isinstance(weight_map, dict):
        raise ValueError(f"{index_path}: 'weight_map' must map tensor names to shard files")
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = index_path.parent / str(shard)
        if pathlib.Path(str(shard)).is_absolute() or ".." in pathlib.Path(str(shard)).parts:
            raise ValueError(f"{index_path}: shard {shard!r} is not a file beside the index")
        state.update(read_state_dict(shard_path))
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise ValueError(f"{index_path}: keys listed in the index but absent from their shards: {listed(missing)}")
    return state


def read_prefixed(path, prefix: str | None) -> dict[str, torch.Tensor]:
    """The tensors under `prefix` (prefix removed) of a weight file or sharded index, reading only the shards
    that hold such keys: a sub-model (a VQ tokenizer inside a full multimodal LLM checkpoint) without loading
    the language model. `prefix=None` reads everything."""
    path = existing_path(path, "weights file")
    if prefix is None:
        return read_state_dict(path)
    if path.name.endswith(".index.json"):
        try:
            weight_map = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a checkpoint index with a 'weight_map' ({exc})") from None
        if not isinstance(weight_map, dict):
            raise ValueError(f"{path}: 'weight_map' must map tensor names to shard files")
        wanted = sorted(k for k in weight_map if str(k).startswith(prefix))
        if not wanted:
            raise ValueError(f"{path}: no '{prefix}*' keys in the index")
        state: dict[str, torch.Tensor] = {}
        for shard in sorted({str(weight_map[k]) for k in wanted}):
            if pathlib.Path(shard).is_absolute() or ".." in pathlib.Path(shard).parts:
                raise ValueError(f"{path}: shard {shard!r} is not a file beside the index")
            state.update(strip_prefix(read_state_dict(path.parent / shard), prefix))
        missing = [k for k in wanted if k[len(prefix):] not in state]
        if missing:
            raise ValueError(f"{path}: keys listed in the index but absent from their shards: {listed(missing)}")
        return state
    inner = strip_prefix(read_state_dict(path), prefix)
    if not inner:
        raise ValueError(f"{path}: no '{prefix}*' keys")
    return inner


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """The tensors of one weight file (or sharded index), by file name; ValueError naming the file otherwise."""
    path = existing_path(path, "weights file")
    name = path.name
    if name.endswith(".index.json"):
        return read_sharded(path)
    if name.endswith(".safetensors"):
        return read_safetensors(path)
    if name.endswith(TORCH_SUFFIXES):
        return _tensors(read_torch_pickle(path), path)
    raise ValueError(f"{path}: unknown weight file type (expected .safetensors, {', '.join(TORCH_SUFFIXES)} "
                     f"or a sharded *.index.json)")


def find_weights(directory, names: Iterable[str] = HF_WEIGHT_NAMES) -> pathlib.Path:
    """The weight file of a downloaded folder: the first of `names` present, or its sharded index."""
    directory = existing_path(directory, "model folder")
    names = tuple(names)
    for name in names:
        for candidate in (directory / name, directory / f"{name}.index.json"):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"{directory}: no weights found (looked for {', '.join(names)} and their .index.json)")


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under `prefix` (e.g. 'model.vqmodel.' inside a full Chameleon checkpoint), prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def check_state_dict(expected: Mapping[str, torch.Tensor], state: Mapping[str, object], origin: str, *,
                     optional: Iterable[str] = (), ignored: Iterable[str] = ()) -> None:
    """ValueError naming `origin` and listing every missing, unexpected, non-tensor or wrongly shaped key.

    `optional` keys of `expected` may be absent (they keep the module's value); `ignored` keys of `state` are
    known training-only entries that are dropped silently."""
    optional, ignored = set(optional), set(ignored)
    present = set(state) - ignored
    missing = sorted(set(expected) - present - optional)
    unexpected = sorted(present - set(expected))
    problems = []
    if missing:
        problems.append(f"missing keys: {listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {listed(unexpected)}")
    wrong = []
    for key in sorted(set(expected) & present):
        value = state[key]
        if not isinstance(value, torch.Tensor):
            wrong.append(f"{key} (not a tensor: {type(value).__name__})")
        elif tuple(value.shape) != tuple(expected[key].shape):
            wrong.append(f"{key} (weights {list(value.shape)}, model expects {list(expected[key].shape)})")
    if wrong:
        problems.append(f"wrong shapes: {listed(wrong)}")
    if problems:
        raise ValueError(f"{origin}: the weights do not match the configured model; " + "; ".join(problems))


def load_exactly(module: torch.nn.Module, state: Mapping[str, torch.Tensor], origin: str, *,
                 optional: Iterable[str] = (), ignored: Iterable[str] = ()) -> None:
    """`check_state_dict`, then copy the weights (floating point ones as fp32) into `module`."""
    expected = module.state_dict()
    ignored = set(ignored)
    check_state_dict(expected, state, origin, optional=optional, ignored=ignored)
    # ignored entries are dropped even where the module has the same name (a training-only counter such as
    # BatchNorm's num_batches_tracked keeps the module's value, so every source loads the same tokenizer)
    merged = {k: state[k] if k in state and k not in ignored else v for k, v in expected.items()}
    module.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in merged.items()}, strict=True)
