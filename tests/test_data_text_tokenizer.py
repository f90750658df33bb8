"""`mmtok tokenize --text-tokenizer`: conversation text through a real tokenizer.json (the `tokenizers`
library), the ids equal mmtok.stream's own encoding over the same vocabulary, the tokenizer is in the
vocabulary hash and kept with the output so TokenShards decodes the text back."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image as PILImage

from data_fixtures import save_tiny_image_tokenizer

tokenizers = pytest.importorskip("tokenizers", reason="the tokenizers package reads --text-tokenizer files")
pytestmark = pytest.mark.timeout(180)

WORDS = ["<unk>", "<|im_start|>", "<|im_end|>", "user", "assistant", "what", "is", "in", "the", "picture", "?",
         "a", "cat", "Picture", "1", ":", "and", "dog", "."]


def word_tokenizer(words=WORDS):
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.decoder = tokenizers.decoders.WordPiece(prefix="##")
    return tok


@pytest.fixture(scope="module")
def image_tok(tmp_path_factory):
    return save_tiny_image_tokenizer(tmp_path_factory.mktemp("tok") / "image_tokenizer")


@pytest.fixture
def chat(tmp_path, seed):
    rng = np.random.default_rng(seed)
    for name in ("x.png", "y.png"):
        PILImage.fromarray(rng.integers(0, 255, size=(36, 44, 3), dtype=np.uint8)).save(tmp_path / name)
    records = [{"id": "s0", "conversations": [
                   {"from": "user", "value": "Picture 1: <img>x.png</img>\nwhat is in the picture ?"},
                   {"from": "assistant", "value": "a cat and a dog ."}]},
               {"id": "s1", "conversations": [{"from": "user", "value": "<img>y.png</img> what is in the picture ?"},
                                              {"from": "assistant", "value": "a dog ."}]}]
    path = tmp_path / "chat.json"
    path.write_text(json.dumps(records))
    return path


def test_conversations_use_the_text_tokenizer_and_decode_back(tmp_path, chat, image_tok):
    from mmtok.data import TokenShards, tokenize_dataset
    from mmtok.stream import Text, TokenStream, Vocabulary
    from mmtok.stream.qwen_vl import encode_qwen_vl_file

    tok = word_tokenizer()
    tok.save(str(tmp_path / "tokenizer.json"))
    options = dict(image_tokenizer=image_tok, shard_size=1, batch_size=2, workers=0, progress=False)
    summary = tokenize_dataset(chat, tmp_path / "out", text_tokenizer=tmp_path / "tokenizer.json", **options)
    assert summary.samples == 2 and summary.failures == 0
    vocab = Vocabulary.from_tokenizers(word_tokenizer(), image_tokenizer=image_tok)
    want = dict(encode_qwen_vl_file(TokenStream(vocab, image_tokenizer=image_tok), chat))
    shards = TokenShards(tmp_path / "out")
    assert shards.manifest["vocabulary"]["hash"] == vocab.hash
    assert shards.manifest["vocabulary"]["text"]["size"] == len(WORDS)
    for sample in shards:
        assert np.array_equal(sample.tokens, np.asarray(want[sample.meta["id"]], dtype=np.int64)), sample.key
        assert (sample.tokens < len(WORDS)).sum() > 10  # the text went through the word tokenizer
    texts = [s.text for s in shards.segments(0) if isinstance(s, Text)]
    assert "cat and a dog" in " ".join(texts)
    # the byte tokenizer (default) gives a different vocabulary hash: a rerun into the same folder is refused
    with pytest.raises(ValueError):
        tokenize_dataset(chat, tmp_path / "out", **options)
    default = tokenize_dataset(chat, tmp_path / "bytes", **options)
    assert default.manifest["vocabulary"]["hash"] != vocab.hash


def test_cli_text_tokenizer_folder_and_bad_paths(tmp_path, chat, image_tok, capsys):
    from mmtok.__main__ import main
    from mmtok.data import TokenShards

    image_tok.save_pretrained(tmp_path / "imgtok")
    folder = tmp_path / "hf_tok"
    folder.mkdir()
    word_tokenizer().save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))
    base = ["tokenize", str(chat), "--image-tokenizer", str(tmp_path / "imgtok"), "--workers", "0", "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "out"), "--text-tokenizer", str(folder)]) == 0
    assert TokenShards(tmp_path / "out").manifest["vocabulary"]["text"]["size"] == len(WORDS)
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "junk.json").write_bytes(b"{not json")
    for bad, named in ((empty, "has no tokenizer.json"), (tmp_path / "nope.json", "not found"),
                       (tmp_path / "junk.json", "not a readable tokenizer.json")):
        assert main(base + ["--out", str(tmp_path / "o2"), "--text-tokenizer", str(bad)]) == 2
        err = capsys.readouterr().err
        assert named in err and str(bad) in err
    assert not (tmp_path / "o2").exists()


@pytest.mark.parametrize("position", ["before", "after"])
def test_captions_from_tables_and_webdataset_tars_go_into_the_samples(tmp_path, image_tok, seed, position):
    """--caption-field: a Parquet column / a tar's .txt member becomes the sample's text (through the text
    tokenizer) before or after the image block; an item without a caption is the image alone; the option
    is part of run.json (a rerun with another caption setting is refused)."""
    import tarfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    from mmtok.data import TokenShards, tokenize_dataset
    from mmtok.stream import Text, TokenStream, Vocabulary
    from mmtok.stream.segments import Image

    rng = np.random.default_rng(seed)

    def png() -> bytes:
        buffer = io.BytesIO()
        PILImage.fromarray(rng.integers(0, 255, size=(36, 44, 3), dtype=np.uint8)).save(buffer, format="PNG")
        return buffer.getvalue()

    blobs = [png() for _ in range(3)]
    pq.write_table(pa.table({"key": ["r0", "r1", "r2"], "jpg": pa.array(blobs, pa.binary()),
                             "caption": ["a cat .", None, "the dog is in the picture ."]}), tmp_path / "t.parquet")
    with tarfile.open(tmp_path / "w.tar", "w") as tar:
        for name, data in (("s0.png", png()), ("s0.txt", b"a dog and a cat .\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tok = word_tokenizer()
    tok.save(str(tmp_path / "tokenizer.json"))
    options = dict(image_tokenizer=image_tok, shard_size=2, batch_size=2, workers=0, progress=False,
                   text_tokenizer=tmp_path / "tokenizer.json")
    inputs = [tmp_path / "t.parquet", tmp_path / "w.tar"]
    out = tmp_path / "out"
    summary = tokenize_dataset(inputs[:1], out, caption_field="caption", caption_position=position, **options)
    assert summary.samples == 3 and summary.failures == 0
    tar_out = tmp_path / "tar_out"
    tokenize_dataset(inputs[1:], tar_out, caption_field="txt", caption_position=position, **options)
    vocab = Vocabulary.from_tokenizers(word_tokenizer(), image_tokenizer=image_tok)
    stream = TokenStream(vocab, image_tokenizer=image_tok)
    shards, tar_shards = TokenShards(out), TokenShards(tar_out)
    plain = TokenShards(_plain_run(tmp_path, inputs[0], options))
    for sample_set, key, caption in ((shards, "r0", "a cat ."), (shards, "r2", "the dog is in the picture ."),
                                     (tar_shards, "w.tar/s0.png", "a dog and a cat .")):
        sample = sample_set[sample_set.keys().index(key)]
        segments = sample_set.segments(sample_set.keys().index(key))
        kinds = [type(s) for s in segments]
        assert kinds == ([Text, Image] if position == "before" else [Image, Text]), kinds
        text = next(s for s in segments if isinstance(s, Text))
        assert text.text == tok.decode(tok.encode(caption).ids)  # the tokenizer's own round trip
        image = next(s for s in segments if isinstance(s, Image))
        want = stream.encode([Text(caption), Image(codes=image.codes)] if position == "before"
                             else [Image(codes=image.codes), Text(caption)])
        assert np.array_equal(sample.tokens, np.asarray(want))
        if sample_set is shards:  # the same image codes as a run without captions
            alone = plain[plain.keys().index(key)]
            assert [type(s) for s in plain.segments(plain.keys().index(key))] == [Image]
            assert np.array_equal(plain.segments(plain.keys().index(key))[0].codes, image.codes)
            assert alone.meta["caption"] == caption  # still kept as metadata
    no_caption = shards.segments(shards.keys().index("r1"))
    assert [type(s) for s in no_caption] == [Image]
    with pytest.raises(ValueError, match="caption_position"):
        tokenize_dataset(inputs[:1], out, caption_field="caption",
                         caption_position="before" if position == "after" else "after", **options)
    with pytest.raises(ValueError, match=r"caption_position \(--caption-position\) must be before or after"):
        tokenize_dataset(inputs[:1], tmp_path / "x", caption_field="caption", caption_position="middle", **options)


def _plain_run(tmp_path, table, options):
    from mmtok.data import tokenize_dataset

    out = tmp_path / "plain"
    tokenize_dataset([table], out, **options)
    return out
