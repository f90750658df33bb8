"""How the encoder gets a gradient through the non-differentiable code choice.

straight-through (VQ-VAE): the forward value is the code q, the gradient w.r.t. z is passed unchanged.
rotation trick (Fifty et al. 2024, "Restructuring Vector Quantization with the Rotation Trick"): the forward
value is still q, written as a rotation-and-rescale of z (treated as constants), so the gradient reaching z is
rotated and scaled like the map from z to q.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def straight_through(z: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return z + (q - z).detach()


def rotation_trick(z: torch.Tensor, q: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """lambda * R z with R the rotation taking z/|z| to q/|q| (Householder form) and lambda = |q|/|z|,
    both detached. Rows are vectors (..., D)."""
    z_norm = z.norm(dim=-1, keepdim=True).clamp_min(eps)
    q_norm = q.norm(dim=-1, keepdim=True).clamp_min(eps)
    u = (z / z_norm).detach()
    w = (q / q_norm).detach()
    r = F.normalize(u + w, dim=-1, eps=eps)
    scale = (q_norm / z_norm).detach()
    rotated = z - 2.0 * (z * r).sum(-1, keepdim=True) * r + 2.0 * (z * u).sum(-1, keepdim=True) * w
    return scale * rotated
