"""RandomProjectionQuantizer (BEST-RQ): float64 reference, seed determinism across processes, invariance to the
scale of the projection, padding mask, multi-codebook shapes and frozen buffers."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from mmtok import RandomProjectionQuantizer


def reference_tokens(x: torch.Tensor, projection: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """argmax cosine similarity of l2-normalised x A against the codebook, in float64, per codebook."""
    x = x.double()
    tokens = []
    for g in range(projection.shape[0]):
        projected = F.normalize(x @ projection[g].double(), dim=-1)
        tokens.append((projected @ F.normalize(codebook[g].double(), dim=-1).T).argmax(-1))
    return torch.stack(tokens, dim=-1)


def test_tokens_equal_float64_reference_and_shapes(seed):
    rpq = RandomProjectionQuantizer(40, code_dim=16, num_codes=512, num_codebooks=3, seed=seed)
    x = torch.randn(2, 9, 40)
    tokens = rpq(x)
    assert tokens.shape == (2, 9, 3) and tokens.dtype == torch.int64
    assert torch.equal(tokens, reference_tokens(x, rpq.projection, rpq.codebook))
    assert rpq(x[1]).shape == (9, 3)
    assert torch.equal(rpq(x[1]), tokens[1])
    assert rpq.projection.shape == (3, 40, 16) and rpq.codebook.shape == (3, 512, 16)


def test_frozen_tables_follow_the_recipe(seed):
    rpq = RandomProjectionQuantizer(80, code_dim=16, num_codes=2048, seed=seed)
    torch.testing.assert_close(rpq.codebook.norm(dim=-1), torch.ones(1, 2048))
    bound = math.sqrt(6.0 / (80 + 16))  # Xavier uniform
    assert rpq.projection.abs().max() <= bound
    assert rpq.projection.abs().max() > 0.95 * bound
    assert abs(rpq.projection.mean().item()) < 0.02


def test_no_parameters_and_nothing_requires_grad(seed):
    rpq = RandomProjectionQuantizer(20, num_codes=64, num_codebooks=2, seed=seed)
    assert list(rpq.parameters()) == []
    assert all(not b.requires_grad for b in rpq.buffers())
    x = torch.randn(3, 5, 20, requires_grad=True)
    assert not rpq(x).requires_grad
    assert set(rpq.state_dict()) == {"projection", "codebook"}


def test_state_dict_round_trip(seed):
    source = RandomProjectionQuantizer(24, num_codes=128, seed=seed)
    target = RandomProjectionQuantizer(24, num_codes=128, seed=seed + 1)
    x = torch.randn(4, 6, 24)
    assert not torch.equal(source(x), target(x))
    target.load_state_dict(source.state_dict())
    assert torch.equal(source(x), target(x))


def test_same_seed_same_tokens_in_another_process(seed, tmp_path):
    x = torch.randn(2, 12, 32)
    path = tmp_path / "x.pt"
    torch.save(x, path)
    script = (
        "import sys, torch; from mmtok import RandomProjectionQuantizer as Q;"
        f"torch.manual_seed({seed + 17});"  # the global RNG state must not matter
        f"x = torch.load({str(path)!r}); q = Q(32, num_codes=1024, num_codebooks=2, seed={seed});"
        f"torch.save(q(x), {str(tmp_path / 'tokens.pt')!r})"
    )
    subprocess.run([sys.executable, "-W", "ignore", "-c", script], check=True, timeout=60)
    here = RandomProjectionQuantizer(32, num_codes=1024, num_codebooks=2, seed=seed)(x)
    assert torch.equal(torch.load(tmp_path / "tokens.pt"), here)
    other_seed = RandomProjectionQuantizer(32, num_codes=1024, num_codebooks=2, seed=seed + 1)(x)
    assert not torch.equal(other_seed, here)


def test_first_codebook_does_not_depend_on_num_codebooks(seed):
    x = torch.randn(20, 16)
    one = RandomProjectionQuantizer(16, num_codes=256, num_codebooks=1, seed=seed)(x)
    three = RandomProjectionQuantizer(16, num_codes=256, num_codebooks=3, seed=seed)(x)
    assert torch.equal(three[:, :1], one)


def test_tokens_invariant_to_scale_of_projection(seed):
    rpq = RandomProjectionQuantizer(30, num_codes=256, num_codebooks=2, seed=seed)
    x = torch.randn(3, 10, 30)
    before = rpq(x)
    scale = float(torch.empty(()).uniform_(0.1, 10.0))
    with torch.no_grad():
        rpq.projection.mul_(scale)
    assert torch.equal(rpq(x), before)


def test_padding_mask_gives_minus_one(seed):
    rpq = RandomProjectionQuantizer(12, num_codes=64, num_codebooks=2, seed=seed)
    x = torch.randn(3, 8, 12)
    lengths = torch.tensor([8, 5, 1])
    mask = torch.arange(8)[None, :] < lengths[:, None]
    tokens = rpq(x, mask)
    unmasked = rpq(x)
    assert torch.all(tokens[~mask] == -1)
    assert torch.equal(tokens[mask], unmasked[mask])
    assert torch.all(unmasked >= 0)
    single = rpq(x[1], mask[1])
    assert torch.equal(single, tokens[1])


def test_bf16_input_uses_fp32_lookup(seed):
    rpq = RandomProjectionQuantizer(16, num_codes=128, seed=seed)
    x = torch.randn(4, 7, 16).bfloat16()
    assert torch.equal(rpq(x), reference_tokens(x.float(), rpq.projection, rpq.codebook))


def test_bad_input_raises():
    rpq = RandomProjectionQuantizer(8, num_codes=16)
    with pytest.raises(ValueError, match="shape"):
        rpq(torch.randn(2, 3, 9))
    with pytest.raises(ValueError, match="mask"):
        rpq(torch.randn(2, 3, 8), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        rpq(torch.randn(2, 3, 8), torch.ones(2, 3))
    with pytest.raises(ValueError, match="num_codes"):
        RandomProjectionQuantizer(8, num_codes=0)
