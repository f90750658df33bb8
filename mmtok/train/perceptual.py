"""LPIPS perceptual distance (Zhang et al. 2018, VGG16 variant) built from weights the user supplies.

Nothing is downloaded: `LPIPS.from_file("vgg16.pth,lpips_vgg.pth")` takes local files holding torchvision's
VGG16 keys (`features.{i}.weight/bias`) and the LPIPS linear heads (`lin{k}.model.1.weight`), in one file or
several (comma-separated; .pt/.pth or .safetensors). Layout and constants follow the published LPIPS model:
input scaling, relu1_2 .. relu5_3 features, channel-wise unit normalisation, 1x1 linear heads, spatial mean.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from ..tokenizer.weights import read_safetensors, read_torch_pickle

# VGG16 "D" configuration (torchvision `features` indices follow from it); "M" is a 2x2 max-pool
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_TAPS = (3, 8, 15, 22, 29)  # indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in `features`
_CHANNELS = (64, 128, 256, 512, 512)
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def _vgg16_features() -> nn.Sequential:
    layers, channels = [], 3
    for item in _VGG16:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=False)]
            channels = item
    return nn.Sequential(*layers)


class _Linear(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))  # index 0: dropout upstream

    def forward(self, x):
        return self.model(x)


class LPIPS(nn.Module):
    """forward(x, y) with images in [-1, 1] -> per-image distance (B,); frozen (no parameter trains)."""

    def __init__(self):
        super().__init__()
        self.features = _vgg16_features()
        for k, c in enumerate(_CHANNELS):
            self.add_module(f"lin{k}", _Linear(c))
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)

    @classmethod
    def from_file(cls, paths: str) -> "LPIPS":
        state: dict = {}
        for path in [p.strip() for p in str(paths).split(",") if p.strip()]:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"LPIPS weights not found: {path}")
            if path.endswith(".safetensors"):
                part = read_safetensors(path)
            else:
                part = read_torch_pickle(path)  # weights only: a hostile pickle is refused, naming the file
                part = part.get("state_dict", part) if isinstance(part, dict) else part
            if not isinstance(part, dict) or not all(isinstance(v, torch.Tensor) for v in part.values()):
                raise ValueError(f"{path}: LPIPS weights must be a state dict of tensors")
            state.update({str(k).removeprefix("module."): v for k, v in part.items()})
        model = cls()
        expected = model.state_dict()
        wanted = [k for k in expected if k not in ("shift", "scale")]
        missing = [k for k in wanted if k not in state]
        if missing:
            raise ValueError(f"LPIPS weights {paths}: missing keys {missing[:6]}{' ...' if len(missing) > 6 else ''} "
                             "(expected torchvision VGG16 `features.*` and LPIPS `lin{k}.model.1.weight`)")
        model.load_state_dict({k: state[k].float() if k in state else v for k, v in expected.items()
                               if k in wanted or k in ("shift", "scale")}, strict=True)
        return model

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, h = [], (x - self.shift) / self.scale
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in _TAPS:
                out.append(h)
                if i == _TAPS[-1]:
                    break
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for k, (fx, fy) in enumerate(zip(self._taps(x), self._taps(y))):
            fx = fx / (fx.square().sum(1, keepdim=True).sqrt() + 1e-10)
            fy = fy / (fy.square().sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + getattr(self, f"lin{k}")((fx - fy).square()).mean((2, 3))
        return total.flatten()
