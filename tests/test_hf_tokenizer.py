"""mmtok tokens inside Hugging Face tokenizers: ids equal the Vocabulary's, every id round-trips through the
token strings, and save / load keeps the vocabulary hash (and refuses a different tokenizer)."""
from __future__ import annotations

import json

import pytest
import torch

from mmtok.stream import AudioCodec, Image, Text, TokenStream, Vocabulary, VocabularyMismatchError
from mmtok.stream.hf_tokenizer import extend_tokenizer, load_extended, save_extended, token_names

tokenizers = pytest.importorskip("tokenizers", reason="tokenizers is a test-only extra")


def base_tokenizer(words=("hello", "world", "a", "cat", ".")):
    vocab = {"<unk>": 0, **{w: i + 1 for i, w in enumerate(words)}}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return tok


def check_every_id(tok, vocab, encode, decode):
    for i in range(vocab.text.size, vocab.size):
        assert encode(decode([i])) == [i]
    stream = TokenStream(vocab)
    ids = stream.encode([Text("hello cat"), Image(codes=torch.randint(0, 32, (3, 4))), Text("world"),
                         AudioCodec(codes=torch.randint(0, 16, (2, 5)))])
    assert encode(decode(list(ids))) == list(ids)


def test_tokenizers_tokenizer_round_trips_every_id(tmp_path, seed):
    tok = base_tokenizer()
    vocab = Vocabulary(tok, image_codes=32, audio_codec=(2, 16), max_grid=8)
    extend_tokenizer(tok, vocab)
    assert tok.get_vocab_size() == vocab.size
    assert tok.token_to_id("<|mmtok_image_begin|>") == vocab.special("image_begin")
    assert tok.token_to_id("<|mmtok_audio_codec_1_3|>") == vocab.codebooks("audio_codec")[1].offset + 3
    check_every_id(tok, vocab, lambda s: tok.encode(s).ids, lambda ids: tok.decode(ids, skip_special_tokens=False))
    save_extended(tok, vocab, tmp_path / "tok")
    loaded, vocab2 = load_extended(tmp_path / "tok", expected_hash=vocab.hash)
    assert vocab2.hash == vocab.hash and vocab2.size == vocab.size
    assert TokenStream(vocab2).encode([Text("a cat")]) == TokenStream(vocab).encode([Text("a cat")])
    with pytest.raises(VocabularyMismatchError):
        load_extended(tmp_path / "tok", expected_hash="0" * 64)
    # a different text tokenizer under the same mmtok tokens is refused
    other = base_tokenizer(("hello", "world", "a", "dog", "."))
    extend_tokenizer(other, Vocabulary(other, image_codes=32, audio_codec=(2, 16), max_grid=8))
    other.save(str(tmp_path / "tok" / "tokenizer.json"))
    with pytest.raises(VocabularyMismatchError, match="token table"):
        load_extended(tmp_path / "tok")


def test_transformers_tokenizer_round_trips_every_id(tmp_path, seed):
    transformers = pytest.importorskip("transformers", reason="transformers is a test-only extra")
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=base_tokenizer())
    vocab = Vocabulary(tok, image_codes=32, audio_codec=(2, 16), max_grid=8)
    extend_tokenizer(tok, vocab)
    assert len(tok) == vocab.size
    check_every_id(tok, vocab, lambda s: tok.encode(s, add_special_tokens=False),
                   lambda ids: tok.decode(ids, skip_special_tokens=False))
    save_extended(tok, vocab, tmp_path / "hf")
    loaded, vocab2 = load_extended(tmp_path / "hf", expected_hash=vocab.hash)
    assert len(loaded) == vocab.size and vocab2.hash == vocab.hash
    assert [loaded.convert_tokens_to_ids(n) for n in token_names(vocab)] == list(range(vocab.text.size, vocab.size))
    data = json.loads((tmp_path / "hf" / "mmtok_vocabulary.json").read_text())
    data["modalities"]["image"][0]["size"] = 31
    (tmp_path / "hf" / "mmtok_vocabulary.json").write_text(json.dumps(data))
    with pytest.raises(VocabularyMismatchError):
        load_extended(tmp_path / "hf")


def test_extend_refuses_a_tokenizer_of_another_size():
    tok = base_tokenizer()
    vocab = Vocabulary(tok, image_codes=8, max_grid=2)
    extend_tokenizer(tok, vocab)
    with pytest.raises(ValueError, match="before any mmtok tokens"):
        extend_tokenizer(tok, vocab)
    with pytest.raises(ValueError, match="byte tokenizer"):
        extend_tokenizer(base_tokenizer(), Vocabulary(image_codes=8))
