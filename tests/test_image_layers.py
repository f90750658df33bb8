"""Upsample's sub-pixel form and its phase-weight cache: equal to nearest-2x + conv3x3 in every autograd mode
(grad, no_grad, inference_mode), for both memory formats, and never stale after the conv's parameters change."""
import gc

import pytest
import torch
import torch.nn.functional as F

from mmtok.image.layers import Upsample

CL = torch.channels_last


def direct(up: Upsample, x: torch.Tensor) -> torch.Tensor:
    """The upstream definition in float64: materialise the 2x nearest upsample, then the 3x3 conv."""
    w, b = up.conv.weight.detach().double(), up.conv.bias.detach().double()
    return F.conv2d(F.interpolate(x.double(), scale_factor=2.0, mode="nearest"), w, b, padding=1)


def make(channels=5, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return Upsample(channels).to(dtype)


def close(y, ref):
    torch.testing.assert_close(y.double(), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("x_format", [torch.contiguous_format, CL])
@pytest.mark.parametrize("w_format", [torch.contiguous_format, CL])
@pytest.mark.parametrize("mode", ["grad", "no_grad", "inference"])
def test_matches_direct_form_and_keeps_input_layout(x_format, w_format, mode):
    up = make().to(memory_format=w_format)
    x = torch.randn(2, 5, 7, 4, dtype=torch.float64).contiguous(memory_format=x_format)  # odd, non-square
    ctx = {"grad": torch.enable_grad, "no_grad": torch.no_grad, "inference": torch.inference_mode}[mode]
    for _ in range(2):  # the second call of the no_grad / inference modes reads the cache
        with ctx():
            y = up(x)
        close(y, direct(up, x))
        assert y.is_contiguous(memory_format=x_format)


def test_module_built_inside_inference_mode():
    """Inference-tensor parameters have no version counter: phase weights are rebuilt per call, never stale."""
    with torch.inference_mode():
        up = make()
        x = torch.randn(1, 5, 3, 6, dtype=torch.float64)
        close(up(x), direct(up, x))
        up.conv.weight.mul_(-2.0)
        up.conv.bias.add_(1.0)
        close(up(x), direct(up, x))


def test_cache_built_in_inference_mode_is_usable_outside_it():
    up = make()
    x = torch.randn(1, 5, 4, 4, dtype=torch.float64)
    for fmt in (torch.contiguous_format, CL):
        with torch.inference_mode():
            up(x.contiguous(memory_format=fmt))
    for fmt in (torch.contiguous_format, CL):
        xf = x.contiguous(memory_format=fmt)
        with torch.no_grad():
            close(up(xf), direct(up, x))
            up.conv.weight.add_(0.25)  # in place outside inference_mode: the cached copy is a normal tensor
            close(up(xf), direct(up, x))
    # and training still works afterwards
    xg = x.clone().requires_grad_()
    up(xg).square().sum().backward()
    assert up.conv.weight.grad is not None and xg.grad is not None


@pytest.mark.parametrize("ctx", [torch.no_grad, torch.inference_mode])
def test_in_place_changes_rebuild(ctx):
    up = make()
    x = torch.randn(1, 5, 4, 3, dtype=torch.float64).contiguous(memory_format=CL)
    with ctx():
        up(x)
        up.conv.weight.mul_(3.0)
        close(up(x), direct(up, x))
        up.conv.bias.sub_(2.0)
        close(up(x), direct(up, x))
    state = {k: torch.randn_like(v) for k, v in up.state_dict().items()}
    up.load_state_dict(state)  # copies in place
    with ctx():
        close(up(x), direct(up, x))


def test_swapped_parameters_rebuild_even_at_a_reused_address():
    """A replaced weight whose memory is freed must not let a later tensor at the same address (and the same
    version count) hit the old cache entry."""
    up = make()
    x = torch.randn(1, 5, 3, 3, dtype=torch.float64)
    with torch.no_grad():
        up(x)
        for i in range(20):
            old_version = up.conv.weight._version
            up.conv.weight = torch.nn.Parameter(torch.zeros_like(up.conv.weight))
            gc.collect()
            fresh = torch.randn_like(up.conv.weight)  # may land on the freed address
            while fresh._version < old_version:  # and reach the old version count
                fresh.mul_(1.0)
            up.conv.weight = torch.nn.Parameter(fresh)
            close(up(x), direct(up, x))
            up.conv.weight.data = torch.randn_like(up.conv.weight)  # a .data swap keeps the version counter
            close(up(x), direct(up, x))


def test_dtype_and_format_changes_rebuild():
    up = make(dtype=torch.float32)
    x = torch.randn(1, 5, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(up(x).double(), direct(up, x), rtol=1e-5, atol=1e-5)
        up.double()
        close(up(x.double()), direct(up, x))
        up.to(memory_format=CL)
        y = up(x.double().contiguous(memory_format=CL))
        close(y, direct(up, x))
        assert y.is_contiguous(memory_format=CL)


def test_compiles():
    up = make(dtype=torch.float32)
    x = torch.randn(1, 5, 4, 6)
    compiled = torch.compile(up, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x).double(), direct(up, x), rtol=1e-5, atol=1e-5)
