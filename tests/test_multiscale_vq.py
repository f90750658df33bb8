"""VAR's multi-scale residual quantizer against VAR's own VectorQuantizer2 (fixtures: scripts/fixtures/make_var_fixtures.py)."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch

from mmtok.quantize import MultiScaleResidualVQ
from mmtok.quantize.multiscale import phi_index, phi_ticks

DATA = pathlib.Path(__file__).parent / "data" / "var"


@pytest.fixture(scope="module")
def fx():
    with np.load(DATA / "quantizers.npz") as f:
        return {k: f[k] for k in f.files}


def _build(fx, name, scales=None):
    cfg = json.loads(str(fx["configs"]))
    vocab, dim, znorm, patch_nums, resi, share = cfg["shared" if name == "rect" else name]
    if name == "rect":
        patch_nums = [[1, 1], [2, 3], [3, 4], [4, 6]]
    q = MultiScaleResidualVQ(vocab, dim, [tuple(p) if isinstance(p, list) else p for p in (scales or patch_nums)],
                             phi_ratio=resi, phi_count=share, metric="cosine" if znorm else "l2")
    state = {k[len(name) + 7:]: torch.from_numpy(v) for k, v in fx.items() if k.startswith(f"{name}/state/")}
    q.load_var_state_dict(state, prefix="")
    return q


NAMES = ["partial4", "partial4_three", "nonshared_cosine", "shared", "partial3", "identity", "rect"]


@pytest.mark.parametrize("name", NAMES)
def test_codes_and_reconstruction_match_var(fx, name):
    q = _build(fx, name).eval()
    f = torch.from_numpy(fx[f"{name}/f"])
    indices = q.lookup(f)
    expected = torch.from_numpy(fx[f"{name}/indices"])
    sure = torch.from_numpy(fx[f"{name}/margins"]) > 1e-4
    assert sure.float().mean() > 0.9
    assert torch.equal(indices[sure], expected[sure])
    assert torch.equal(indices, expected)  # every margin of these fixtures is > 1e-4 (checked above for most)
    out = q(f)
    assert torch.equal(out.indices, expected)
    torch.testing.assert_close(out.quantized, torch.from_numpy(fx[f"{name}/f_hat"]), atol=1e-5, rtol=1e-5)
    if name != "rect":  # VAR's decode (embed_to_fhat) is square-only
        torch.testing.assert_close(q.decode(expected), torch.from_numpy(fx[f"{name}/decoded"]), atol=1e-5, rtol=1e-5)
        first_two = sum(h * w for h, w in q.sizes[:2])
        torch.testing.assert_close(q.decode(expected[:, :first_two], num_scales=2),
                                   torch.from_numpy(fx[f"{name}/coarse_f_hat"]), atol=1e-5, rtol=1e-5)


def _var_key(q: MultiScaleResidualVQ, name: str) -> str:
    """VAR's parameter name for one of ours (the mapping load_var_state_dict uses)."""
    if name == "codebook":
        return "embedding.weight"
    i, kind = name.split(".")[1], name.split(".")[-1]
    return {1: "quant_resi.qresi", 0: f"quant_resi.{i}"}.get(q.phi_count, f"quant_resi.qresi_ls.{i}") + "." + kind


@pytest.mark.parametrize("name", [n for n in NAMES if n != "rect"])
def test_training_loss_and_gradients_match_var(fx, name):
    q = _build(fx, name).train()
    f = torch.from_numpy(fx[f"{name}/f"]).clone().requires_grad_(True)
    out = q(f)
    torch.testing.assert_close(out.quantized, torch.from_numpy(fx[f"{name}/forward_f_hat"]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, torch.tensor(float(fx[f"{name}/forward_loss"])), atol=1e-6, rtol=1e-5)
    (out.loss + (out.quantized * torch.from_numpy(fx[f"{name}/g"])).sum()).backward()
    torch.testing.assert_close(f.grad, torch.from_numpy(fx[f"{name}/grad_f"]), atol=1e-5, rtol=1e-4)
    for pname, p in q.named_parameters():
        key = f"{name}/grad/{_var_key(q, pname)}"
        if key not in fx:  # a Φ no scale uses (3 scales over 4 Φ): no gradient upstream either
            assert p.grad is None, pname
            continue
        torch.testing.assert_close(p.grad, torch.from_numpy(fx[f"{name}/grad/{_var_key(q, pname)}"]),
                                   atol=1e-5, rtol=1e-4, msg=pname)


def test_phi_ticks_follow_var():
    assert phi_ticks(4) == pytest.approx([1 / 12, 1 / 12 + 5 / 18, 1 / 12 + 10 / 18, 11 / 12])
    assert [phi_index(k, 10, 4) for k in range(10)] == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]  # numpy.argmin over VAR's ticks
    assert [phi_index(k, 10, 1) for k in range(10)] == [0] * 10
    assert [phi_index(k, 5, 5) for k in range(5)] == [0, 1, 2, 3, 4]


def test_released_configuration_shapes():
    q = MultiScaleResidualVQ(64, 8)  # VAR's 10 scales at 16x16
    assert q.num_tokens == 680 and len(q.phis) == 4
    z = torch.randn(2, 8, 16, 16)
    out = q(z)
    assert out.indices.shape == (2, 680) and out.quantized.shape == z.shape
    maps = q.split(out.indices)
    assert [tuple(m.shape[1:]) for m in maps] == [(s, s) for s in (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)]
    torch.testing.assert_close(q.decode(out.indices), out.quantized.detach(), atol=1e-5, rtol=1e-5)


def test_channels_last_and_bf16_give_the_fp32_codes():
    torch.manual_seed(1)
    q = MultiScaleResidualVQ(50, 6, (1, 2, 4, 6))
    z = torch.randn(3, 6, 6, 6)
    ref = q.lookup(z)
    assert torch.equal(q.lookup(z.permute(0, 2, 3, 1), channel_dim=-1), ref)
    out = q(z.permute(0, 2, 3, 1), channel_dim=-1)
    assert out.quantized.shape == (3, 6, 6, 6) and torch.equal(out.indices, ref)
    zb = z.bfloat16()
    assert torch.equal(q.lookup(zb), q.lookup(zb.float()))
    assert q(zb).quantized.dtype == torch.bfloat16


def test_single_scale_is_plain_vq_with_phi():
    torch.manual_seed(2)
    q = MultiScaleResidualVQ(20, 4, (5,), phi_count=1)
    z = torch.randn(2, 4, 5, 5)
    d = torch.cdist(z.permute(0, 2, 3, 1).reshape(-1, 4).double(), q.codebook.double())
    assert torch.equal(q.lookup(z).reshape(-1), d.argmin(1))


def test_bad_arguments_are_refused():
    q = MultiScaleResidualVQ(10, 4, (1, 2))
    with pytest.raises(ValueError, match="spatially"):
        q.lookup(torch.randn(1, 4, 3, 3))
    with pytest.raises(ValueError, match="channels"):
        q.lookup(torch.randn(1, 5, 2, 2))
    with pytest.raises(ValueError, match=r"\(B, 5\)"):
        q.decode(torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        q.decode(torch.full((1, 5), 10))
    with pytest.raises(ValueError, match="integer"):
        q.decode(torch.zeros(1, 5))
    for bad in ([], [0], [(2, 0)], 3):
        with pytest.raises(ValueError, match="scale"):
            MultiScaleResidualVQ(10, 4, bad)
    with pytest.raises(ValueError, match="metric"):
        MultiScaleResidualVQ(10, 4, metric="dot")
    wrong = MultiScaleResidualVQ(10, 4, (1, 2), phi_count=4)
    with pytest.raises(ValueError, match="missing .*qresi_ls.3"):
        wrong.load_var_state_dict({"embedding.weight": torch.zeros(10, 4),
                                   **{f"quant_resi.qresi_ls.{i}.{k}": torch.zeros(4, 4, 3, 3) if k == "weight"
                                      else torch.zeros(4) for i in range(3) for k in ("weight", "bias")}}, prefix="")


@pytest.mark.slow
def test_torch_compile_fullgraph():
    torch.manual_seed(3)
    q = MultiScaleResidualVQ(30, 4, (1, 2))
    z = torch.randn(2, 4, 2, 2)
    eager = q(z)
    compiled = torch.compile(q, fullgraph=True)(z)
    assert torch.equal(eager.indices, compiled.indices)
    torch.testing.assert_close(eager.quantized, compiled.quantized)
