"""The stream's layouts for factorised sub-token grids (Open-MAGVIT2 LFQ, codes (K, h, w)) and multi-scale token
sequences (VAR, codes (L,) coarse to fine): ids and back exactly, ranges, strict refusals, lenient repairs.
The vocabularies come from the real fixtures' code_spec (tests/data/magvit2/factorized, tests/data/var/vae)."""
import pathlib

import numpy as np
import pytest
import torch

import mmtok
from mmtok.stream import TokenStream, Vocabulary
from mmtok.stream.constraints import Constraint
from mmtok.stream.errors import StreamDecodeError, VocabularyMismatchError
from mmtok.stream.segments import Image, Text

DATA = pathlib.Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def magvit2():
    return mmtok.load(DATA / "magvit2" / "factorized" / "model.ckpt")


@pytest.fixture(scope="module")
def var():
    return mmtok.load(DATA / "var" / "vae" / "vae_ch32v12z5.pth", scales=(1, 2, 3, 4))


def _random_grid(sizes, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, k, (h, w), generator=g) for k in sizes])


@pytest.mark.parametrize("end_of_row", [True, False])
def test_factorised_grid_roundtrip(magvit2, end_of_row):
    sizes = magvit2.code_spec.codebook_sizes
    assert len(sizes) > 1 and len(set(sizes)) > 1  # unequal sub-token codebooks, e.g. (32, 128)
    stream = TokenStream.from_tokenizers(image_tokenizer=magvit2, end_of_row=end_of_row, max_grid=8)
    ranges = stream.vocab.codebooks("image")
    assert [r.size for r in ranges] == list(sizes)
    images = [Image(codes=_random_grid(sizes, h, w, seed)) for seed, (h, w) in enumerate([(3, 5), (1, 1), (4, 2)])]
    ids = stream.encode(["a", images[0], "b", images[1], images[2]])
    segments = stream.decode(ids)
    assert segments == [Text("a"), images[0], Text("b"), images[1], images[2]] and not segments.repairs
    # the first image's body: per position the sub-tokens in codebook order, each in its own range
    body = np.array(ids[2 + 3: 2 + 3 + 3 * (5 * len(sizes) + end_of_row)]).reshape(3, -1)
    subs = body[:, : 5 * len(sizes)].reshape(3, 5, len(sizes))
    for k, r in enumerate(ranges):
        assert ((subs[..., k] >= r.offset) & (subs[..., k] < r.offset + r.size)).all()
        assert np.array_equal(subs[..., k] - r.offset, images[0].codes[k].numpy())


def test_factorised_grid_from_tokenizer_pixels(magvit2):
    stream = TokenStream.from_tokenizers(image_tokenizer=magvit2, max_grid=8)
    size = magvit2.code_spec.downsample[0] * 2
    pixels = torch.rand(3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    segment = Image(source=pixels)
    ids = stream.encode([segment])
    assert segment.codes.shape == (len(magvit2.code_spec.codebook_sizes), 2, 2)
    (back,) = stream.decode(ids, decode_images=True)
    assert torch.equal(back.codes, segment.codes) and back.pixels.shape == (3, size, size)


def test_factorised_grid_strict_and_lenient(magvit2):
    stream = TokenStream.from_tokenizers(image_tokenizer=magvit2, max_grid=8)
    sizes = magvit2.code_spec.codebook_sizes
    image = Image(codes=_random_grid(sizes, 2, 3, 7))
    ids = list(stream.encode([image]))
    r0, r1 = stream.vocab.codebooks("image")
    swapped = list(ids)
    swapped[4] = r1.offset  # position 0's first sub-token taken from codebook 1's range
    with pytest.raises(StreamDecodeError, match="codebook 0 was expected"):
        stream.decode(swapped)
    lenient = stream.decode(swapped, strict=False)
    assert lenient[0].codes.shape == image.codes.shape and lenient[0].codes[0, 0, 0] == 0
    assert [r.kind for r in lenient.repairs] == ["foreign_code"]
    short = ids[:4] + ids[5:]  # one sub-token missing in row 0
    with pytest.raises(StreamDecodeError):
        stream.decode(short)
    for cut in range(2, len(ids)):  # lenient decode survives every truncation
        out = stream.decode(ids[:cut], strict=False)
        assert all(isinstance(s, Image) and s.codes.shape == image.codes.shape for s in out)
        assert cut < 5 or out[0].codes.shape == image.codes.shape
    with pytest.raises(ValueError, match="outside"):
        stream.encode([Image(codes=torch.full((len(sizes), 2, 2), sizes[0]))])
    with pytest.raises(ValueError, match="image codebooks"):
        stream.encode([Image(codes=torch.zeros(2, 2, dtype=torch.int64))])


def test_factorised_vocabulary_record(magvit2, tmp_path):
    vocab = Vocabulary.from_tokenizers(image_tokenizer=magvit2)
    back = Vocabulary.load(vocab.save(tmp_path / "v.json"), expected_hash=vocab.hash)
    assert back.layout() == vocab.layout() and [r.size for r in back.codebooks("image")] == \
        list(magvit2.code_spec.codebook_sizes)
    plain = Vocabulary(image_codes=magvit2.code_spec.codebook_sizes[0])
    with pytest.raises(VocabularyMismatchError):
        TokenStream(plain, image_tokenizer=magvit2)
    with pytest.raises(ValueError, match="not supported by the generation grammar"):
        Constraint(vocab)


def test_var_scales_roundtrip(var):
    stream = TokenStream.from_tokenizers(image_tokenizer=var, max_grid=8)
    vocab = stream.vocab
    assert vocab.image_scales == ((1, 1), (2, 2), (3, 3), (4, 4)) and vocab.image_tokens == 30
    (r,) = vocab.codebooks("image")
    g = torch.Generator().manual_seed(3)
    images = [Image(codes=torch.randint(0, r.size, (30,), generator=g)) for _ in range(3)]
    ids = stream.encode([images[0], "x", images[1], images[2]])
    segments = stream.decode(ids)
    assert segments == [images[0], Text("x"), images[1], images[2]] and not segments.repairs
    assert ids[1:4] == [vocab.special("image_begin"), vocab.resolution_token(4), vocab.resolution_token(4)]
    body = np.array(ids[4:34])
    assert np.array_equal(body - r.offset, images[0].codes.numpy()) and ids[34] == vocab.special("image_end")


def test_var_from_tokenizer_pixels(var):
    stream = TokenStream.from_tokenizers(image_tokenizer=var, max_grid=8)
    size = var.code_spec.downsample[0] * 4
    pixels = torch.rand(3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    segment = Image(source=pixels)
    ids = stream.encode(["hi", segment])
    (_, back) = stream.decode(ids, decode_images=True)
    assert torch.equal(back.codes, segment.codes) and back.pixels.shape == (3, size, size)


def test_var_strict_and_lenient(var, tmp_path):
    stream = TokenStream.from_tokenizers(image_tokenizer=var, max_grid=8)
    vocab = stream.vocab
    image = Image(codes=torch.arange(30) % vocab.codebooks("image")[0].size)
    ids = list(stream.encode([image]))
    with pytest.raises(StreamDecodeError, match="29 tokens, expected 30"):
        stream.decode(ids[:10] + ids[11:])
    with pytest.raises(StreamDecodeError, match="finest scale is 4x4"):
        stream.decode(ids[:2] + [vocab.resolution_token(3)] + ids[3:])
    with pytest.raises(StreamDecodeError, match="outside the vocabulary"):
        stream.decode(ids[:5] + [vocab.size] + ids[6:])
    longer = stream.decode(ids[:10] + ids[9:], strict=False)
    assert longer[0].codes.shape == (30,) and [r.kind for r in longer.repairs] == ["cropped_grid"]
    for cut in range(1, len(ids)):
        out = stream.decode(ids[:cut], strict=False)
        assert all(s.codes.shape == (30,) for s in out)
        if cut > 4:
            assert torch.equal(out[0].codes[: cut - 4], image.codes[: cut - 4])
    with pytest.raises(ValueError, match=r"must be \(30,\)"):
        stream.encode([Image(codes=torch.zeros(29, dtype=torch.int64))])
    # the scale list is part of the record and the hash
    back = Vocabulary.load(vocab.save(tmp_path / "v.json"), expected_hash=vocab.hash)
    assert back.image_scales == vocab.image_scales
    other = Vocabulary(image_codes=vocab.codebooks("image")[0].size, image_scales=[(1, 1), (4, 4)], max_grid=8)
    assert other.hash != vocab.hash
    with pytest.raises(VocabularyMismatchError, match="scales"):
        TokenStream(other, image_tokenizer=var)


def test_grid_layouts_unchanged():
    """Single-codebook grid vocabularies keep their record (no image_scales key) and ids."""
    vocab = Vocabulary(image_codes=16, max_grid=4)
    assert "image_scales" not in vocab.layout() and vocab.image_scales is None
    stream = TokenStream(vocab)
    ids = stream.encode([Image(codes=torch.arange(4).reshape(2, 2))])
    base = vocab.codebooks("image")[0].offset
    eor = vocab.special("end_of_row")
    assert list(ids)[1:-1] == [vocab.special("image_begin"), vocab.resolution_token(2), vocab.resolution_token(2),
                               base, base + 1, eor, base + 2, base + 3, eor, vocab.special("image_end")]


def test_cosmos_video_latents_roundtrip():
    """Cosmos DV latents (t, h, w) are a Video's frames, each an image grid: ids and back, and to pixels."""
    from mmtok.stream.segments import Frame, Video

    tok = mmtok.load(DATA / "cosmos_video" / "Cosmos-Tokenizer-DV4x4x4")
    f_t, f_h, f_w = tok.code_spec.downsample
    clip = torch.rand(1, 1 + f_t, 3, 2 * f_h, 2 * f_w, generator=torch.Generator().manual_seed(2)) * 2 - 1
    codes = tok.encode(clip)[0]
    stream = TokenStream.from_tokenizers(video_tokenizer=tok, max_grid=8)
    video = Video(frames=[Frame(codes=c, timestamp=float(i)) for i, c in enumerate(codes)])
    ids = stream.encode([video])
    (back,) = stream.decode(ids, decode_images=True)
    assert back == video and torch.equal(torch.stack([f.codes for f in back.frames]), codes)
    (r,) = stream.vocab.codebooks("image")
    assert r.size == tok.code_spec.codebook_size
    assert torch.equal(back.pixels, tok.decode(codes[None])[0])
