"""VQ-GAN objective pieces and metrics against direct float64 computations."""
from __future__ import annotations

import math

import numpy as np
import torch

from mmtok.train.losses import adaptive_weight, disc_factor, hinge_d_loss, hinge_g_loss, reconstruction_loss
from mmtok.train.metrics import code_usage, psnr, ssim


def test_hinge_losses_match_definition(seed):
    real, fake = torch.randn(4, 1, 5, 5, dtype=torch.float64), torch.randn(4, 1, 5, 5, dtype=torch.float64)
    r, f = real.numpy().ravel(), fake.numpy().ravel()
    expected_d = 0.5 * (np.maximum(0, 1 - r).mean() + np.maximum(0, 1 + f).mean())
    assert math.isclose(float(hinge_d_loss(real, fake)), expected_d, rel_tol=1e-12)
    assert math.isclose(float(hinge_g_loss(fake)), -f.mean(), rel_tol=1e-12)


def test_disc_factor_switches_at_start():
    assert [disc_factor(s, 3) for s in range(6)] == [0, 0, 0, 1, 1, 1]
    assert disc_factor(10**6, -1) == 0.0 and disc_factor(0, 0) == 1.0


def test_adaptive_weight_is_gradient_norm_ratio(seed):
    # rec = sum((w * a)^2) -> grad 2 a^2 w ; g = sum(w * b) -> grad b
    w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    a, b = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    rec, g = (w * a).square().sum(), (w * b).sum()
    got = adaptive_weight(rec, g, w, disc_weight=0.7)
    wd, ad, bd = (t.detach().numpy() for t in (w, a, b))
    expected = np.linalg.norm(2 * ad ** 2 * wd) / (np.linalg.norm(bd) + 1e-4) * 0.7
    assert math.isclose(float(got), expected, rel_tol=1e-6)
    assert not got.requires_grad


def test_reconstruction_loss_terms(seed):
    x, y = torch.rand(2, 3, 6, 6) * 2 - 1, torch.rand(2, 3, 6, 6) * 2 - 1
    out = reconstruction_loss(x, y, 0.5, 2.0)
    d = (y.double() - x.double()).numpy()
    assert math.isclose(float(out["l1"]), np.abs(d).mean(), rel_tol=1e-5)
    assert math.isclose(float(out["mse"]), (d ** 2).mean(), rel_tol=1e-5)
    assert math.isclose(float(out["rec"]), 0.5 * np.abs(d).mean() + 2.0 * (d ** 2).mean(), rel_tol=1e-5)
    pooled = d.reshape(2, 3, 2, 3, 2, 3).mean((3, 5))  # 3x3 average pooling of the 6x6 difference
    low = reconstruction_loss(x, y, 0.5, 2.0, lowpass_weight=4.0, pool=3)
    assert math.isclose(float(low["lowpass"]), (pooled ** 2).mean(), rel_tol=1e-5)
    assert math.isclose(float(low["rec"]), float(out["rec"]) + 4.0 * (pooled ** 2).mean(), rel_tol=1e-5)


def _ssim_reference(x: np.ndarray, y: np.ndarray, win: int = 11, sigma: float = 1.5) -> float:
    """Window-by-window SSIM in float64 on one channel (valid positions), sample covariances."""
    g = np.exp(-((np.arange(win) - (win - 1) / 2) ** 2) / (2 * sigma ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2, n = (0.01 * 255) ** 2, (0.03 * 255) ** 2, win * win
    vals = []
    for i in range(x.shape[0] - win + 1):
        for j in range(x.shape[1] - win + 1):
            px, py = x[i:i + win, j:j + win], y[i:i + win, j:j + win]
            mx, my = (w * px).sum(), (w * py).sum()
            vx = ((w * px * px).sum() - mx * mx) * n / (n - 1)
            vy = ((w * py * py).sum() - my * my) * n / (n - 1)
            cxy = ((w * px * py).sum() - mx * my) * n / (n - 1)
            vals.append(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    return float(np.mean(vals))


def test_psnr_and_ssim_against_reference(seed):
    x = torch.rand(1, 3, 16, 18) * 2 - 1
    y = (x + 0.2 * torch.randn_like(x)).clamp(-1, 1)
    xu = np.round((x.double().numpy() + 1) * 127.5)
    yu = np.round((y.double().numpy() + 1) * 127.5)
    expected_psnr = 10 * np.log10(255 ** 2 / ((xu - yu) ** 2).mean())
    assert math.isclose(float(psnr(x, y)[0]), expected_psnr, rel_tol=1e-9)
    expected_ssim = np.mean([_ssim_reference(xu[0, c], yu[0, c]) for c in range(3)])
    assert math.isclose(float(ssim(x, y)[0]), expected_ssim, rel_tol=1e-9)
    assert math.isclose(float(ssim(x, x)[0]), 1.0, rel_tol=1e-12)


def test_code_usage(seed):
    codes = torch.randint(0, 10, (3, 4, 4))
    counts = np.bincount(codes.numpy().ravel(), minlength=16)
    p = counts[counts > 0] / counts.sum()
    out = code_usage(codes, 16)
    assert out["usage"] == (counts > 0).sum() / 16 and out["tokens"] == 48
    assert math.isclose(out["perplexity"], math.exp(-(p * np.log(p)).sum()), rel_tol=1e-12)
