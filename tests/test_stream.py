"""TokenStream / Vocabulary: round trips, grids, multi-codebook interleaving, malformed sequences, hashes."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from mmtok.stream import (Audio, AudioCodec, ByteTokenizer, Frame, Image, StreamDecodeError, Text, TokenIds,
                          TokenStream, Video, Vocabulary, VocabularyMismatchError)
from mmtok.stream.interleave import deinterleave, interleave

IMAGE_CODES, AUDIO, CODEC = 512, (2, 300), (4, 64)


def make_stream(**options) -> TokenStream:
    return TokenStream(Vocabulary(image_codes=IMAGE_CODES, audio=AUDIO, audio_codec=CODEC, max_grid=24, **options))


def random_text() -> str:
    alphabet = "abc xyz 012 ,.!?\n é ü 日本 🙂"
    return "".join(random.choice(alphabet) for _ in range(random.randint(1, 20)))


def random_grid() -> torch.Tensor:
    return torch.randint(0, IMAGE_CODES, (random.randint(1, 9), random.randint(1, 9)))


def random_segments() -> list:
    frames = [Frame(codes=random_grid(), timestamp=round(random.uniform(0, 7200), 3)) for _ in range(3)]
    return [
        Text(random_text()),
        Image(codes=random_grid()),
        Audio(codes=torch.randint(0, AUDIO[1], (AUDIO[0], random.randint(1, 30)))),
        Text(random_text()),
        AudioCodec(codes=torch.randint(0, CODEC[1], (CODEC[0], random.randint(1, 30)))),
        Video(frames=frames, audio=Audio(codes=torch.randint(0, AUDIO[1], (AUDIO[0], 12)))),
        Image(codes=random_grid()),
        Video(frames=frames[:1], audio=AudioCodec(codes=torch.randint(0, CODEC[1], (CODEC[0], 5)))),
        Text(random_text()),
    ]


@pytest.mark.parametrize("end_of_row", [True, False])
def test_round_trip_every_segment_kind(seed, end_of_row):
    stream = make_stream(end_of_row=end_of_row)
    segments = random_segments()
    ids = stream.encode(segments)
    assert isinstance(ids, TokenIds) and ids.vocab_hash == stream.vocab_hash
    assert all(0 <= i < len(stream.vocab) for i in ids)
    decoded = stream.decode(ids)
    assert decoded == segments and decoded.repairs == []
    assert [type(s) for s in decoded] == [type(s) for s in segments]
    assert stream.encode(decoded) == ids  # identity on ids
    assert decoded[1].grid == tuple(segments[1].codes.shape)


def test_image_layout_is_resolution_prefix_rows_and_end_of_row(seed):
    stream = make_stream()
    v = stream.vocab
    h, w = 3, 7
    grid = torch.randint(0, IMAGE_CODES, (h, w))
    ids = stream.encode([Image(codes=grid)], add_bos=False, add_eos=False)
    offset = v.codebooks("image")[0].offset
    expected = [v.special("image_begin"), v.resolution_offset + h - 1, v.resolution_offset + w - 1]
    for r in range(h):
        expected += [offset + int(c) for c in grid[r]] + [v.special("end_of_row")]
    expected.append(v.special("image_end"))
    assert list(ids) == expected
    assert stream.decode(ids)[0].grid == (3, 7)  # non-square kept


def test_multi_codebook_interleaving_frame_by_frame(seed):
    vocab = Vocabulary(audio_codec=(3, 50))
    ranges = vocab.codebooks("audio_codec")
    codes = torch.randint(0, 50, (3, 11))
    ids = interleave(codes, vocab.offsets("audio_codec"), np.array([50, 50, 50]))
    reference = [ranges[k].offset + int(codes[k, t]) for t in range(11) for k in range(3)]
    assert ids.tolist() == reference
    assert torch.equal(deinterleave(ids, vocab.offsets("audio_codec")), codes)
    assert len({r.offset for r in ranges}) == 3 and ranges[1].offset == ranges[0].offset + 50
    with pytest.raises(ValueError, match="codebook 1"):
        interleave(torch.tensor([[1], [50], [2]]), vocab.offsets("audio_codec"), np.array([50, 50, 50]))


def test_vocabulary_json_and_hash(tmp_path):
    vocab = Vocabulary(image_codes=512, audio=(1, 8192), audio_codec=(4, 64), max_grid=32)
    path = vocab.save(tmp_path / "vocab.json")
    loaded = Vocabulary.load(path, expected_hash=vocab.hash)
    assert loaded.hash == vocab.hash and loaded.layout() == vocab.layout() and len(loaded) == len(vocab)
    data = json.loads(path.read_text())
    data["end_of_row"] = False  # edited layout, stale hash
    path.write_text(json.dumps(data))
    with pytest.raises(VocabularyMismatchError, match="hash"):
        Vocabulary.load(path)
    assert Vocabulary(image_codes=512, max_grid=32).hash != Vocabulary(image_codes=512, max_grid=33).hash


def test_decode_refuses_a_different_vocabulary(seed):
    stream = make_stream()
    ids = stream.encode([Text("hi"), Image(codes=random_grid())])
    other = TokenStream(Vocabulary(image_codes=IMAGE_CODES, audio=AUDIO, audio_codec=CODEC, max_grid=25))
    with pytest.raises(VocabularyMismatchError, match="refusing"):
        other.decode(ids)
    with pytest.raises(VocabularyMismatchError):
        other.decode(list(ids), vocab_hash=stream.vocab_hash)
    assert other.decode(list(ids), strict=False) is not None  # plain ids carry no hash: caller's choice


def test_external_text_tokenizer(seed):
    class WordTokenizer:  # a minimal encode/decode/vocab_size tokenizer, like a Hugging Face one
        words = ["<unk>", "hello", "world", "the", "cat", " "]
        vocab_size = len(words)

        def encode(self, text):
            out = []
            for i, part in enumerate(text.split(" ")):
                out += ([5] if i else []) + [self.words.index(part) if part in self.words else 0]
            return out

        def decode(self, ids):
            return "".join(self.words[i] for i in ids)

    stream = TokenStream(Vocabulary(WordTokenizer(), image_codes=IMAGE_CODES))
    assert stream.vocab.special("bos") == WordTokenizer.vocab_size
    segments = [Text("hello the cat"), Image(codes=random_grid()), Text("world")]
    assert stream.decode(stream.encode(segments)) == segments
    assert stream.vocab.hash != Vocabulary(ByteTokenizer(), image_codes=IMAGE_CODES).hash
    with pytest.raises(ValueError, match="pass it as text_tokenizer"):
        Vocabulary.from_dict(stream.vocab.to_dict())


# ---- malformed generated sequences -------------------------------------------------------------
def _image_ids(stream, h, w):
    grid = torch.randint(0, IMAGE_CODES, (h, w))
    return grid, list(stream.encode([Image(codes=grid)], add_bos=False, add_eos=False))


def test_truncated_image(seed):
    stream = make_stream()
    grid, image = _image_ids(stream, 4, 5)
    prefix = [stream.vocab.special("bos")] + stream.vocab.text.encode("look: ")
    cut = 3 + 2 * 6 + 3  # header, two full rows (5 codes + eor), 3 codes of row 2
    ids = prefix + image[:cut]
    with pytest.raises(StreamDecodeError, match="truncated") as error:
        stream.decode(ids)
    assert error.value.position == len(ids)
    out = stream.decode(ids, strict=False, fill_code=7)
    assert out[0] == Text("look: ") and out[1].grid == (4, 5)
    expected = torch.full((4, 5), 7)
    expected[:2] = grid[:2]
    expected[2, :3] = grid[2, :3]
    assert torch.equal(out[1].codes, expected)
    assert {r.kind for r in out.repairs} >= {"missing_end", "truncated_grid"}


def test_row_of_wrong_length(seed):
    stream = make_stream()
    grid, image = _image_ids(stream, 3, 4)
    eor = stream.vocab.special("end_of_row")
    short = image[:3] + image[3:7] + [eor] + image[3 + 5: 3 + 5 + 3] + [eor] + image[3 + 10:]  # row 1 loses 1 code
    with pytest.raises(StreamDecodeError, match="row 1 .* has 3 codes, expected 4") as error:
        stream.decode(short)
    assert error.value.position == 3 + 5 + 3
    out = stream.decode(short, strict=False)
    assert out[0].grid == (3, 4) and out.repairs[0].kind == "row_length"
    assert torch.equal(out[0].codes[1, :3], grid[1, :3]) and out[0].codes[1, 3] == 0
    assert torch.equal(out[0].codes[[0, 2]], grid[[0, 2]])
    long = image[:3 + 4] + [image[3]] + image[3 + 4:]  # row 0 gains a code: cropped
    with pytest.raises(StreamDecodeError, match="row 0 .* has 5 codes"):
        stream.decode(long)
    out = stream.decode(long, strict=False)
    assert torch.equal(out[0].codes, grid)


def test_code_from_another_modality(seed):
    stream = make_stream()
    grid, image = _image_ids(stream, 2, 3)
    audio_id = stream.vocab.codebooks("audio")[1].offset + 17
    bad = list(image)
    bad[3 + 4 + 1] = audio_id  # row 1, column 1
    with pytest.raises(StreamDecodeError, match="'audio' range .*codebook 1") as error:
        stream.decode(bad)
    assert error.value.position == 3 + 4 + 1
    out = stream.decode(bad, strict=False, fill_code=5)
    expected = grid.clone()
    expected[1, 1] = 5
    assert torch.equal(out[0].codes, expected) and out.repairs[0].kind == "foreign_code"
    # an image code where audio codebook 0 was expected
    codes = torch.randint(0, AUDIO[1], (2, 4))
    audio = list(stream.encode([Audio(codes=codes)], add_bos=False, add_eos=False))
    audio[1 + 2] = stream.vocab.codebooks("image")[0].offset + 3
    with pytest.raises(StreamDecodeError, match="codebook 0 was expected") as error:
        stream.decode(audio)
    assert error.value.position == 3
    fixed = stream.decode(audio, strict=False)[0].codes
    assert fixed[0, 1] == 0 and torch.equal(fixed[:, [0, 2, 3]], codes[:, [0, 2, 3]])


def test_missing_end_tokens(seed):
    stream = make_stream()
    v = stream.vocab
    grid, image = _image_ids(stream, 2, 2)
    ids = image[:-1] + v.text.encode("after")  # <image_end> missing, text follows
    with pytest.raises(StreamDecodeError, match="no <image_end>") as error:
        stream.decode(ids)
    assert error.value.position == len(image) - 1
    out = stream.decode(ids, strict=False)
    assert out == [Image(codes=grid), Text("after")] and out.repairs[0].kind == "missing_end"
    # audio block cut inside a frame, then <eos>
    codes = torch.randint(0, CODEC[1], (CODEC[0], 3))
    audio = list(stream.encode([AudioCodec(codes=codes)], add_bos=False, add_eos=False))
    ids = audio[:1 + 2 * 4 + 2] + [v.special("eos")]
    with pytest.raises(StreamDecodeError, match="no <audio_codec_end>") as error:
        stream.decode(ids)
    assert error.value.position == 1 + 2 * 4 + 2
    out = stream.decode(ids, strict=False)
    assert torch.equal(out[0].codes, codes[:, :2])
    assert [r.kind for r in out.repairs] == ["missing_end", "truncated_frame"]
    # a video whose <video_end> never comes
    frame = Frame(codes=grid, timestamp=1.5)
    video = list(stream.encode([Video(frames=[frame])], add_bos=False, add_eos=False))
    with pytest.raises(StreamDecodeError, match="video begun at position 0 is truncated"):
        stream.decode(video[:-1])
    assert stream.decode(video[:-1], strict=False) == [Video(frames=[frame])]


def test_stray_tokens_and_tail(seed):
    stream = make_stream()
    v = stream.vocab
    ids = [v.special("bos")] + v.text.encode("a") + [v.special("end_of_row"), v.codebooks("image")[0].offset]
    ids += v.text.encode("b") + [v.special("eos")] + v.text.encode("junk")
    with pytest.raises(StreamDecodeError, match="outside any block") as error:
        stream.decode(ids)
    assert error.value.position == 2
    out = stream.decode(ids, strict=False)
    assert out == [Text("a"), Text("b")]
    assert [r.kind for r in out.repairs] == ["stray_token", "stray_token", "after_eos"]


def test_codec_segments_decode_to_waveforms(seed, data_dir):
    from mmtok.audio.codec import AudioCodec as Codec

    codec = Codec.from_dac(data_dir / "checkpoints/dac_tiny/model.pth")
    stream = TokenStream.from_tokenizers(audio_codec=codec)
    waveform = torch.sin(torch.linspace(0, 200, 3200)) * torch.rand(1) + 0.05 * torch.randn(3200)
    segments = [Text("say"), AudioCodec(waveform=waveform, sample_rate=16000)]
    ids = stream.encode(segments)
    assert torch.equal(segments[1].codes, codec.encode(waveform, 16000))
    out = stream.decode(ids, decode_audio=True)
    assert out == segments
    assert torch.allclose(out[1].waveform, codec.decode(segments[1].codes), atol=1e-6)
    assert out[1].sample_rate == 16000


def test_missing_resolution_is_inferred_when_lenient(seed):
    for end_of_row in (True, False):
        stream = make_stream(end_of_row=end_of_row)
        h, w = (3, 5) if end_of_row else (4, 4)
        grid, image = _image_ids(stream, h, w)
        headless = image[:1] + image[3:]
        with pytest.raises(StreamDecodeError, match="expects a resolution token") as error:
            stream.decode(headless)
        assert error.value.position == 1
        out = stream.decode(headless, strict=False)
        assert torch.equal(out[0].codes, grid)
        assert [r.kind for r in out.repairs] == ["missing_resolution", "inferred_grid"]
    with pytest.raises(ValueError, match="fill_code"):
        stream.decode(headless, strict=False, fill_code=AUDIO[1] + CODEC[1])
