"""Multi-codebook audio code layouts (mmtok.stream.audio_layouts): SNAC / Orpheus 7-per-frame, MusicGen delay
pattern, Mimi / Moshi semantic-first, frame-major, codebook prefixes: exact round trips, the published id formulas,
strict refusals and lenient repair of truncated generations. SNAC codes come from the real fixture codec."""
import pathlib

import numpy as np
import pytest
import torch

import mmtok
from mmtok.stream.audio_layouts import (DelayPattern, FrameMajor, SemanticFirst, SnacFrames, delay_grid,
                                        snac_order, undelay_grid)
from mmtok.stream.errors import StreamDecodeError
from mmtok.stream.interleave import interleave

DATA = pathlib.Path(__file__).parent / "data"


def _codes(sizes, frames, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, k, (frames,), generator=g) for k in sizes])


def _orpheus_ids(l0, l1, l2):
    """Orpheus TTS's published mapping (its decoder's redistribute_codes, inverted by hand)."""
    ids = []
    for t in range(len(l0)):
        frame = [l0[t], l1[2 * t], l2[4 * t], l2[4 * t + 1], l1[2 * t + 1], l2[4 * t + 2], l2[4 * t + 3]]
        ids += [128266 + p * 4096 + int(c) for p, c in enumerate(frame)]
    return ids


def test_snac_order_is_orpheus_and_generalises():
    assert snac_order([4, 2, 1]) == [(0, 0), (1, 0), (2, 0), (2, 1), (1, 1), (2, 2), (2, 3)]
    assert snac_order([6, 3, 1]) == [(0, 0), (1, 0), (2, 0), (2, 1), (2, 2), (1, 1), (2, 3), (2, 4), (2, 5)]
    assert snac_order([8, 4, 2, 1])[:4] == [(0, 0), (1, 0), (2, 0), (3, 0)] and len(snac_order([8, 4, 2, 1])) == 15
    with pytest.raises(ValueError, match="multiple of the next"):
        snac_order([6, 4, 1])


def test_snac_frames_match_orpheus_ids(seed):
    layout = SnacFrames(4096, [4, 2, 1], offset=128266)
    g = torch.Generator().manual_seed(seed)
    l0, l1, l2 = (torch.randint(0, 4096, (n,), generator=g) for n in (5, 10, 20))
    frames = torch.cat([l0[None], l1.view(5, 2).T, l2.view(5, 4).T])  # SnacCodec's (7, T_0) frame layout
    ids = layout.encode(frames)
    assert ids.tolist() == _orpheus_ids(l0, l1, l2)
    assert layout.size == 7 * 4096
    back = layout.decode(ids)
    assert torch.equal(back.codes, frames) and not back.repairs


@pytest.mark.parametrize("name", ["attn", "plain"])
def test_snac_frames_round_trip_with_the_codec(name, seed):
    codec = mmtok.load(DATA / "snac" / name)
    layout = SnacFrames.from_code_spec(codec.code_spec, offset=1000)
    x = torch.randn(codec.frame_length * 3 + 5, generator=torch.Generator().manual_seed(seed)) * 0.1
    codes = codec.encode(x, codec.sample_rate)
    ids = layout.encode(codes)
    assert len(ids) == codes.numel() and ids.min() >= 1000 and ids.max() < 1000 + layout.size
    back = layout.decode(ids)
    assert torch.equal(back.codes, codes) and not back.repairs
    torch.testing.assert_close(codec.decode(back.codes), codec.decode(codes), atol=0, rtol=0)
    # levels=1: the coarse level only, one id per frame
    coarse = SnacFrames.from_code_spec(codec.code_spec, levels=1)
    assert torch.equal(coarse.decode(coarse.encode(codes)).codes, codes[:1])


def test_snac_frames_lenient_truncation_and_foreign_ids(seed):
    layout = SnacFrames(32, [6, 3, 1], offset=7)  # 9 ids per frame
    codes = _codes([32] * 9, 4, seed)
    ids = layout.encode(codes)
    for cut in range(len(ids)):
        if cut % 9:
            with pytest.raises(StreamDecodeError, match="ids end inside a frame"):
                layout.decode(ids[:cut])
        out = layout.decode(ids[:cut], strict=False)
        assert torch.equal(out.codes, codes[:, : cut // 9])
        assert [r.kind for r in out.repairs] == (["truncated_frame"] if cut % 9 else [])
    wrong = ids.copy()
    wrong[10] = wrong[11]  # frame 1, position 1 holds an id of position 2's range
    with pytest.raises(StreamDecodeError, match=r"at token position 10: .*frame 1, position 1"):
        layout.decode(wrong)
    out = layout.decode(wrong, strict=False, fill_code=3)
    fixed = codes.clone()
    fixed[layout.position_rows[1], 1] = 3
    assert torch.equal(out.codes, fixed) and [r.kind for r in out.repairs] == ["foreign_code"]
    mixed = list(ids)
    mixed[0] = 7.5
    with pytest.raises(StreamDecodeError, match="not an integer token id"):
        layout.decode(mixed)
    assert [r.kind for r in layout.decode(mixed, strict=False).repairs] == ["foreign_code"]


def test_frame_major_equals_the_stream_interleave_and_prefix(seed):
    sizes = [16, 8, 8, 4]
    codes = _codes(sizes, 6, seed)
    layout = FrameMajor(sizes, offset=300)
    offsets = np.array([300, 316, 324, 332])
    assert np.array_equal(layout.encode(codes), interleave(codes, offsets, np.array(sizes)))
    assert torch.equal(layout.decode(layout.encode(codes)).codes, codes)
    low = FrameMajor(sizes, offset=300, codebooks=2)  # lower bitrate: the first two codebooks only
    ids = low.encode(codes)
    assert len(ids) == 12 and low.size == 24
    assert torch.equal(low.decode(ids).codes, codes[:2])
    with pytest.raises(ValueError, match="codebooks=5: only 4"):
        FrameMajor(sizes, codebooks=5)
    with pytest.raises(ValueError, match=r"code 16 of codebook 0, frame 0 is outside 0\.\.15"):
        layout.encode(torch.full((4, 1), 16))
    with pytest.raises(ValueError, match="expected codes"):
        layout.encode(codes[:3])


def test_delay_pattern_is_musicgen(seed):
    codes = _codes([10] * 4, 5, seed)
    grid = delay_grid(codes, [0, 1, 2, 3], pad=10)  # MusicGen: pad = codebook size
    assert grid.shape == (4, 8)
    for k in range(4):
        assert (grid[k, :k] == 10).all() and torch.equal(grid[k, k: k + 5], codes[k])
        assert (grid[k, k + 5:] == 10).all()
    assert torch.equal(undelay_grid(grid, [0, 1, 2, 3]), codes)
    layout = DelayPattern([10] * 4, offset=50)
    ids = layout.encode(codes)
    assert layout.pad_id == 90 and layout.size == 41 and len(ids) == 4 * 8
    steps = ids.reshape(8, 4)  # step s: codebook k holds frame s - k
    assert steps[0].tolist() == [50 + int(codes[0, 0]), 90, 90, 90]
    assert steps[3, 3] == 80 + int(codes[3, 0]) and steps[7].tolist() == [90, 90, 90, 80 + int(codes[3, 4])]
    back = layout.decode(ids)
    assert torch.equal(back.codes, codes) and not back.repairs


@pytest.mark.parametrize("layout", [
    DelayPattern([12, 12, 12]),
    DelayPattern([12, 7, 5], delays=[2, 0, 1], offset=9, pad_id=3),
    SemanticFirst([12] * 4, acoustic_delay=1, offset=100),
    SemanticFirst([12] * 4, semantic=2, acoustic_delay=2, codebooks=3),
], ids=["musicgen", "custom", "moshi", "two_semantic_prefix"])
def test_delay_layouts_round_trip_and_truncation(layout, seed):
    sizes = [int(s) for s in layout.frame.position_sizes]
    codes = _codes(sizes, 6, seed)
    ids = layout.encode(codes)
    assert len(ids) == layout.steps_for(6) * layout.num_codebooks
    assert torch.equal(layout.decode(ids).codes, codes)
    k, most = layout.num_codebooks, max(layout.delays)
    for cut in range(len(ids)):
        out = layout.decode(ids[:cut], strict=False)
        complete = max(0, cut // k - most)
        assert torch.equal(out.codes, codes[:, :complete]), cut
        if cut < len(ids) and cut:
            with pytest.raises(StreamDecodeError):
                layout.decode(ids[:cut])
            assert out.repairs
    # a model that stops without closing the pattern still decodes its complete frames


def test_semantic_first_is_moshi_order(seed):
    codes = _codes([8] * 3, 4, seed)
    layout = SemanticFirst([8] * 3)  # semantic codebook 0, acoustic 1, 2 one step later
    steps = layout.encode(codes).reshape(-1, 3)
    assert steps.shape == (5, 3)
    assert steps[0].tolist() == [int(codes[0, 0]), 24, 24]
    assert steps[1].tolist() == [int(codes[0, 1]), 8 + int(codes[1, 0]), 16 + int(codes[2, 0])]
    assert steps[4].tolist() == [24, 8 + int(codes[1, 3]), 16 + int(codes[2, 3])]
    plain = SemanticFirst([8] * 3, acoustic_delay=0)  # no delay: the frame-major order
    assert np.array_equal(plain.encode(codes), FrameMajor([8] * 3).encode(codes))


def test_delay_pattern_strict_errors_and_foreign_ids(seed):
    layout = DelayPattern([6, 6])
    codes = _codes([6, 6], 3, seed)
    ids = layout.encode(codes).copy()
    ids[0 * 2 + 1] = 4  # step 0, codebook 1 must be padding (12)
    with pytest.raises(StreamDecodeError, match=r"at token position 1: .*codebook 1 is padding"):
        layout.decode(ids)
    assert torch.equal(layout.decode(ids, strict=False).codes, codes)
    ids = layout.encode(codes).copy()
    ids[2] = 12  # step 1, codebook 0 (frame 1) is the padding id
    with pytest.raises(StreamDecodeError, match="the padding id where codebook 0 of frame 1"):
        layout.decode(ids)
    out = layout.decode(ids, strict=False, fill_code=5)
    assert out.codes[0, 1] == 5 and [r.kind for r in out.repairs] == ["foreign_code"]
    with pytest.raises(ValueError, match="pad_id 3 lies inside the code ids"):
        DelayPattern([6, 6], pad_id=3)
    with pytest.raises(ValueError, match="delays must give"):
        DelayPattern([6, 6], delays=[0, -1])
