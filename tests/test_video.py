"""VideoTokenizer on a video written here with PyAV: 10 s, 25 fps, 96x64, moving shapes, a 440 Hz sine.

Each frame also shows its index as 8 black/white blocks (a binary clock), so every sampled frame's
content is checked against its timestamp, and the sampled times against a float64 nearest-frame reference.
"""
from __future__ import annotations

import fractions
import random

import av
import numpy as np
import pytest
import torch

from mmtok.stream import Frame, TokenStream, Video
from mmtok.video import VideoTokenizer, iter_audio_chunks, iter_frames, probe, tokenize_audio_track

SECONDS, FPS, WIDTH, HEIGHT, RATE, GOP, TONE = 10, 25, 96, 64, 16000, 25, 440.0
N_FRAMES = SECONDS * FPS
CKPT = "checkpoints/llamagen_tiny"


def square_column(index: int) -> int:
    return round(index * (WIDTH - 8) / (N_FRAMES - 1))


def draw(index: int, background: np.ndarray) -> np.ndarray:
    image = background.copy()
    for bit in range(8):  # the frame index in binary, one 8x8 block per bit
        image[0:8, 8 * bit: 8 * bit + 8] = 255 if index >> bit & 1 else 0
    x = square_column(index)
    image[10:26, x: x + 8] = (250, 30, 30)  # a square moving left to right
    y = 30 + round(20 * np.sin(index / 9))
    image[y: y + 10, (3 * index) % (WIDTH - 10):][:, :10] = (30, 220, 60)  # a second shape, bobbing
    return image


def write_video(path, seconds: int = SECONDS):
    """H.264 + AAC in MP4, what phones and the web produce."""
    rng = np.random.default_rng()
    background = rng.integers(0, 90, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS, options={
            "g": str(GOP), "keyint_min": str(GOP), "sc_threshold": "0", "preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        audio = container.add_stream("aac", rate=RATE, layout="mono")
        for i in range(seconds * FPS):
            frame = av.VideoFrame.from_ndarray(draw(i, background), format="rgb24")
            frame.pts, frame.time_base = i, fractions.Fraction(1, FPS)
            container.mux(video.encode(frame))
        container.mux(video.encode())
        t = np.arange(seconds * RATE) / RATE
        wave = (0.4 * np.sin(2 * np.pi * TONE * t)).astype(np.float32)
        for start in range(0, wave.size, 1024):
            frame = av.AudioFrame.from_ndarray(wave[None, start: start + 1024], format="flt", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = RATE, start, fractions.Fraction(1, RATE)
            container.mux(audio.encode(frame))
        container.mux(audio.encode())
    return path


@pytest.fixture(scope="module")
def video_path(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "shapes.mp4")


@pytest.fixture(scope="module")
def decoded_frames(video_path):
    """Every frame as RGB, decoded independently of the sampler."""
    with av.open(str(video_path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def frame_index_of(rgb: np.ndarray) -> int:
    """Which frame this is, read back from its binary clock."""
    return sum(1 << bit for bit in range(8) if rgb[2:6, 8 * bit + 2: 8 * bit + 6].mean() > 128)


def nearest_reference(targets) -> list[int]:
    """float64: for each target time, the nearest frame (ties to the earlier), each frame once."""
    times = np.arange(N_FRAMES, dtype=np.float64) / FPS
    chosen = []
    for target in targets:
        if target > times[-1]:
            break
        index = int(np.argmin(np.round(np.abs(times - target), 9)))  # exact ties: earlier
        if not chosen or chosen[-1] != index:
            chosen.append(index)
    return chosen


@pytest.fixture(scope="module")
def image_tokenizer(data_dir_module):
    from mmtok.image import ImageTokenizer

    return ImageTokenizer.from_llamagen(data_dir_module / CKPT / "model.pt",
                                        config_path=data_dir_module / CKPT / "config.json")


@pytest.fixture(scope="module")
def data_dir_module():
    import pathlib

    return pathlib.Path(__file__).parent / "data"


def test_probe_and_every_frame(video_path, decoded_frames):
    info = probe(video_path)
    assert (info.width, info.height, info.fps, info.has_audio) == (WIDTH, HEIGHT, FPS, True)
    assert info.duration == pytest.approx(SECONDS, abs=0.05)
    stamps = [t for t, _ in iter_frames(video_path)]
    np.testing.assert_allclose(stamps, np.arange(N_FRAMES) / FPS, atol=1e-9)
    assert [frame_index_of(f) for f in decoded_frames] == list(range(N_FRAMES))


@pytest.mark.parametrize("fps", ["random", 2.0])
def test_fps_sampling_timestamps(seed, video_path, image_tokenizer, fps):
    fps = random.uniform(0.3, 12.0) if fps == "random" else fps
    sampler = VideoTokenizer(image_tokenizer, fps=fps)
    sampled = list(sampler.sample(video_path))
    expected = nearest_reference(k / fps for k in range(int(SECONDS * fps) + 2))
    assert [s.index for s in sampled] == list(range(len(expected)))
    np.testing.assert_allclose([s.timestamp for s in sampled], np.array(expected) / FPS, atol=1e-9)
    assert [frame_index_of(s.frame.to_ndarray(format="rgb24")) for s in sampled] == expected
    if fps == 2.0:
        assert len(sampled) == 20 and sampled[7].timestamp == pytest.approx(3.48)  # 3.5 s: a tie, earlier frame


def test_uniform_keyframes_and_max_frames(seed, video_path, image_tokenizer):
    count = random.randint(3, 12)
    tokenizer = VideoTokenizer(image_tokenizer, num_frames=count)
    sampled = list(tokenizer.sample(video_path))
    expected = nearest_reference((i + 0.5) * SECONDS / count for i in range(count))
    np.testing.assert_allclose([s.timestamp for s in sampled], np.array(expected) / FPS, atol=1e-9)
    keyframes = [s.timestamp for s in tokenizer.sample(video_path, num_frames=None, keyframes=True)]
    np.testing.assert_allclose(keyframes, np.arange(0, SECONDS, GOP / FPS), atol=1e-9)
    capped = list(tokenizer.sample(video_path, num_frames=None, fps=None, max_frames=7))
    np.testing.assert_allclose([s.timestamp for s in capped], np.arange(7) / FPS, atol=1e-9)
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        list(tokenizer.sample(video_path.parent / "missing.mp4"))
    with pytest.raises(ValueError, match="fps must be positive"):
        VideoTokenizer(image_tokenizer, fps=0)


def test_tokenize_frames_and_audio_track(seed, video_path, decoded_frames, image_tokenizer):
    from mmtok.audio import AudioTokenizer

    audio_tokenizer = AudioTokenizer(seed=random.randrange(1000))
    fps = random.choice([0.5, 0.75, 1.0])
    tokens = VideoTokenizer(image_tokenizer, audio_tokenizer, fps=fps, batch_size=3).encode(video_path)
    indices = nearest_reference(k / fps for k in range(int(SECONDS * fps) + 2))
    assert tokens.frame_codes.shape == (len(indices), 16, 16) and tokens.frame_codes.dtype == torch.int64
    np.testing.assert_allclose(tokens.timestamps.numpy(), np.array(indices) / FPS, atol=1e-9)
    # reference: the independently decoded frames, centre-cropped to 64x64 (no resize at this size), one by one
    left = (WIDTH - HEIGHT) // 2
    for n in random.sample(range(len(indices)), 2):
        crop = torch.from_numpy(decoded_frames[indices[n]][:, left: left + HEIGHT].copy())
        x = crop.permute(2, 0, 1)[None].double().div(127.5).sub(1).float()
        assert torch.equal(tokens.frame_codes[n], image_tokenizer.encode(x)[0])
    # audio: the track decodes to the sine and tokenizes exactly like a one-shot pass over it
    track = torch.cat(list(iter_audio_chunks(video_path, chunk_seconds=4.0)))
    assert abs(track.numel() - SECONDS * RATE) <= 2048
    spectrum = np.abs(np.fft.rfft(track.numpy()))
    assert np.argmax(spectrum) * RATE / track.numel() == pytest.approx(TONE, abs=1.0)
    assert tokens.audio_kind == "audio"
    assert torch.equal(tokens.audio_codes, audio_tokenizer.encode(track, RATE))
    assert abs(tokens.audio_codes.shape[1] - SECONDS * 25) <= 2
    # the whole video as one stream segment: ids round trip, frames decode to pixels
    stream = TokenStream.from_tokenizers(image_tokenizer=image_tokenizer, audio_tokenizer=audio_tokenizer)
    segment = Video.from_tokens(tokens)
    ids = stream.encode(["a clip: ", segment])
    decoded = stream.decode(ids, decode_images=True)
    assert decoded[1] == segment and stream.encode(decoded) == ids
    assert isinstance(decoded[1].frames[0], Frame) and decoded[1].frames[0].pixels.shape == (3, 64, 64)


def test_codec_audio_track_and_native_frames(seed, tmp_path, video_path, image_tokenizer, data_dir_module):
    from mmtok.audio.codec import AudioCodec

    codec = AudioCodec.from_dac(data_dir_module / "checkpoints/dac_tiny/model.pth")
    short = write_video(tmp_path / "short.mp4", seconds=3)
    track = torch.cat(list(iter_audio_chunks(short)))
    chunked = tokenize_audio_track(short, codec, chunk_seconds=random.uniform(0.8, 1.4), margin_seconds=0.5)
    assert chunked.shape[0] == codec.n_codebooks and torch.equal(chunked, codec.encode(track, RATE))
    assert chunked.shape[1] == pytest.approx(3 * codec.frame_rate, abs=3)
    native = VideoTokenizer(image_tokenizer, fps=1.0, max_frames=2, mode="native").encode(video_path, audio=False)
    assert native.frame_codes.shape == (2, 16, 24) and native.audio_codes is None
