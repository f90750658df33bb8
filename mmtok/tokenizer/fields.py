"""Config fields checked against the weights' tensor shapes before a model is built.

A config file (config.json, taming's yaml, DAC's stored kwargs) can ask for any size: `ch=4096` or
`n_codebooks = codebook_size = 10**6` used to build a 6-8 GB model and only then fail to load the (small)
weights. `build_checked` does it in the safe order: each family lists which field a tensor's dimension (or a
count of numbered blocks) must equal, checked on the weights already read; a field asking for more than
twice what the weights hold is a ValueError naming the field, its value and the tensor, before anything is
allocated. Only then is the model built and the family's strict key / shape load run, on sizes the weights
bound. (A meta-device skeleton
was tried and dropped: `normal_` / `norm` on meta tensors import seconds of torch's reference ops.)
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FieldCheck:
    """`field` (shown as written in the config) must equal `observed`, which the weights give as `evidence`."""

    field: str
    value: object
    observed: object
    evidence: str
    kind: str = "dim"  # "dim" (a tensor dimension) or "count" (numbered blocks: what a meta build iterates)


def dim(shapes: Mapping[str, object], keys: str | Iterable[str], axis: int) -> tuple[int, str] | None:
    """(size of `axis`, key) for the first of `keys` present in `shapes` (tensors or shape tuples)."""
    for key in [keys] if isinstance(keys, str) else keys:
        if key in shapes:
            shape = tuple(getattr(shapes[key], "shape", shapes[key]))
            if len(shape) > axis:
                return int(shape[axis]), key
    return None


def count(shapes: Mapping[str, object], prefix: str, *, require: str = "") -> int:
    """How many numbered children `prefix.{i}.` the keys hold (those with `require` after the index only)."""
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\." + re.escape(require))
    return len({m.group(1) for key in shapes if (m := pattern.match(key))})


def dim_check(field: str, value, shapes, keys, axis: int, scale: int = 1) -> FieldCheck | None:
    """`value * scale` against a tensor dimension; None when the tensor is absent (the strict load reports it)."""
    found = dim(shapes, keys, axis)
    if found is None:
        return None
    size, key = found
    return FieldCheck(field, value, size // scale if size % scale == 0 else size / scale,
                      f"{key} has size {size} in dimension {axis}" + (f" (= {scale} x field)" if scale != 1 else ""))


def count_check(field: str, value, shapes, prefix: str, *, require: str = "", offset: int = 0) -> FieldCheck | None:
    found = count(shapes, prefix, require=require)
    if found == 0:
        return None
    return FieldCheck(field, value, found - offset, f"the weights hold {found} blocks {prefix}.N", "count")


def _listed(checks: list[FieldCheck]) -> str:
    return "; ".join(f"{c.field}={c.value!r} but {c.evidence} (the weights say {c.observed!r})" for c in checks[:8])


SLACK = 2  # a field may exceed the weights' value by this factor and still be built (then refused by the strict load)


def build_checked(build: Callable[[], torch.nn.Module], checks: Iterable[FieldCheck | None],
                  origin: str) -> torch.nn.Module:
    """`build()` unless a sizing field asks for more than SLACK times what the weights hold: then a ValueError
    naming `origin` and every contradicted field, raised before anything is allocated. Smaller mismatches, and
    those no field covers, are left to the family's strict load (its key / shape listing), run on a model the
    weights bound."""
    checks = [c for c in checks if c is not None]
    wrong = [c for c in checks if c.value != c.observed]
    if any(not _within(c) for c in wrong):
        raise ValueError(f"{origin}: config fields the weights contradict: {_listed(wrong)}")
    return build()


def _within(check: FieldCheck) -> bool:
    """A contradicted field still safe to build: at most SLACK times what the weights hold (the strict load then
    lists every mismatching key and shape, the more useful message for a near miss)."""
    try:
        return float(check.value) <= SLACK * float(check.observed)
    except (TypeError, ValueError):
        return False
