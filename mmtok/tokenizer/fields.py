"""Config fields checked against the weights' tensor shapes before a model is built.

A config file (config.json, taming's yaml, DAC's stored kwargs) can ask for any size: `ch=4096` or
`n_codebooks = codebook_size = 10**6` used to build a 6-8 GB model and only then fail to load the (small)
weights. `build_checked` does it in the safe order: each family lists which field a tensor's dimension (or a
count of numbered blocks) must equal; a count field asking for more blocks than the weights hold is refused
at once (naming it), then the model is built on the meta device (no memory, no time) and the family's strict
key / shape check runs against it; a failure there is the usual message plus the fields the weights
contradict. Only then is the real model built, and it cannot be larger than its weights.
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


def build_checked(build: Callable[[], torch.nn.Module], checks: Iterable[FieldCheck | None],
                  validate: Callable[[Mapping[str, torch.Tensor]], None], origin: str) -> torch.nn.Module:
    """`build()` once the config is known to fit the weights; ValueError naming `origin` and the fields first.

    validate(expected): the family's strict check of its weights against the model's (meta) state dict."""
    checks = [c for c in checks if c is not None]
    too_many = [c for c in checks if c.kind == "count" and isinstance(c.observed, int) and c.value > c.observed]
    if too_many:
        raise ValueError(f"{origin}: the config asks for more blocks than the weights hold: {_listed(too_many)}")
    with torch.device("meta"):
        skeleton = build()
    try:
        validate(skeleton.state_dict())
    except ValueError as exc:
        wrong = [c for c in checks if c.value != c.observed]
        if wrong:
            raise ValueError(f"{origin}: config fields the weights contradict: {_listed(wrong)}. ({exc})") from None
        raise
    return build()
