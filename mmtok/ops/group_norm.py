"""Channels-last GroupNorm (+ swish) for float32 CPU inference: the compiled two-pass kernel of mmtok._C.

`group_norm_channels_last` returns None whenever the kernel does not apply (no compiled extension or an old one
without the op, a GPU or non-fp32 tensor, a layout other than channels-last, autograd recording), so callers keep
their own path for those cases. The kernel accumulates the statistics in double and matches `F.group_norm` (then
`F.silu`) to float32 rounding; see csrc/group_norm_cpu.cpp. It is the compiled library's op `mmtok::group_norm_cl`
with a fake implementation registered here, so `torch.compile` traces it without a graph break and runs the same
kernel.
"""
from __future__ import annotations

import torch

from ._extension import has_cpu_kernel

_AVAILABLE: bool | None = None  # a plain global, read as a constant under torch.compile


def kernel_available() -> bool:
    """Whether the loaded mmtok._C has the channels-last GroupNorm kernel (older builds do not)."""
    global _AVAILABLE
    if _AVAILABLE is None:
        _AVAILABLE = has_cpu_kernel() and hasattr(torch.ops.mmtok, "group_norm_cl")
    return _AVAILABLE


def _fake(x, weight, bias, groups, eps, swish):
    torch._check_value(x.dim() == 4, lambda: f"group_norm_cl: x must be (N, C, H, W), got rank {x.dim()}")
    torch._check_value(weight.numel() == x.shape[1] and bias.numel() == x.shape[1],
                       lambda: "group_norm_cl: weight and bias must have one value per channel")
    return torch.empty_like(x, memory_format=torch.channels_last)


if kernel_available():
    torch.library.register_fake("mmtok::group_norm_cl", _fake)


def group_norm_channels_last(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float,
                             swish: bool = False) -> torch.Tensor | None:
    """GroupNorm of a channels-last (N, C, H, W) float32 CPU tensor (then swish when asked), or None."""
    if (x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 4 or x.is_contiguous()
            or not x.is_contiguous(memory_format=torch.channels_last)):
        return None
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or bias.requires_grad):
        return None
    if not kernel_available():
        return None
    return torch.ops.mmtok.group_norm_cl.default(x, weight.detach(), bias.detach(), int(groups), float(eps), bool(swish))
