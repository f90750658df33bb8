"""Originals-vs-reconstructions grids: the picture `make demo` writes and the trainer's preview PNGs."""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from PIL import Image

from .metrics import psnr


def save_grid(rows: Sequence[torch.Tensor], path: str, *, pad: int = 2) -> str:
    """Each row a (N, 3, H, W) batch in [-1, 1] (same N, H, W); rows are stacked top to bottom, white gaps."""
    from ..image.preprocess import to_pil

    rows = [r.detach().float().cpu() for r in rows]
    n, _, h, w = rows[0].shape
    grid = Image.new("RGB", (n * w + (n + 1) * pad, len(rows) * h + (len(rows) + 1) * pad), "white")
    for r, batch in enumerate(rows):
        for c, img in enumerate(to_pil(batch)):
            grid.paste(img, (pad + c * (w + pad), pad + r * (h + pad)))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    grid.save(path)
    return path


def reconstruction_grid(tokenizer, paths: Sequence, out_png: str, *, size: int | None = None) -> dict:
    """Tokenize `paths` (center-cropped to `size`, default the tokenizer's image size), decode them back and
    write originals (top row) over reconstructions (bottom row) to `out_png`.

    Returns {"psnr": {name: dB}, "tokens": {name: tokens per image}, "grid": (h, w), "path": out_png}.
    """
    if not paths:
        raise ValueError("reconstruction_grid: no image paths given")
    size = size or tokenizer.image_size
    images = tokenizer.prepare_images(list(paths), size=size, mode="center_crop")
    codes = tokenizer.encode(images)
    recon = tokenizer.decode(codes)
    scores = psnr(images.cpu(), recon.cpu())
    names = [os.path.basename(os.fspath(p)) for p in paths]
    save_grid([images.cpu(), recon.cpu()], out_png)
    tokens = int(codes.shape[1] * codes.shape[2])
    return {"psnr": {n: round(float(s), 2) for n, s in zip(names, scores)},
            "tokens": {n: tokens for n in names}, "grid": tuple(codes.shape[1:]), "path": out_png}
