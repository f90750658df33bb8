"""The stream command-line tools, driven through their argparse registration."""
from __future__ import annotations

import argparse
import json
import random

import numpy as np
import torch
from PIL import Image as PILImage

from mmtok.stream import TokenStream, Video, Vocabulary
from mmtok.stream import cli


def run(argv) -> int:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def test_qwen_vl_and_video_commands(seed, tmp_path, data_dir):
    from mmtok.image import ImageTokenizer

    root = data_dir / "checkpoints/llamagen_tiny"
    tokenizer = ImageTokenizer.from_llamagen(root / "model.pt", config_path=root / "config.json")
    tokenizer.save_pretrained(tmp_path / "image_tok")
    pixels = np.random.default_rng(random.randrange(2**32)).integers(0, 256, (48, 72, 3), dtype=np.uint8)
    PILImage.fromarray(pixels).save(tmp_path / "p.png")
    (tmp_path / "conv.json").write_text(json.dumps([{"id": "a", "conversations": [
        {"from": "user", "value": "Picture 1: <img>p.png</img>\nWhat is it?"},
        {"from": "assistant", "value": "<ref>noise</ref><box>(0,0),(999,999)</box>"}]}]))
    assert run(["qwen-vl-tokens", tmp_path / "conv.json", "--image-tokenizer", tmp_path / "image_tok",
                "--out", tmp_path / "out/conv.jsonl"]) == 0
    row = json.loads((tmp_path / "out/conv.jsonl").read_text())
    vocab = Vocabulary.load(tmp_path / "out/vocab.json", expected_hash=row["vocab_hash"])
    stream = TokenStream(vocab, image_tokenizer=tokenizer)
    decoded = stream.decode(row["ids"], vocab_hash=row["vocab_hash"])
    assert torch.equal(decoded[1].codes, tokenizer.encode([str(tmp_path / "p.png")])[0])

    import av

    with av.open(str(tmp_path / "v.mkv"), "w") as container:
        video = container.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        for i in range(15):
            frame = av.VideoFrame.from_ndarray(np.roll(pixels[:64, :64], 3 * i, axis=1).copy(), format="rgb24")
            container.mux(video.encode(frame))
        container.mux(video.encode())
    assert run(["video-tokens", tmp_path / "v.mkv", "--image-tokenizer", tmp_path / "image_tok", "--fps", "4",
                "--out", tmp_path / "out/video.jsonl"]) == 0
    row = json.loads((tmp_path / "out/video.jsonl").read_text())
    np.testing.assert_allclose(row["timestamps"], [0.0, 0.2, 0.5, 0.7, 1.0, 1.2], atol=1e-9)  # ties: earlier
    (segment,) = stream.decode(row["ids"], vocab_hash=row["vocab_hash"])
    assert isinstance(segment, Video) and [f.timestamp for f in segment.frames] == row["timestamps"]
