"""Training images: photos held in memory, served as random crops at random scales with random flips.

Photos are decoded once and downscaled so their short side is at most `max_side` (big wallpapers would
otherwise be cropped at a scale far finer than the 256 px images the tokenizer is evaluated on). Each crop
picks a photo, a scale (short side between `min_side` and the stored size), a square window and a flip,
all from one `torch.Generator`, so a stream is reproducible from its seed and resumable from its state.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..image.bitdepth import to_rgb

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


def list_images(paths: Sequence[str]) -> list[str]:
    """Image files named directly or found (recursively, sorted) in directories; text files list one path a line."""
    found: list[str] = []
    for path in paths:
        path = os.fspath(path)
        if os.path.isdir(path):
            for root, _, files in sorted(os.walk(path)):
                found.extend(os.path.join(root, f) for f in sorted(files) if f.lower().endswith(IMAGE_SUFFIXES))
        elif os.path.isfile(path) and path.endswith(".txt"):
            base = os.path.dirname(path)
            with open(path, encoding="utf-8") as f:
                for line in f:
                    line = line.split("#", 1)[0].strip()
                    if line:
                        found.extend(list_images([line if os.path.isabs(line) else os.path.join(base, line)]))
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise FileNotFoundError(f"training images: {path} does not exist")
    if not found:
        raise ValueError(f"training images: no image files found in {list(paths)}")
    return found


def load_photo(path: str, max_side: int) -> torch.Tensor:
    """An image file -> uint8 (3, H, W) with min(H, W) <= max_side (box-filter downscaling)."""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (max_side * 2, max_side * 2))  # JPEG: decode at a reduced size directly
            img = to_rgb(img, path)
    except OSError as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from exc
    scale = max_side / min(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BOX)
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


class RandomCrops:
    """Batches of random square crops (B, 3, crop, crop) in [-1, 1] from a set of photos.

    Args:
        photos: uint8 (3, H, W) tensors (see `load_photo`), or paths / directories to load.
        crop: output crop size in pixels.
        min_side: smallest short side a photo is rescaled to before cropping (>= crop).
        max_side: photos are stored with their short side at most this.
        seed: seeds the generator; `state_dict` / `load_state_dict` save and restore its position.
        color_augment: probability of a colour augmentation per crop (a random permutation of the RGB
            channels and a random saturation in [0.5, 1.5]): a few dozen photos hold a narrow palette, and a
            tokenizer trained on them alone mis-colours held-out photos.
    """

    def __init__(self, photos, crop: int, *, min_side: int | None = None, max_side: int = 768, seed: int = 0,
                 color_augment: float = 0.0):
        if crop < 8:
            raise ValueError(f"crop must be >= 8 pixels, got {crop}")
        if photos and not isinstance(photos[0], torch.Tensor):
            photos = [load_photo(p, max_side) for p in list_images(photos)]
        if not photos:
            raise ValueError("RandomCrops needs at least one photo")
        self.photos = list(photos)
        self.crop = int(crop)
        self.min_side = max(self.crop, int(min_side or self.crop))
        self.generator = torch.Generator().manual_seed(int(seed))
        self.color_augment = float(color_augment)

    def _uniform(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def sample(self) -> torch.Tensor:
        """One crop (3, crop, crop) float32 in [-1, 1]."""
        photo = self.photos[int(torch.randint(len(self.photos), (), generator=self.generator))]
        height, width = photo.shape[1:]
        short = min(height, width)
        lo = min(self.min_side, short)
        target_short = lo + (short - lo) * self._uniform()  # short side after rescaling
        window = max(1, min(short, round(self.crop * short / max(target_short, self.crop))))  # source pixels
        top = int(torch.randint(height - window + 1, (), generator=self.generator))
        left = int(torch.randint(width - window + 1, (), generator=self.generator))
        x = photo[:, top:top + window, left:left + window].float().unsqueeze(0)
        if window != self.crop:
            x = F.interpolate(x, size=(self.crop, self.crop), mode="bilinear", antialias=window > self.crop,
                              align_corners=False)
        if self._uniform() < 0.5:
            x = x.flip(-1)
        if self.color_augment > 0 and self._uniform() < self.color_augment:
            x = x[:, torch.randperm(3, generator=self.generator)]
            grey = x.mean(1, keepdim=True)
            x = grey + (x - grey) * (0.5 + self._uniform())
        return x[0].clamp_(0, 255).div_(127.5).sub_(1.0)

    def batch(self, size: int) -> torch.Tensor:
        return torch.stack([self.sample() for _ in range(size)])

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
