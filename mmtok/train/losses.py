"""The VQ-GAN objective (Esser et al. 2021): pixel reconstruction, VQ loss, hinge GAN with an adaptive weight.

generator:     L = w1 * |x - x̂| + w2 * (x - x̂)^2 [+ wp * LPIPS] + L_vq + λ * f(step) * (-E[D(x̂)])
discriminator: L_D = f(step) * 0.5 * (E[relu(1 - D(x))] + E[relu(1 + D(x̂))])
λ = disc_weight * ||∇_last L_rec|| / (||∇_last L_GAN|| + 1e-4), clamped to [0, 1e4], with ∇_last the
gradient w.r.t. the decoder's last layer weight; f(step) = 1 from `disc_start` on, else 0.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    return -logits_fake.mean()


def disc_factor(step: int, disc_start: int) -> float:
    """1.0 once the discriminator is switched on (step >= disc_start), else 0.0; disc_start < 0 never."""
    return 1.0 if 0 <= disc_start <= step else 0.0


def reconstruction_loss(x: torch.Tensor, recon: torch.Tensor, l1_weight: float, l2_weight: float,
                        lowpass_weight: float = 0.0, pool: int = 8) -> dict:
    """Per-pixel L1 and L2 terms in fp32 and their weighted sum ("rec"); with lowpass_weight > 0 also the L2
    of `pool` x `pool` average-pooled images, which weights each patch's mean colour more (GroupNorm
    networks are slow to learn to carry it, and it dominates PSNR early in training)."""
    diff = recon.float() - x.float()
    l1, l2 = diff.abs().mean(), diff.square().mean()
    out = {"rec": l1_weight * l1 + l2_weight * l2, "l1": l1.detach(), "mse": l2.detach()}
    if lowpass_weight > 0:
        low = F.avg_pool2d(diff, pool).square().mean()
        out["rec"] = out["rec"] + lowpass_weight * low
        out["lowpass"] = low.detach()
    return out


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    disc_weight: float) -> torch.Tensor:
    """λ from the gradient norms of the two losses at the decoder's last layer (no gradient through λ)."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = rec_grad.float().norm() / (g_grad.float().norm() + 1e-4)
    return weight.clamp(0.0, 1e4).detach() * disc_weight
