"""Any PIL image -> 8-bit RGB with its full value range mapped onto 0..255 (not clipped).

PIL's `convert("RGB")` clips high-depth single-channel images to 0..255: a full-range 16-bit PNG becomes
99.7% white. Here integer samples are scaled by their type's range (16-bit: v / 65535; 32-bit TIFFs by the
bits and sample format their tags declare), and float images must hold values in [0, 1] (the usual
convention) and are scaled by 255; a float image outside [0, 1], or a signed integer one with negative values,
has no agreed mapping to pixels and is refused with a ValueError naming it rather than silently saturated.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

_TIFF_BITS, _TIFF_SAMPLE_FORMAT = 258, 339  # BitsPerSample; SampleFormat (1 unsigned, 2 signed, 3 float)
_HIGH_DEPTH = ("I", "F")


def _integer_range(img: Image.Image, array: np.ndarray) -> tuple[int, bool]:
    """(bits, signed) of an 'I' / 'I;16*' image's samples as the file stored them."""
    if img.mode.startswith("I;16"):
        return 16, img.mode.endswith("S")
    tags = getattr(img, "tag_v2", None)
    if tags is not None and _TIFF_BITS in tags:
        bits = tags[_TIFF_BITS]
        bits = int(bits[0] if isinstance(bits, tuple) else bits)
        fmt = tags.get(_TIFF_SAMPLE_FORMAT, 1)
        return bits, int(fmt[0] if isinstance(fmt, tuple) else fmt) == 2
    if img.format == "PNG":  # PNG has no 32-bit samples: an "I" PNG came from 16-bit data
        return 16, False
    return (16 if array.size == 0 or int(array.max()) <= 65535 else 32), bool(array.size and array.min() < 0)


def to_rgb(img: Image.Image, name: str = "image") -> Image.Image:
    """`img` as a new 8-bit RGB image (a copy, so the source file may be closed); high-depth grey images
    scaled by their full range (see the module docstring)."""
    if not (img.mode in _HIGH_DEPTH or img.mode.startswith("I;16")):
        return img.convert("RGB")
    array = np.asarray(img)
    if img.mode == "F":
        array = array.astype(np.float64)
        if not np.isfinite(array).all():
            raise ValueError(f"{name}: float image holds NaN or infinite values")
        low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
        if low < 0.0 or high > 1.0:
            raise ValueError(f"{name}: float image with values in [{low:.4g}, {high:.4g}]; float images must lie "
                             "in [0, 1] (save it as 8- or 16-bit, or rescale it)")
        scaled = array * 255.0
    else:
        bits, signed = _integer_range(img, array)
        array = array.astype(np.float64)
        if signed and array.size and array.min() < 0:
            raise ValueError(f"{name}: signed {bits}-bit image with negative values ({array.min():.0f}); no "
                             "defined mapping to pixels (save it unsigned)")
        scaled = array * (255.0 / float(2 ** (bits - 1 if signed else bits) - 1))
    grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(np.stack([grey] * 3, axis=-1)), "RGB")
