"""Images in (PIL images or file paths) -> float tensors in [-1, 1], as VQ-GANs were trained; and back.

Modes:
- "center_crop": resize the short side to `size`, crop the centre square (the taming / LlamaGen recipe).
- "pad": resize the long side to `size`, keep the aspect ratio and pad to a square with `pad_value`.
- "native": keep the image's own size and aspect (or scale the short side to `size` when given), rounded to
  a multiple of the downsample factor so the code grid is exact (non-square grids).
Downscaling first halves with a box filter while the image is at least twice the target, then resamples
bicubically (as LlamaGen's / ADM's center_crop_arr), which avoids aliasing on large photos.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..paths import regular_file
from .bitdepth import to_rgb

MODES = ("center_crop", "pad", "native")


def open_image(item, index: int = 0) -> Image.Image:
    """A PIL image or a path -> 8-bit RGB PIL image (16-bit and float images scaled by their range, see
    bitdepth); FileNotFoundError / ValueError (or the OSError of `mmtok.paths.regular_file`) naming the input."""
    if isinstance(item, Image.Image):
        return item if item.mode == "RGB" else to_rgb(item, f"images[{index}]")
    if isinstance(item, (str, os.PathLike)):
        path = os.fspath(regular_file(item, "image"))  # names a loop, a device, a FIFO, a permission problem
        try:
            with Image.open(path) as img:
                return to_rgb(img, path)
        except OSError as exc:
            raise ValueError(f"{path}: not a readable image ({exc})") from exc
    raise ValueError(f"images[{index}]: expected a PIL image or a path, got {type(item).__name__}")


def _resize(img: Image.Image, width: int, height: int) -> Image.Image:
    while img.width >= 2 * width and img.height >= 2 * height:
        img = img.resize((img.width // 2, img.height // 2), resample=Image.BOX)
    if img.size != (width, height):
        img = img.resize((width, height), resample=Image.BICUBIC)
    return img


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) float32 in [-1, 1] (u8 / 127.5 - 1)."""
    array = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def center_crop(img: Image.Image, size: int) -> torch.Tensor:
    scale = size / min(img.size)
    width, height = max(size, round(img.width * scale)), max(size, round(img.height * scale))
    img = _resize(img, width, height)
    left, top = (width - size) // 2, (height - size) // 2
    return to_tensor(img.crop((left, top, left + size, top + size)))


def pad_to_square(img: Image.Image, size: int, pad_value: float) -> torch.Tensor:
    scale = size / max(img.size)
    width, height = min(size, max(1, round(img.width * scale))), min(size, max(1, round(img.height * scale)))
    x = to_tensor(_resize(img, width, height))
    left, top = (size - width) // 2, (size - height) // 2
    return F.pad(x, (left, size - width - left, top, size - height - top), value=pad_value)


def native(img: Image.Image, size: int | None, factor: int) -> torch.Tensor:
    width, height = img.size
    if size is not None:
        scale = size / min(width, height)
        width, height = width * scale, height * scale
    width = max(factor, int(round(width / factor)) * factor)
    height = max(factor, int(round(height / factor)) * factor)
    return to_tensor(_resize(img, width, height))


def as_items(images) -> list:
    """One image (a PIL image or a path) or a sequence of them, as a list."""
    single = isinstance(images, (str, os.PathLike, Image.Image)) or not isinstance(images, Sequence)
    return [images] if single else list(images)


def image_batch(images, *, factor: int, size: int | None, mode: str, channels: int = 3) -> torch.Tensor:
    """What a tokenizer's `encode(images)` takes, as a float32 (B, C, H, W) batch: a float tensor in [-1, 1]
    ((C, H, W) or (B, C, H, W), sides multiples of `factor`) used as is, or PIL images / paths through
    `preprocess` (mode, size). ValueError naming what is wrong."""
    if isinstance(images, torch.Tensor):
        x = images.unsqueeze(0) if images.dim() == 3 else images
        if x.dim() != 4 or x.shape[1] != channels or not x.is_floating_point():
            raise ValueError(f"images must be a float (B, {channels}, H, W) tensor in [-1, 1], got "
                             f"{tuple(images.shape)} {images.dtype}")
        if x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(f"images of size {tuple(x.shape[2:])} are not multiples of the downsample factor {factor}")
        return x.to(torch.float32)
    return preprocess(as_items(images), size=size, mode=mode, factor=factor)


def preprocess(images: Sequence, *, size: int | None, mode: str, factor: int, pad_value: float = -1.0) -> torch.Tensor:
    """A list of PIL images / paths -> (B, 3, H, W) float32 in [-1, 1]."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
        raise ValueError(f"size must be a positive int, got {size!r}")
    if mode != "native" and size is None:
        raise ValueError(f"mode={mode!r} needs a size")
    if mode != "native" and size % factor:
        raise ValueError(f"size={size} is not a multiple of the downsample factor {factor}")
    if len(images) == 0:
        raise ValueError("images is empty")
    tensors = []
    for i, item in enumerate(images):
        img = open_image(item, i)
        if mode == "center_crop":
            tensors.append(center_crop(img, size))
        elif mode == "pad":
            tensors.append(pad_to_square(img, size, pad_value))
        else:
            tensors.append(native(img, size, factor))
    shapes = sorted({tuple(t.shape[1:]) for t in tensors})
    if len(shapes) > 1:
        raise ValueError(
            f"mode='native' gave different sizes {shapes} for one batch; encode images of different sizes one at a time"
        )
    return torch.stack(tensors)


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) float in [-1, 1] -> RGB PIL images (values clamped, rounded to uint8)."""
    array = images.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    array = array.permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(a)) for a in array]
