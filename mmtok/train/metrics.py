"""Reconstruction quality measures: PSNR, SSIM (Gaussian window, Wang et al. 2004) and code usage.

Images are float tensors in [-1, 1] (the tokenizer's range) and are measured as 8-bit pixels would be:
mapped to [0, 255] and rounded, so numbers match those computed on saved PNGs.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def to_uint8_range(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> [0, 255] float64, rounded as when saved to 8-bit files."""
    return images.detach().double().clamp(-1, 1).add(1).mul(127.5).round()


def psnr(reference: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of (B, C, H, W) images in [-1, 1] (peak 255 after 8-bit rounding)."""
    ref, out = to_uint8_range(reference), to_uint8_range(test)
    mse = (ref - out).square().flatten(1).mean(1)
    return 10 * torch.log10(255.0 ** 2 / mse.clamp_min(1e-10))


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x.square() / (2 * sigma ** 2))
    return g / g.sum()


def ssim(reference: torch.Tensor, test: torch.Tensor, *, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image mean SSIM of (B, C, H, W) images in [-1, 1], per channel then averaged ("valid" window
    positions only, K1 = 0.01, K2 = 0.03, data range 255: scikit-image's gaussian_weights=True settings)."""
    x, y = to_uint8_range(reference), to_uint8_range(test)
    channels = x.shape[1]
    g = _gaussian_window(window, sigma)
    kernel = (g[:, None] * g[None, :]).expand(channels, 1, window, window).contiguous()

    def blur(t):
        return F.conv2d(t, kernel, groups=channels)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = blur(x), blur(y)
    # sample covariances (N / (N - 1)), as scikit-image uses with use_sample_covariance=True
    n = window * window
    cov_norm = n / (n - 1)
    var_x = cov_norm * (blur(x * x) - mu_x * mu_x)
    var_y = cov_norm * (blur(y * y) - mu_y * mu_y)
    cov = cov_norm * (blur(x * y) - mu_x * mu_y)
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(1)


def code_usage(codes: torch.Tensor, num_codes: int) -> dict:
    """Fraction of the codebook used at least once, and the perplexity of the code histogram."""
    counts = torch.bincount(codes.reshape(-1).cpu(), minlength=num_codes).double()
    probs = counts / counts.sum().clamp_min(1)
    entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum()
    return {"usage": float((counts > 0).double().mean()), "perplexity": float(math.exp(float(entropy))),
            "codes_used": int((counts > 0).sum()), "tokens": int(codes.numel())}
