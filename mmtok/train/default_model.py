"""The default image tokenizer shipped inside the package (trained by `mmtok train-vqgan`, see
docs/training.md): loaded from package data, so it works offline on a fresh install."""
from __future__ import annotations

import os

DEFAULT_MODEL_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets",
                                 "default_image_tokenizer")


def load_default_image_tokenizer(**kwargs):
    """`ImageTokenizer.from_pretrained` on the shipped weights (kwargs: dtype=, device=, channels_last=)."""
    from ..image import ImageTokenizer

    if not os.path.isfile(os.path.join(DEFAULT_MODEL_DIR, "model.safetensors")):
        raise FileNotFoundError(f"the default image tokenizer is missing from this install ({DEFAULT_MODEL_DIR}); "
                                "reinstall mmtok, or train one with `mmtok train-vqgan`")
    return ImageTokenizer.from_pretrained(DEFAULT_MODEL_DIR, **kwargs)
