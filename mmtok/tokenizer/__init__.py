"""The one tokenizer protocol and the layers every tokenizer family shares.

- `protocol`: what a tokenizer is (`CodeSpec`: modality, code axes, codebooks, rates) and does (`Tokenizer`).
- `folder`: mmtok's own saved layout (`config.json` with a format marker + `model.safetensors`), for every family.
- `weights`: reading published weight files (safetensors, weights-only torch pickles, sharded indexes) and
  loading them into a module strictly, listing every key or shape that differs.
- `registry`: the layouts `mmtok.load` recognises, detected from a file's or folder's contents.

This package sits below the tokenizer families (`mmtok.image`, `mmtok.audio`, `mmtok.video`) and above
`mmtok.quantize`; `mmtok.stream`, `mmtok.data` and the CLI use tokenizers only through it.
"""
from __future__ import annotations

from .protocol import CodeSpec, StreamingVideoEncoder, Tokenizer, code_spec_of, expect_modality
from .registry import LAYOUTS, Layout, detect_layout, layout_names, load

__all__ = ["CodeSpec", "Tokenizer", "StreamingVideoEncoder", "code_spec_of", "expect_modality", "LAYOUTS", "Layout",
           "detect_layout", "layout_names", "load"]
