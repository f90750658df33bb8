"""VectorQuantizer: lookups against float64 brute force, gradients against hand-written references, the EMA
formula on a 2-code example, dead-code re-seeding, k-means init, layouts, bf16 autocast and torch.compile."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmtok import QuantizerOutput, VectorQuantizer


def brute_force_argmin(h: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    h, codes = h.double(), codes.double()
    return (h[:, None, :] - codes[None, :, :]).square().sum(-1).argmin(-1)


@pytest.mark.parametrize("layout", ["bchw", "btc", "nc"])
@pytest.mark.parametrize("variant", ["plain", "l2", "code_dim"])
def test_indices_equal_float64_argmin(seed, layout, variant):
    kwargs = {"l2": dict(l2_normalize=True), "code_dim": dict(code_dim=4, l2_normalize=True), "plain": {}}[variant]
    vq = VectorQuantizer(96, 12, **kwargs)
    with torch.no_grad():
        vq.codebook.normal_()
    shape, channel_dim = {"bchw": ((2, 12, 5, 3), 1), "btc": ((3, 7, 12), -1), "nc": ((40, 12), -1)}[layout]
    z = torch.randn(shape)
    out = vq(z, channel_dim=channel_dim)
    assert isinstance(out, QuantizerOutput)
    assert out.quantized.shape == z.shape and out.quantized.dtype == z.dtype
    expected_index_shape = z.movedim(channel_dim, -1).shape[:-1]
    assert out.indices.shape == expected_index_shape and out.indices.dtype == torch.int64
    rows = z.movedim(channel_dim, -1).reshape(-1, 12).double()
    codes = vq.codebook.detach().double()
    if vq.in_proj is not None:
        rows = F.linear(rows, vq.in_proj.weight.double(), vq.in_proj.bias.double())
    if vq.l2_normalize:
        rows, codes = F.normalize(rows, dim=-1), F.normalize(codes, dim=-1)
    expected = brute_force_argmin(rows, codes).reshape(expected_index_shape)
    assert torch.equal(out.indices, expected)
    assert torch.equal(vq.lookup(z, channel_dim=channel_dim), expected)
    decoded = vq.decode(out.indices, channel_dim=channel_dim)
    assert decoded.shape == z.shape
    torch.testing.assert_close(decoded, out.quantized.detach(), atol=1e-5, rtol=1e-5)


def test_l2_normalize_outputs_unit_codebook_rows_and_keeps_raw_codebook(seed):
    vq = VectorQuantizer(32, 6, l2_normalize=True)
    with torch.no_grad():
        vq.codebook.normal_().mul_(3.0)
    raw = vq.codebook.detach().clone()
    z = torch.randn(20, 6)
    out = vq(z)
    torch.testing.assert_close(out.quantized.detach(), F.normalize(raw, dim=-1)[out.indices], atol=1e-6, rtol=1e-6)
    assert torch.equal(vq.codebook.detach(), raw)  # stored raw, normalised only at use


def test_straight_through_gradients_match_hand_reference(seed):
    beta = 0.3
    vq = VectorQuantizer(5, 3, beta=beta)
    with torch.no_grad():
        vq.codebook.normal_()
    z = torch.randn(4, 3, requires_grad=True)
    upstream = torch.randn(4, 3)
    out = vq(z)
    ((out.quantized * upstream).sum() + out.loss).backward()

    zd, codes = z.detach().double(), vq.codebook.detach().double()
    idx = brute_force_argmin(zd, codes)
    q = codes[idx]
    numel = zd.numel()
    expected_loss = ((q - zd) ** 2).mean() * (1 + beta)
    expected_grad_z = upstream.double() + beta * 2.0 * (zd - q) / numel  # straight-through + commitment
    expected_grad_codes = torch.zeros_like(codes)
    for i, k in enumerate(idx.tolist()):
        expected_grad_codes[k] += 2.0 * (q[i] - zd[i]) / numel  # codebook term
    torch.testing.assert_close(out.loss.double(), expected_loss, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(z.grad.double(), expected_grad_z, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(vq.codebook.grad.double(), expected_grad_codes, atol=1e-6, rtol=1e-5)


def test_legacy_beta_placement(seed):
    vq = VectorQuantizer(8, 4, beta=0.4, legacy_beta=True)
    with torch.no_grad():
        vq.codebook.normal_()
    z = torch.randn(10, 4, requires_grad=True)
    out = vq(z)
    out.loss.backward()
    q = vq.codebook.detach().double()[brute_force_argmin(z.detach(), vq.codebook.detach())]
    torch.testing.assert_close(out.loss.double(), ((q - z.detach().double()) ** 2).mean() * 1.4, atol=1e-6, rtol=1e-5)
    # the encoder is pulled with weight 1 (taming's legacy placement), not beta
    torch.testing.assert_close(z.grad.double(), 2.0 * (z.detach().double() - q) / z.numel(), atol=1e-6, rtol=1e-5)


def test_rotation_trick_value_and_gradient(seed):
    vq = VectorQuantizer(6, 3, rotation_trick=True, beta=0.0)
    with torch.no_grad():
        vq.codebook.normal_()
    z = torch.randn(5, 3, requires_grad=True)
    upstream = torch.randn(5, 3)
    out = vq(z)
    (out.quantized * upstream).sum().backward()
    zd, codes = z.detach().double(), vq.codebook.detach().double()
    q = codes[brute_force_argmin(zd, codes)]
    torch.testing.assert_close(out.quantized.detach().double(), q, atol=1e-5, rtol=1e-5)
    for i in range(5):
        u, w = zd[i] / zd[i].norm(), q[i] / q[i].norm()
        r = (u + w) / (u + w).norm()
        rotation = torch.eye(3, dtype=torch.float64) - 2 * torch.outer(r, r) + 2 * torch.outer(w, u)
        torch.testing.assert_close(rotation @ u, w)  # it is the rotation from z's direction to q's
        expected = (q[i].norm() / zd[i].norm()) * rotation.T @ upstream[i].double()
        torch.testing.assert_close(z.grad[i].double(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("eps", [1e-5, 0.5])
def test_ema_update_matches_textbook_formula_on_two_codes(seed, eps):
    decay = 0.8
    vq = VectorQuantizer(2, 2, ema_decay=decay, ema_eps=eps, beta=0.25)
    old_sizes = torch.rand(2) + 0.5
    old_sums = torch.randn(2, 2)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[-3.0, 0.0], [3.0, 0.0]]))
        vq.ema_cluster_size.copy_(old_sizes)
        vq.ema_embed_sum.copy_(old_sums)
    left = torch.randn(3, 2) * 0.5 + torch.tensor([-3.0, 0.0])
    right = torch.randn(2, 2) * 0.5 + torch.tensor([3.0, 0.0])
    z = torch.cat([left, right])[torch.randperm(5)]
    out = vq(z)
    # by hand, in python floats: counts n, sums s, EMA, Laplace smoothing, e_k = m_k / N'_k
    zs = z.double().tolist()
    n = [sum(1 for p in zs if p[0] < 0), sum(1 for p in zs if p[0] >= 0)]
    s = [[sum(p[d] for p in zs if (p[0] >= 0) == bool(k)) for d in range(2)] for k in range(2)]
    sizes = [decay * float(old_sizes[k]) + (1 - decay) * n[k] for k in range(2)]
    sums = [[decay * float(old_sums[k, d]) + (1 - decay) * s[k][d] for d in range(2)] for k in range(2)]
    total = sizes[0] + sizes[1]
    smoothed = [(sizes[k] + eps) / (total + 2 * eps) * total for k in range(2)]
    expected = torch.tensor([[sums[k][d] / smoothed[k] for d in range(2)] for k in range(2)], dtype=torch.float64)
    torch.testing.assert_close(vq.ema_cluster_size.double(), torch.tensor(sizes, dtype=torch.float64))
    torch.testing.assert_close(vq.codebook.double(), expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(out.indices, (z[:, 0] >= 0).long())
    # loss is beta * commitment only (no codebook term under EMA), measured against the pre-update codebook
    q = torch.tensor([[-3.0, 0.0], [3.0, 0.0]], dtype=torch.float64)[out.indices]
    torch.testing.assert_close(out.loss.double(), 0.25 * ((q - z.double()) ** 2).mean(), atol=1e-6, rtol=1e-5)
    assert isinstance(vq.codebook, torch.Tensor) and not isinstance(vq.codebook, torch.nn.Parameter)


@pytest.mark.parametrize("ema", [False, True])
def test_dead_codes_are_reseeded_from_batch_vectors(seed, ema):
    vq = VectorQuantizer(8, 4, dead_code_threshold=0.6, usage_decay=0.5, ema_decay=0.5 if ema else None)
    centers = torch.randn(4, 4)
    with torch.no_grad():
        vq.codebook[:4] = centers
        vq.codebook[4:] = 1000.0 + torch.rand(4, 4)  # never the nearest: dead after one step
    z = centers.repeat(10, 1) + 0.01 * torch.randn(40, 4)
    vq(z)
    reseeded = vq.codebook.detach()[4:]
    distances = torch.cdist(reseeded.double(), z.double())
    assert torch.all(distances.min(dim=1).values < 1e-6), "every dead code must now be one of the batch vectors"
    if ema:
        assert torch.allclose(vq.ema_cluster_size[4:], torch.full((4,), 0.6))
    else:
        torch.testing.assert_close(vq.codebook.detach()[:4], centers)  # live codes untouched
        assert torch.all(vq.code_usage[:4] >= 0.6)


def test_kmeans_init_improves_usage_on_clustered_data(seed):
    # clusters away from the origin, where a random N(0, 1) codebook sits: without k-means few codes win any
    centers = torch.randn(16, 8) * 4.0 + 12.0
    data = (centers.repeat_interleave(32, 0) + 0.1 * torch.randn(16 * 32, 8))[torch.randperm(16 * 32)]
    usage = {}
    for kmeans in (False, True):
        torch.manual_seed(seed)
        vq = VectorQuantizer(16, 8, ema_decay=0.99, kmeans_init=kmeans)
        vq(data)  # the first training batch initialises the codebook when kmeans_init
        vq.eval()
        usage[kmeans] = vq.lookup(data).unique().numel() / 16
        if kmeans:
            assert bool(vq.initialized)
            first = vq.codebook.clone()
            vq.train()
            vq(data)  # initialisation happens once
            assert torch.allclose(vq.codebook, first, atol=0.05)
    assert usage[True] > usage[False]
    assert usage[True] >= 0.75


def test_stats_perplexity_and_usage(seed):
    vq = VectorQuantizer(10, 3)
    with torch.no_grad():
        vq.codebook.copy_(torch.randn(10, 3) * 10)
    chosen = torch.tensor([0, 0, 1, 2, 2, 2, 7, 7])
    z = vq.codebook.detach()[chosen] + 1e-3 * torch.randn(8, 3)
    stats = vq(z).stats
    probs = torch.tensor([2, 1, 3, 2], dtype=torch.float64) / 8
    torch.testing.assert_close(stats["perplexity"].double(), torch.exp(-(probs * probs.log()).sum()), atol=1e-5, rtol=1e-5)
    assert stats["usage"].item() == pytest.approx(0.4)


def test_empty_batch_gives_zero_loss_and_empty_outputs(seed):
    for kwargs in ({}, {"ema_decay": 0.9, "dead_code_threshold": 0.5}):
        vq = VectorQuantizer(16, 4, **kwargs)
        before = vq.codebook.detach().clone()
        z = torch.randn(2, 4, 0, 3, requires_grad=True)
        out = vq(z, channel_dim=1)
        assert out.quantized.shape == z.shape and out.indices.shape == (2, 0, 3)
        assert out.loss.item() == 0.0 and torch.isfinite(out.loss)
        assert torch.equal(vq.codebook.detach(), before)


def test_bf16_autocast_forward_backward(seed):
    vq = VectorQuantizer(64, 16, code_dim=8, ema_decay=0.9)
    z = torch.randn(2, 16, 4, 4, dtype=torch.bfloat16, requires_grad=True)
    before = vq.codebook.clone()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vq(z, channel_dim=1)
        h = vq.in_proj(z.movedim(1, -1).reshape(-1, 16))
    assert out.quantized.dtype == torch.bfloat16 and out.loss.dtype == torch.float32
    assert vq.codebook.dtype == torch.float32 and not torch.equal(vq.codebook, before)
    assert torch.equal(out.indices.reshape(-1), brute_force_argmin(h.float(), before))
    (out.quantized.float().square().mean() + out.loss).backward()
    assert z.grad is not None and z.grad.dtype == torch.bfloat16 and torch.isfinite(z.grad.float()).all()
    assert z.grad.float().abs().sum() > 0


def test_bf16_input_without_autocast_keeps_dtype(seed):
    vq = VectorQuantizer(32, 8)
    z = torch.randn(5, 8, dtype=torch.bfloat16)
    out = vq(z)
    assert out.quantized.dtype == torch.bfloat16
    assert torch.equal(out.indices, brute_force_argmin(z.float(), vq.codebook.detach()))


def test_torch_compile_fullgraph_eval_and_training(seed):
    torch._dynamo.reset()
    vq = VectorQuantizer(48, 12, code_dim=6, l2_normalize=True, channel_dim=1)
    compiled = torch.compile(vq, fullgraph=True, backend="aot_eager")
    z = torch.randn(2, 12, 3, 4, requires_grad=True)
    eager = vq(z)
    eager.loss.backward()
    grad_eager, codebook_grad_eager = z.grad.clone(), vq.codebook.grad.clone()
    z.grad, vq.codebook.grad = None, None
    out = compiled(z)
    out.loss.backward()
    assert torch.equal(out.indices, eager.indices)
    torch.testing.assert_close(out.quantized, eager.quantized)
    torch.testing.assert_close(z.grad, grad_eager)
    torch.testing.assert_close(vq.codebook.grad, codebook_grad_eager)
    vq.eval()
    assert torch.equal(compiled(z).indices, eager.indices)


def test_compiled_forward_with_explicit_ema_update_matches_eager(seed):
    torch._dynamo.reset()
    torch.manual_seed(seed)
    eager_vq = VectorQuantizer(32, 6, ema_decay=0.9, dead_code_threshold=0.0)
    compiled_vq = VectorQuantizer(32, 6, ema_decay=0.9)
    compiled_vq.load_state_dict(eager_vq.state_dict())
    compiled = torch.compile(compiled_vq, fullgraph=True, backend="aot_eager")
    for _ in range(3):
        z = torch.randn(50, 6)
        eager_out = eager_vq(z)
        out = compiled(z)  # the compiled forward skips the state step...
        compiled_vq.update(z, out.indices)  # ...which runs here, outside the compiled region
        assert torch.equal(out.indices, eager_out.indices)
        torch.testing.assert_close(compiled_vq.codebook, eager_vq.codebook)


def test_state_dict_round_trip(seed):
    vq = VectorQuantizer(16, 4, ema_decay=0.9, kmeans_init=True, dead_code_threshold=0.1)
    vq(torch.randn(64, 4))
    fresh = VectorQuantizer(16, 4, ema_decay=0.9, kmeans_init=True, dead_code_threshold=0.1)
    fresh.load_state_dict(vq.state_dict())
    assert set(vq.state_dict()) == {"codebook", "ema_cluster_size", "ema_embed_sum", "initialized"}
    z = torch.randn(30, 4)
    assert torch.equal(fresh.lookup(z), vq.lookup(z))
    assert set(VectorQuantizer(16, 4).state_dict()) == {"codebook"}


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="num_codes"):
        VectorQuantizer(0, 4)
    with pytest.raises(ValueError, match="ema_decay"):
        VectorQuantizer(4, 4, ema_decay=1.5)
    vq = VectorQuantizer(4, 4)
    with pytest.raises(ValueError, match="channels"):
        vq(torch.randn(3, 5))
    with pytest.raises(ValueError, match="channel_dim"):
        vq(torch.randn(3, 4), channel_dim=4)
    with pytest.raises(ValueError, match="indices"):
        vq.decode(torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="integer"):
        vq.decode(torch.tensor([0.0]))
