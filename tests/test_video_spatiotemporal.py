"""Spatio-temporal video tokenizers (codes (B, t, h, w)) through the protocol: VideoTokenizer's chunked mode,
token streams (latent frames as Video frames, Video.pixels on decode) and `tokenize --video-tokenizer`.
Uses the tiny Emu3 fixture (tests/data/emu3) at 16-pixel frames to stay fast."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch

import mmtok
from mmtok.video.tokenizer import encode_frames_spatiotemporal

DATA = pathlib.Path(__file__).parent / "data"
SIZE = 16


@pytest.fixture(scope="module")
def emu3():
    return mmtok.load(DATA / "emu3" / "model")


class _OnePass:
    """The same tokenizer without encode_stream: VideoTokenizer must then encode the clip in one call."""

    def __init__(self, tok):
        self.tok = tok
        self.code_spec = tok.code_spec

    def encode(self, video):
        return self.tok.encode(video)


def test_chunked_clip_equals_one_pass_with_padding_and_latent_timestamps(emu3, seed):
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(7, 3, SIZE, SIZE, generator=g) * 2 - 1          # 7 frames: the last group is padded
    stamps = [0.25 * i for i in range(7)]
    padded = torch.cat([frames, frames[-1:]]).unsqueeze(0)
    expected = emu3.encode(padded)[0]
    for chunk in (4, 5):   # 5 rounds down to one group of f_t = 4
        parts = list(encode_frames_spatiotemporal(emu3, zip(stamps, frames), chunk))
        assert len(parts) == 2
        assert torch.equal(torch.cat([c for _, c in parts]), expected)
        assert torch.cat([t for t, _ in parts]).tolist() == [0.0, 1.0]
    (only,) = list(encode_frames_spatiotemporal(_OnePass(emu3), zip(stamps, frames), 4))
    assert torch.equal(only[1], expected)
    with pytest.raises(ValueError, match="expected a video tokenizer"):
        list(encode_frames_spatiotemporal(mmtok.load(DATA / "legacy_folders" / "image_l2"), iter(()), 4))


def test_video_tokenizer_stream_and_decode(emu3, tmp_path):
    from data_fixtures import write_video

    from mmtok.stream import TokenStream
    from mmtok.stream.segments import Video

    write_video(tmp_path / "clip.mp4", np.random.default_rng(0), seconds=1.0, fps=10, size=(24, 20),
                with_audio=False)
    video = mmtok.VideoTokenizer(emu3, fps=None, max_frames=6, size=SIZE, batch_size=4)
    assert video.spatiotemporal and video.temporal_factor == 4
    tokens = video.encode(tmp_path / "clip.mp4")
    assert tokens.frame_codes.shape == (2, SIZE // 4, SIZE // 4)            # 6 frames -> 2 latent frames
    sampled = list(video.sample(tmp_path / "clip.mp4"))
    assert tokens.timestamps.tolist() == pytest.approx([sampled[0].timestamp, sampled[4].timestamp])
    pixels = video._frame_pixels(sampled)
    clip = torch.cat([pixels, pixels[-1:].expand(2, -1, -1, -1)]).unsqueeze(0)
    assert torch.equal(tokens.frame_codes, emu3.encode(clip)[0])
    with pytest.raises(ValueError, match="center_crop"):
        mmtok.VideoTokenizer(emu3, size=SIZE, mode="pad")

    stream = TokenStream.from_tokenizers(video_tokenizer=emu3, max_grid=8)
    ids = stream.encode([Video.from_tokens(tokens)])
    (decoded,) = stream.decode(ids, decode_images=True)
    assert decoded.frames[0].pixels is None
    assert torch.equal(decoded.pixels, emu3.decode(tokens.frame_codes[None])[0])
    assert decoded.pixels.shape == (8, 3, SIZE, SIZE)


def test_streams_refuse_tokenizers_of_the_wrong_kind(emu3):
    from mmtok.audio import AudioTokenizer
    from mmtok.stream import TokenStream, Vocabulary

    image = mmtok.load(DATA / "legacy_folders" / "image_l2")  # 96 codes, emu3 has 300
    with pytest.raises(ValueError, match="would share the vocabulary's image range"):
        Vocabulary.from_tokenizers(image_tokenizer=image, video_tokenizer=emu3)
    with pytest.raises(ValueError, match="image_tokenizer: expected a image tokenizer, got a audio one"):
        Vocabulary.from_tokenizers(image_tokenizer=AudioTokenizer(num_codes=64))
    with pytest.raises(ValueError, match="audio_codec: expected a tokenizer whose codes can be decoded"):
        Vocabulary.from_tokenizers(audio_codec=AudioTokenizer(num_codes=64))
    vocab = Vocabulary.from_tokenizers(image_tokenizer=image)
    with pytest.raises(ValueError, match="video tokenizer has 1x300 codes but the vocabulary reserves 1x96"):
        TokenStream(vocab, video_tokenizer=emu3)
    with pytest.raises(TypeError, match="does not follow the mmtok Tokenizer protocol"):
        TokenStream(vocab, image_tokenizer=object())


def test_tokenize_dataset_with_a_video_tokenizer(emu3, tmp_path):
    from data_fixtures import write_video

    from mmtok.data import TokenShards

    (tmp_path / "in").mkdir()
    write_video(tmp_path / "in" / "clip.mp4", np.random.default_rng(1), seconds=0.8, fps=10, size=(20, 20),
                with_audio=False)
    from mmtok.__main__ import main

    # through the CLI: --video-tokenizer takes anything mmtok.load reads
    assert main(["tokenize", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--video-tokenizer",
                 str(DATA / "emu3" / "model"), "--image-size", str(SIZE), "--video-max-frames", "5",
                 "--video-fps", "100", "--workers", "0", "--no-progress", "--max-grid", "8"]) == 0
    shards = TokenShards(tmp_path / "out")
    assert set(shards.manifest["tokenizers"]) == {"video"}
    sample = shards[0]
    assert sample.grid == [SIZE // 4, SIZE // 4] and len(sample.timestamps) == 2   # 5 frames -> 2 latent frames
    (video,) = shards.segments(0)
    codes = torch.stack([f.codes for f in video.frames])
    frames = shards.decode(0)
    assert len(frames) == 8 and torch.equal(torch.stack(frames), emu3.decode(codes[None])[0])
