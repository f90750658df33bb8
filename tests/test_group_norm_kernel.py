"""The channels-last GroupNorm (+ swish) CPU kernel against a float64 reference on fresh random inputs."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmtok.ops import group_norm_channels_last
from mmtok.ops.group_norm import kernel_available

pytestmark = pytest.mark.skipif(not kernel_available(), reason="mmtok._C built without the group_norm_cl kernel")


def _reference(x, weight, bias, groups, eps, swish):
    y = F.group_norm(x.double().contiguous(), groups, weight.double(), bias.double(), eps)
    return F.silu(y) if swish else y


@pytest.mark.parametrize("shape,groups", [((2, 64, 33, 19), 32), ((1, 96, 40, 72), 32), ((3, 32, 2, 1), 8),
                                          ((1, 128, 45, 45), 32)])
@pytest.mark.parametrize("swish", [False, True])
def test_matches_float64(seed, shape, groups, swish):
    x = (torch.randn(shape) * 3 + torch.randn(1, shape[1], 1, 1) * 20).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(shape[1]), torch.randn(shape[1])
    with torch.inference_mode():
        y = group_norm_channels_last(x, weight, bias, groups, 1e-6, swish)
    assert y is not None and y.is_contiguous(memory_format=torch.channels_last) and y.dtype == torch.float32
    expected = _reference(x, weight, bias, groups, 1e-6, swish)
    error = (y.double() - expected).abs().max().item()
    assert error < 4e-6 * max(1.0, expected.abs().max().item()), error


def test_swish_saturates():
    """Constant groups normalise to 0, so the bias alone feeds swish: far tails and 0 as torch's silu."""
    x = torch.zeros(1, 32, 2, 1).contiguous(memory_format=torch.channels_last)
    ones = torch.ones(32)
    for value in (-200.0, -90.0, -1.0, 0.0, 2.5, 90.0, 200.0):
        y = group_norm_channels_last(x, ones, torch.full((32,), value), 32, 1e-6, True)
        assert torch.allclose(y, F.silu(torch.full_like(y, value)), rtol=1e-6, atol=1e-30), (value, y.flatten()[0])


def test_not_applicable_returns_none():
    x = torch.randn(1, 32, 4, 4)
    w, b = torch.ones(32), torch.zeros(32)
    assert group_norm_channels_last(x, w, b, 32, 1e-6) is None  # NCHW
    cl = x.contiguous(memory_format=torch.channels_last)
    assert group_norm_channels_last(cl.double(), w.double(), b.double(), 32, 1e-6) is None
    w.requires_grad_(True)
    assert group_norm_channels_last(cl, w, b, 32, 1e-6) is None  # autograd recording
    with torch.no_grad():
        assert group_norm_channels_last(cl, w, b, 32, 1e-6) is not None
