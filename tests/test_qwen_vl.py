"""Qwen-VL conversation files: images tokenized in place, grounding boxes kept as text."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from mmtok.stream import Image, Text, TokenStream

CKPT = "checkpoints/llamagen_tiny"


@pytest.fixture(scope="module")
def stream():
    import pathlib

    from mmtok.image import ImageTokenizer

    root = pathlib.Path(__file__).parent / "data" / CKPT
    tokenizer = ImageTokenizer.from_llamagen(root / "model.pt", config_path=root / "config.json")
    return TokenStream.from_tokenizers(image_tokenizer=tokenizer)


def random_picture(path, size):
    pixels = np.random.default_rng(random.randrange(2**32)).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    PILImage.fromarray(pixels).save(path)
    return path


def expected_ids(stream, pieces) -> list[int]:
    """The layout written out by hand: bytes for text, header + rows + end-of-row for images."""
    v = stream.vocab
    offset = v.codebooks("image")[0].offset
    ids = [v.special("bos")]
    for piece in pieces:
        if isinstance(piece, str):
            ids += list(piece.encode("utf-8"))
        else:
            h, w = piece.shape
            ids += [v.special("image_begin"), v.resolution_offset + h - 1, v.resolution_offset + w - 1]
            for row in piece.tolist():
                ids += [offset + c for c in row] + [v.special("end_of_row")]
            ids.append(v.special("image_end"))
    return ids + [v.special("eos")]


def test_conversation_file_becomes_the_expected_stream(seed, tmp_path, stream):
    (tmp_path / "imgs").mkdir()
    first = random_picture(tmp_path / "imgs" / "a.png", (80, 64))
    second = random_picture(tmp_path / "b.jpg", (64, 96))
    box = "<ref>the red car</ref><box>(105,212),(640,999)</box>"
    records = [{"id": "identity_0", "conversations": [
        {"from": "user", "value": "Picture 1: <img>imgs/a.png</img>\nPicture 2: <img>" + str(second) +
                                  "</img>\nWhere is the red car?"},
        {"from": "assistant", "value": box},
    ]}]
    path = tmp_path / "conv.json"
    path.write_text(json.dumps(records))
    (sample_id, ids), = stream.encode_qwen_vl(path)
    codes = stream.image_tokenizer.encode([str(first), str(second)])
    assert sample_id == "identity_0"
    assert list(ids) == expected_ids(stream, [
        "<|im_start|>user\nPicture 1: ", codes[0], "\nPicture 2: ", codes[1],
        "\nWhere is the red car?<|im_end|>\n<|im_start|>assistant\n" + box + "<|im_end|>\n"])
    decoded = stream.decode(ids)
    assert [type(s) for s in decoded] == [Text, Image, Text, Image, Text]
    assert decoded[4].text.endswith(box + "<|im_end|>\n")
    assert torch.equal(decoded[1].codes, codes[0])


def test_conversation_file_errors(tmp_path, stream):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"id": 7, "conversations": [{"from": "user", "value": "<img>nope.png</img>"}]}]))
    with pytest.raises(FileNotFoundError, match="id 7.*nope.png"):
        stream.encode_qwen_vl(path)
    path.write_text(json.dumps([{"id": 8, "conversations": [
        {"from": "user", "value": "<ref>x</ref><box>(10,20),(300,1000)</box>"}]}]))
    with pytest.raises(ValueError, match="outside \\[0, 1000\\)"):
        stream.encode_qwen_vl(path)
    path.write_text(json.dumps({"id": 1}))
    with pytest.raises(ValueError, match="JSON list"):
        stream.encode_qwen_vl(path)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        stream.encode_qwen_vl(tmp_path / "missing.json")
