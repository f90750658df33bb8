"""NVIDIA Cosmos discrete video tokenizers (DV) from their TorchScript release files, against Cosmos-Tokenizer's
own causal factorized network (fixtures: scripts/fixtures/make_cosmos_video_fixtures.py)."""
from __future__ import annotations

import pathlib
import shutil

import numpy as np
import pytest
import torch

import mmtok.tokenizer.registry as registry
from mmtok.video.cosmos import CosmosVideoTokenizer, patch3d, unpatch3d

DATA = pathlib.Path(__file__).parent / "data" / "cosmos_video"
NAMES = ["Cosmos-Tokenizer-DV4x4x4", "Cosmos-Tokenizer-DV2x4x4"]


@pytest.fixture(scope="module")
def outputs():
    with np.load(DATA / "outputs.npz") as f:
        return {k: torch.from_numpy(f[k]) for k in f.files}


@pytest.mark.parametrize("name", NAMES)
def test_codes_and_frames_match_cosmos(outputs, name):
    assert registry.detect_layout(DATA / name).name == "cosmos-video"
    tok = registry.load(DATA / name)
    assert isinstance(tok, CosmosVideoTokenizer)
    video = outputs[f"{name}/video"].transpose(1, 2)  # ours: (B, T, 3, H, W)
    codes = tok.encode(video)
    expected = outputs[f"{name}/indices"].long()
    assert codes.shape == expected.shape
    sure = outputs[f"{name}/margins"] > 1e-4
    assert sure.float().mean() > 0.95
    assert torch.equal(codes[sure], expected[sure])
    reference = outputs[f"{name}/decoded"].transpose(1, 2)
    torch.testing.assert_close(tok.decode(expected, clamp=False), reference,
                               atol=1e-4 * max(1.0, float(reference.abs().max())), rtol=0)
    t, s = int(name[-5]), int(name[-1])
    assert tok.code_spec.downsample == (t, s, s) and tok.code_spec.axes == ("t", "h", "w")


def test_patch3d_round_trips(seed):
    x = torch.randn(1, 3, 9, 8, 4, dtype=torch.float64)
    for size, method in ((2, "haar"), (4, "haar"), (2, "rearrange")):
        torch.testing.assert_close(unpatch3d(patch3d(x, size, method), size, method), x)


def test_options_and_refusals(outputs, tmp_path):
    plain = tmp_path / "dv"
    shutil.copytree(DATA / NAMES[0], plain)
    with pytest.raises(ValueError, match="spatial_compression= and temporal_compression="):
        registry.load(plain)
    tok = registry.load(plain, spatial_compression=4, temporal_compression=4)
    video = outputs[f"{NAMES[0]}/video"].transpose(1, 2)
    with pytest.raises(ValueError, match=r"1 \+ k \* 4 frames"):
        tok.encode(video[:, :8])
    tok.save_pretrained(tmp_path / "saved")
    again = registry.load(tmp_path / "saved")
    assert torch.equal(again.encode(video), tok.encode(video))
    with pytest.raises(ValueError, match="outside 0..29"):
        tok.decode(torch.full((1, 3, 4, 3), 30))


def test_causal_clips_group_the_first_frame_alone(outputs, seed, tmp_path):
    """A causal tokenizer codes frame 0 alone, then groups of f_t: the frame walker pads a clip to 1 + k*f_t
    frames (repeating the last), and latent j's timestamp is that of its first input frame."""
    import numpy as np

    import mmtok
    from mmtok.video.tokenizer import encode_frames_spatiotemporal

    name = "Cosmos-Tokenizer-DV4x4x4"
    tok = registry.load(DATA / name)
    assert tok.code_spec.extra["causal_first_frame"] and tok.code_spec.temporal_downsample == 4
    video = outputs[f"{name}/video"].transpose(1, 2)[0]  # (9, 3, 16, 12)
    stamps = [0.1 * i for i in range(9)]
    (whole,) = list(encode_frames_spatiotemporal(tok, zip(stamps, video)))
    assert torch.equal(whole[1], tok.encode(video[None])[0])  # 9 = 1 + 2*4 frames: no padding
    assert whole[0].tolist() == pytest.approx([0.0, 0.1, 0.5])
    start = int(torch.randint(0, 2, (1,)))
    frames = video[start:start + 7]
    padded = torch.cat([frames, frames[-1:].expand(2, -1, -1, -1)])  # 7 -> 9 frames
    (part,) = list(encode_frames_spatiotemporal(tok, zip(stamps, frames)))
    assert torch.equal(part[1], tok.encode(padded[None])[0])
    (single,) = list(encode_frames_spatiotemporal(tok, zip(stamps, video[:1])))
    assert single[1].shape[0] == 1 and torch.equal(single[1], tok.encode(video[None, :1])[0])

    from data_fixtures import write_video

    write_video(tmp_path / "clip.mp4", np.random.default_rng(seed % 2**32), seconds=1.0, fps=10, size=(24, 20),
                with_audio=False)
    clip = mmtok.VideoTokenizer(tok, fps=None, max_frames=6, size=16, batch_size=4)
    tokens = clip.encode(tmp_path / "clip.mp4")
    sampled = list(clip.sample(tmp_path / "clip.mp4"))
    assert tokens.frame_codes.shape == (3, 4, 4)  # 6 frames -> 1 + 2 latent frames (padded to 9)
    assert tokens.timestamps.tolist() == pytest.approx([sampled[0].timestamp, sampled[1].timestamp,
                                                        sampled[5].timestamp])
