"""Constraint: sampled sequences always parse strictly, reference sequences are never forbidden, forbidden
ids inside blocks are exactly what strict decoding rejects, options, prompts, batches, prefix functions."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from mmtok.stream import (Audio, AudioCodec, Frame, Image, StreamDecodeError, Text, TokenStream, Video,
                          Vocabulary)
from mmtok.stream.constraints import Constraint, ConstraintError

IMAGE_CODES, AUDIO, CODEC, MAX_GRID = 16, (2, 8), (3, 8), 6


def make_stream(**options) -> TokenStream:
    return TokenStream(Vocabulary(image_codes=IMAGE_CODES, audio=AUDIO, audio_codec=CODEC, max_grid=MAX_GRID,
                                  **options))


def grid(h=None, w=None) -> torch.Tensor:
    return torch.randint(0, IMAGE_CODES, (h or random.randint(1, MAX_GRID), w or random.randint(1, MAX_GRID)))


def reference_segments() -> list:
    frames = [Frame(codes=grid(), timestamp=round(random.uniform(0, 7200), 3)) for _ in range(2)]
    return [
        Text("a photo: "), Image(codes=grid()), Text(" and speech "),
        Audio(codes=torch.randint(0, AUDIO[1], (AUDIO[0], random.randint(1, 9)))),
        AudioCodec(codes=torch.randint(0, CODEC[1], (CODEC[0], random.randint(1, 9)))),
        Video(frames=frames, audio=AudioCodec(codes=torch.randint(0, CODEC[1], (CODEC[0], 3)))),
        Video(frames=frames[:1]), Image(codes=grid()), Text("end"),
    ]


def sample(constraint: Constraint, rng: np.random.Generator, prompt=(), max_len=4000, text_weight=0.3):
    """A random walk through the allowed sets (non-text ids favoured so that blocks happen)."""
    state = constraint.state(prompt)
    ids = list(prompt)
    n_text = constraint.vocab.text.size
    for _ in range(max_len):
        allowed = np.flatnonzero(state.allowed())
        assert len(allowed), f"empty allowed set at {state.s}"
        other = allowed[allowed >= n_text]
        pick = other if len(other) and rng.random() > text_weight else allowed
        token = int(rng.choice(pick))
        state.advance(token)
        ids.append(token)
        if state.done:
            return ids
    return None


@pytest.mark.parametrize("end_of_row", [True, False])
def test_reference_sequences_are_never_forbidden(seed, end_of_row):
    stream = make_stream(end_of_row=end_of_row)
    constraint = Constraint(stream.vocab)
    for _ in range(20):
        ids = stream.encode(reference_segments())
        constraint.check(ids)
        constraint.check(ids, prompt_length=random.randrange(len(ids)))
        # options the reference satisfies keep allowing it
        image = stream.encode([Text("x"), Image(codes=grid(3, 5))])
        Constraint(stream.vocab, image_grid=(3, 5), blocks=["image"], max_blocks=1, min_blocks=1).check(image)


@pytest.mark.parametrize("end_of_row", [True, False])
def test_sampled_sequences_all_parse_strictly(seed, end_of_row):
    stream = make_stream(end_of_row=end_of_row)
    constraint = Constraint(stream.vocab)
    rng = np.random.default_rng(seed)
    parsed, kinds = 0, set()
    for _ in range(60):
        ids = sample(constraint, rng, prompt=[stream.vocab.special("bos")])
        if ids is None:
            continue
        segments = stream.decode(ids, strict=True)
        assert segments.repairs == []
        assert stream.decode(stream.encode(segments)) == segments
        kinds |= {type(s).__name__ for s in segments}
        parsed += 1
    assert parsed >= 50
    assert {"Image", "Audio", "AudioCodec", "Video"} <= kinds


def test_unconstrained_random_sequences_fail(seed):
    stream = make_stream()
    vocab = stream.vocab
    rng = np.random.default_rng(seed)
    failures = 0
    for _ in range(100):
        body = rng.integers(0, vocab.size, 60).tolist()
        try:
            stream.decode([vocab.special("bos")] + body + [vocab.special("eos")])
        except StreamDecodeError:
            failures += 1
    assert failures >= 95


def test_forbidden_ids_inside_blocks_break_strict_decoding(seed):
    """Inside image and audio blocks the mask is exact: every forbidden id there makes strict decoding fail."""
    stream = make_stream()
    vocab = stream.vocab
    constraint = Constraint(vocab)
    ids = stream.encode([Image(codes=grid(2, 3)), Audio(codes=torch.randint(0, AUDIO[1], (AUDIO[0], 2))),
                         AudioCodec(codes=torch.randint(0, CODEC[1], (CODEC[0], 2)))])
    category = vocab.classify(np.asarray(ids))[0]
    inside, depth = [], 0
    for p, token in enumerate(ids):
        name = vocab.special_name(token) if category[p] == 1 else ""
        if name.endswith("_end"):
            depth -= 1
        if depth:
            inside.append(p)
        if name.endswith("_begin"):
            depth += 1
    for p in random.sample(inside, 8) + [inside[0], inside[-1]]:
        allowed = constraint.allowed_mask(ids[:p])
        assert allowed[ids[p]]
        for x in np.flatnonzero(~allowed)[:: 3]:
            with pytest.raises(StreamDecodeError):
                stream.decode(ids[:p] + [int(x)] + ids[p + 1:])


def test_fixed_grid_images_only(seed):
    stream = make_stream()
    h, w = random.randint(1, MAX_GRID), random.randint(1, MAX_GRID)
    constraint = Constraint(stream.vocab, text=False, blocks=["image"], image_grid=(h, w), min_blocks=1,
                            max_blocks=2)
    rng = np.random.default_rng(seed)
    for _ in range(30):
        ids = sample(constraint, rng)
        segments = stream.decode(ids)
        assert 1 <= len(segments) <= 2 and all(isinstance(s, Image) and s.grid == (h, w) for s in segments)


def test_grid_list_frames_and_blocks(seed):
    stream = make_stream()
    grids = [(2, 3), (4, 1)]
    constraint = Constraint(stream.vocab, image_grid=grids, audio_frames=(2, 3), codec_frames=4,
                            video_frames=(1, 2), max_blocks=3)
    rng = np.random.default_rng(seed)
    for _ in range(30):
        ids = sample(constraint, rng, text_weight=0.1)
        segments = stream.decode(ids)
        blocks = [s for s in segments if not isinstance(s, Text)]
        assert len(blocks) <= 3
        for s in blocks:
            if isinstance(s, Image):
                assert s.grid in grids
            elif isinstance(s, Audio):
                assert 2 <= s.codes.shape[1] <= 3
            elif isinstance(s, AudioCodec):
                assert s.codes.shape[1] == 4
            else:
                assert 1 <= len(s.frames) <= 2
                assert all(f.grid in grids and f.timestamp is not None for f in s.frames)
                if s.audio is not None:
                    assert s.audio.codes.shape[1] >= 1


def test_prompt_is_read_with_plain_rules_and_options_apply_after(seed):
    stream = make_stream()
    vocab = stream.vocab
    prompt = stream.encode([Text("edit "), Image(codes=grid(5, 5)), Text(" as 2x2: ")], add_eos=False)
    prompt = prompt + [vocab.special("image_begin")]
    constraint = Constraint(vocab, image_grid=(2, 2), text=False, max_blocks=1)
    state = constraint.state(prompt)
    allowed = np.flatnonzero(state.allowed())
    assert allowed.tolist() == [vocab.resolution_token(2)]
    ids = sample(constraint, np.random.default_rng(seed), prompt=prompt)
    segments = stream.decode(ids)
    assert segments[1].grid == (5, 5) and segments[-1].grid == (2, 2)
    with pytest.raises(ConstraintError, match="position 1"):
        constraint.state([vocab.special("bos"), vocab.special("image_end")])


def test_batch_masks_and_prefix_function(seed):
    stream = make_stream()
    vocab = stream.vocab
    constraint = Constraint(vocab)
    rng = np.random.default_rng(seed)
    sequences = [sample(constraint, rng, prompt=[vocab.special("bos")]) for _ in range(6)]
    sequences = [s for s in sequences if s is not None]
    length = min(len(s) for s in sequences)
    batch = constraint.batch([s[:1] for s in sequences])
    prefix_fn = constraint.prefix_function(prompt_length=1)
    for t in range(1, length):
        forbidden = batch.forbidden()
        for row, seq in enumerate(sequences):
            expected = constraint.allowed_mask(seq[:t], prompt_length=1)
            assert np.array_equal(~forbidden[row].numpy(), expected)
            assert np.array_equal(prefix_fn(seq[:t]), expected)
        scores = torch.randn(len(sequences), vocab.size + 5)
        batch.apply(scores)
        assert torch.isinf(scores[:, vocab.size:]).all()
        assert torch.equal(torch.isinf(scores[:, : vocab.size]), forbidden)
        batch.advance([s[t] for s in sequences])


def test_timestamps_are_numbers(seed):
    stream = make_stream()
    vocab = stream.vocab
    constraint = Constraint(vocab, blocks=["video"], text=False, min_blocks=1, max_blocks=1, video_audio=False)
    rng = np.random.default_rng(seed)
    for _ in range(20):
        ids = sample(constraint, rng, text_weight=0.8)
        (video,) = stream.decode(ids)
        assert all(isinstance(f.timestamp, float) for f in video.frames)


def test_bad_options_are_named():
    vocab = Vocabulary(image_codes=8, max_grid=4)
    with pytest.raises(ValueError, match="audio"):
        Constraint(vocab, blocks=["audio"])
    with pytest.raises(ValueError, match="image_grid 5x1"):
        Constraint(vocab, image_grid=(5, 1))
    with pytest.raises(ValueError, match="max_blocks"):
        Constraint(vocab, min_blocks=2, max_blocks=1)
    with pytest.raises(ValueError, match="audio_frames"):
        Constraint(Vocabulary(audio=(2, 4)), audio_frames=(3, 2))
    with pytest.raises(ValueError, match="prompt_length"):
        Constraint(vocab).allowed_mask([1, 2], prompt_length=3)
