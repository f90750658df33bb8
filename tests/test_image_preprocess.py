"""Image inputs: PIL images and paths, center_crop / pad / native modes, real photos at their own aspect ratio."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch
from PIL import Image

from mmtok import ImageTokenizer
from mmtok.image.preprocess import to_pil, to_tensor

DATA = pathlib.Path(__file__).parent / "data"
PHOTOS = DATA / "images"


@pytest.fixture(scope="module")
def tok():
    folder = DATA / "checkpoints" / "taming_tiny"
    return ImageTokenizer.from_taming(folder / "model.ckpt", folder / "config.yaml")


def _stripes(width, height, colors):
    """Vertical bands of solid colours, equal widths."""
    array = np.zeros((height, width, 3), dtype=np.uint8)
    band = width // len(colors)
    for i, color in enumerate(colors):
        array[:, i * band : (i + 1) * band] = color
    return Image.fromarray(array)


def test_center_crop_keeps_the_middle(tok):
    img = _stripes(300, 100, [(255, 0, 0), (0, 255, 0), (0, 0, 255)])
    x = tok.prepare_images([img], size=32, mode="center_crop")
    assert x.shape == (1, 3, 32, 32) and x.dtype == torch.float32
    inner = x[0, :, :, 3:-3]  # bicubic ringing may touch the outermost columns
    expected = torch.tensor([-1.0, 1.0, -1.0]).view(3, 1, 1)
    assert (inner - expected).abs().max() < 0.05
    tall = tok.prepare_images([img.transpose(Image.Transpose.ROTATE_90)], size=32, mode="center_crop")
    assert (tall[0, :, 3:-3, :] - expected).abs().max() < 0.05


def test_pad_keeps_aspect(tok, seed):
    gray = int(torch.randint(30, 220, ()).item())
    img = Image.new("RGB", (100, 50), (gray, gray, gray))
    x = tok.prepare_images([img], size=32, mode="pad")
    assert x.shape == (1, 3, 32, 32)
    assert torch.all(x[0, :, :8] == -1) and torch.all(x[0, :, 24:] == -1)
    assert (x[0, :, 8:24] - (gray / 127.5 - 1)).abs().max() < 1e-6
    x0 = tok.prepare_images([img], size=32, mode="pad", pad_value=0.0)
    assert torch.all(x0[0, :, :8] == 0)


def test_native_rounds_to_the_downsample_factor(tok):
    img = Image.new("RGB", (451, 301), (10, 200, 30))
    assert tok.prepare_images([img], mode="native").shape == (1, 3, 300, 452)
    assert tok.prepare_images([img], mode="native", size=64).shape == (1, 3, 64, 96)
    with pytest.raises(ValueError, match="one at a time"):
        tok.prepare_images([img, Image.new("RGB", (64, 64))], mode="native")
    with pytest.raises(ValueError, match="mode"):
        tok.prepare_images([img], mode="stretch")
    with pytest.raises(ValueError, match="multiple of the downsample factor"):
        tok.prepare_images([img], size=30)


def test_pixels_round_trip_exactly(seed):
    array = torch.randint(0, 256, (24, 40, 3), dtype=torch.uint8).numpy()
    x = to_tensor(Image.fromarray(array))
    assert x.min() >= -1 and x.max() <= 1
    back = to_pil(x.unsqueeze(0))[0]
    assert np.array_equal(np.asarray(back), array)


def test_pil_and_path_inputs_agree(tok):
    path = PHOTOS / "coffee.png"
    by_str = tok.encode(str(path), size=32)
    with Image.open(path) as img:
        by_pil = tok.encode([img.copy()], size=32)
        gray = img.convert("L")
    assert by_str.shape == (1, 8, 8)
    assert torch.equal(by_str, by_pil)
    mixed = tok.encode([path, PHOTOS / "rocket.jpg"], size=32)
    assert torch.equal(mixed[0], by_str[0]) and not torch.equal(mixed[0], mixed[1])
    assert tok.encode([gray], size=32).shape == (1, 8, 8)  # converted to RGB


def test_missing_or_unreadable_images(tok, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        tok.encode([tmp_path / "nope.png"])
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.png"):
        tok.encode([bad])
    with pytest.raises(ValueError, match=r"images\[1\]"):
        tok.encode([PHOTOS / "coffee.png", 3])


def test_real_photo_native_aspect(tok):
    """chelsea.png (451x300) keeps its 3:2 aspect: short side 64 -> a 16x24 code grid, decoded to 64x96 pixels."""
    photo = PHOTOS / "chelsea.png"
    assert tok.prepare_images([photo], mode="native").shape == (1, 3, 300, 452)  # own size, rounded to f=4
    x = tok.prepare_images([photo], mode="native", size=64)
    assert x.shape == (1, 3, 64, 96)
    codes = tok.encode([photo], mode="native", size=64)
    assert codes.shape == (1, 16, 24)
    assert 0 <= int(codes.min()) and int(codes.max()) < tok.num_codes
    assert len(torch.unique(codes)) > 20
    assert torch.equal(tok.encode(x), codes)  # the same pixels given as a tensor give the same codes
    pil = tok.decode_to_pil(codes)[0]
    assert pil.size == (96, 64) and pil.mode == "RGB"
    assert np.asarray(pil).std() > 1.0
