"""Tensors of a TorchScript archive (`torch.jit.save` files such as Cosmos' `encoder.jit`), read as weights.

`torch.jit.load` would rebuild and run the archive's TorchScript program. mmtok only needs the tensors, so this
reads the archive's `data.pkl` with a restricted unpickler: every `__torch__.*` class becomes an inert record of
its attributes, tensors are rebuilt from the archive's storages, and any other global is refused. The result is
the module tree's tensors by dotted attribute path (parameters and buffers, persistent or not), e.g.
`encoder.down.0.block.0.conv1.weight`, plus `scalars` for the int / float / bool / str attributes.
"""
from __future__ import annotations

import io
import os
import pickle
import zipfile

import torch

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


class ScriptRecord:
    """An inert stand-in for one TorchScript object: its pickled attributes, nothing callable."""

    def __init__(self, *args):
        self.attributes: dict = {}

    def __setstate__(self, state):
        self.attributes = dict(state) if isinstance(state, dict) else {"__state__": state}


class _StorageType:
    def __init__(self, name: str):
        self.dtype = _STORAGE_DTYPES[name]


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, *_):
    return torch.as_strided(storage, tuple(size), tuple(stride), offset)


def _rebuild_parameter(data, requires_grad=False, hooks=None, *_):
    return data


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, origin: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.origin = archive, prefix, origin
        self.storages: dict[str, torch.Tensor] = {}

    def find_class(self, module, name):
        if module.startswith("__torch__"):
            return type(name, (ScriptRecord,), {})
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if (module, name) == ("collections", "OrderedDict"):
            import collections

            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise ValueError(f"{self.origin}: refusing to unpickle {module}.{name} (not a tensor or TorchScript "
                         f"object; mmtok reads weights only)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise ValueError(f"{self.origin}: unexpected persistent id {pid!r}")
        kind, key, numel = pid[1], str(pid[2]), int(pid[4])
        if key not in self.storages:
            try:
                raw = self.archive.read(f"{self.prefix}data/{key}")
            except KeyError:
                raise ValueError(f"{self.origin}: storage {key} missing from the archive") from None
            dtype = kind.dtype if isinstance(kind, _StorageType) else torch.uint8
            tensor = torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            if tensor.numel() < numel:
                raise ValueError(f"{self.origin}: storage {key} is truncated ({tensor.numel()} of {numel} elements)")
            self.storages[key] = tensor
        return self.storages[key]


def _walk(obj, path: str, tensors: dict, scalars: dict, depth: int = 0) -> None:
    if depth > 64:
        raise ValueError("TorchScript module tree is deeper than 64 levels")
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.clone()
    elif isinstance(obj, ScriptRecord):
        for name, value in obj.attributes.items():
            if name.startswith("_is_full_backward_hook") or name == "training":
                continue
            _walk(value, f"{path}.{name}" if path else str(name), tensors, scalars, depth + 1)
    elif isinstance(obj, (bool, int, float, str)):
        scalars[path] = obj


def read_torchscript(path) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """(tensors by dotted path, scalar attributes by dotted path) of a TorchScript archive; ValueError naming the
    file for anything that is not one, truncated, or holds non-tensor globals. No TorchScript code runs."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"TorchScript file not found: {path}")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"{path}: not a TorchScript archive ({exc})") from None
    with archive:
        names = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(names) != 1:
            raise ValueError(f"{path}: not a TorchScript archive (no single <name>/data.pkl)")
        prefix = names[0][: -len("data.pkl")]
        try:
            data = archive.read(names[0])
            root = _Unpickler(data, archive, prefix, path).load()
        except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path}: unreadable TorchScript data.pkl ({type(exc).__name__}: {exc})") from None
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, object] = {}
    _walk(root, "", tensors, scalars)
    return tensors, scalars
