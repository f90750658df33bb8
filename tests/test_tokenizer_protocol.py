"""The Tokenizer protocol: CodeSpec's checks, and every shipped tokenizer describing its codes truthfully."""
from __future__ import annotations

import pathlib

import pytest
import torch

from mmtok.tokenizer import CodeSpec, Tokenizer, code_spec_of
from mmtok.tokenizer.protocol import StreamingVideoEncoder, expect_modality

LEGACY = pathlib.Path(__file__).parent / "data" / "legacy_folders"


def test_code_spec_validation():
    with pytest.raises(ValueError, match="modality"):
        CodeSpec("text", ("t",), (5,))
    with pytest.raises(ValueError, match="axes"):
        CodeSpec("image", ("w", "h"), (5,))
    assert CodeSpec("video", ("time", "height", "width"), (5,)).axes == ("t", "h", "w")  # draft names
    with pytest.raises(ValueError, match="axes"):
        CodeSpec("audio", ("t",), (5,))
    with pytest.raises(ValueError, match="'codebook' axis"):
        CodeSpec("image", ("h", "w"), (5, 5))
    with pytest.raises(ValueError, match="positive"):
        CodeSpec("image", ("h", "w"), (0,))
    with pytest.raises(ValueError, match="one positive factor per axis"):
        CodeSpec("video", ("t", "h", "w"), (7,), (8, 8))
    with pytest.raises(ValueError, match="sample_rate"):
        CodeSpec("audio", ("codebook", "t"), (7,), (320,), sample_rate=0)


def test_code_spec_factors():
    video = CodeSpec("video", ("t", "h", "w"), (300,), (4, 8, 16), image_size=64)
    assert (video.temporal_downsample, video.spatial_downsample, video.factor("w")) == (4, 8, 16)
    image = CodeSpec("image", ("h", "w"), (9,), (16, 16))
    assert image.temporal_downsample == 1 and image.grid_axes == ("h", "w")
    audio = CodeSpec("audio", ("codebook", "t"), (3, 5), (320,), sample_rate=16000, frame_rate=50.0)
    assert audio.factor("t") == 320 and audio.num_codebooks == 2 and audio.codebook_size == 5
    with pytest.raises(ValueError, match="no axis"):
        audio.factor("h")
    assert audio.to_dict()["codebook_sizes"] == [3, 5]


def test_check_codes_per_codebook_ranges(seed):
    g = torch.Generator().manual_seed(seed)
    sizes = tuple(int(k) for k in torch.randint(2, 50, (3,), generator=g))
    spec = CodeSpec("audio", ("codebook", "t"), sizes, (320,), sample_rate=16000)
    codes = torch.stack([torch.randint(0, k, (11,), generator=g) for k in sizes])
    assert spec.check_codes(codes).shape == (1, 3, 11)  # one clip gains the batch axis
    assert spec.check_codes(codes[None].int()).dtype == torch.int64
    bad = codes.clone()
    bad[1, 4] = sizes[1]  # valid for a larger codebook, not this one
    with pytest.raises(ValueError, match=rf"code {sizes[1]} at \(0, 1, 4\) is outside 0..{sizes[1] - 1}"):
        spec.check_codes(bad)
    with pytest.raises(ValueError, match="2 codebooks"):
        spec.check_codes(codes[:2])
    with pytest.raises(ValueError, match="integer"):
        spec.check_codes(codes.float())
    with pytest.raises(ValueError, match=r"expected shape \(batch, codebook, t\)"):
        spec.check_codes(codes[0])
    video = CodeSpec("video", ("t", "h", "w"), (13,), (4, 8, 8))
    with pytest.raises(ValueError, match="-1"):
        video.check_codes(torch.full((2, 3, 4, 5), -1))


def _image_tokenizer():
    from mmtok.image import ImageTokenizer

    return ImageTokenizer.from_pretrained(LEGACY / "image_taming")


def test_image_tokenizer_follows_protocol(seed):
    tok = _image_tokenizer()
    assert isinstance(tok, Tokenizer)
    spec = code_spec_of(tok)
    assert (spec.modality, spec.axes, spec.codebook_sizes, spec.image_size) == ("image", ("h", "w"), (80,), 20)
    f = spec.spatial_downsample
    images = torch.rand(2, 3, 3 * f, 5 * f) * 2 - 1
    codes = tok.encode(images)
    assert codes.shape == (2, 3, 5) and codes.dtype == torch.int64
    spec.check_codes(codes)
    assert tok.decode(codes).shape == images.shape
    assert set(tok.state_dict()) == set(tok.model.state_dict())


def test_audio_tokenizers_follow_protocol(seed):
    from mmtok.audio.codec import AudioCodec
    from mmtok.audio.tokenizer import AudioTokenizer

    bestrq = AudioTokenizer(seed=seed % 1000, num_codebooks=2, num_codes=64, code_dim=8)
    codec = AudioCodec.from_pretrained(LEGACY / "audio_codec")
    for tok in (bestrq, codec):
        assert isinstance(tok, Tokenizer)
        spec = code_spec_of(tok)
        wave = 0.1 * torch.randn(spec.sample_rate // 2)
        with torch.no_grad():
            codes = tok.encode(wave, spec.sample_rate)
        assert codes.shape[0] == spec.num_codebooks
        assert abs(codes.shape[1] - wave.numel() / spec.factor("t")) <= 1
        assert spec.frame_rate == pytest.approx(spec.sample_rate / spec.factor("t"))
        spec.check_codes(codes)
    assert not bestrq.code_spec.decodable and codec.code_spec.decodable
    with pytest.raises(TypeError, match="cannot be decoded"):
        bestrq.decode(torch.zeros(2, 3, dtype=torch.long))
    assert expect_modality(codec, "audio", decodable=True) is not None
    with pytest.raises(ValueError, match="cannot"):
        expect_modality(codec, "audio", "--audio-tokenizer", decodable=False)


def test_non_tokenizers_are_named():
    with pytest.raises(TypeError, match="--image-tokenizer: dict does not follow"):
        code_spec_of({}, "--image-tokenizer")
    with pytest.raises(ValueError, match="expected a video tokenizer, got a image one"):
        expect_modality(_image_tokenizer(), "video", "--video-tokenizer")


def test_streaming_video_encoder_protocol():
    class Streams:
        def encode_stream(self, chunks):
            yield from ()

    assert isinstance(Streams(), StreamingVideoEncoder)
    assert not isinstance(_image_tokenizer(), StreamingVideoEncoder)
