"""mmtok's special and code tokens inside a Hugging Face tokenizer, with ids equal to the Vocabulary's.

`extend_tokenizer(tokenizer, vocab)` appends one named token per id past the text ids (`<|mmtok_bos|>`,
`<|mmtok_res_12|>`, `<|mmtok_image_123|>`, `<|mmtok_audio_codec_1_17|>`, ...) to a `transformers` tokenizer
or a `tokenizers.Tokenizer` that is the vocabulary's text tokenizer, and checks every resulting id. The model
then needs `model.resize_token_embeddings(len(vocab))`. `save_extended(tokenizer, vocab, folder)` writes the
tokenizer and `mmtok_vocabulary.json`; `load_extended(folder)` reads both back, checks that the tokenizer's
text table is the one the vocabulary was built on and that every mmtok token has its id, and returns
(tokenizer, vocabulary) with the stored hash verified. Nothing here imports `transformers` unless the folder
holds a `transformers` tokenizer.
"""
from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Any

from .errors import VocabularyMismatchError
from .text import ExternalTextTokenizer
from .vocabulary import Vocabulary

VOCAB_FILE = "mmtok_vocabulary.json"


def token_names(vocab: Vocabulary) -> list[str]:
    """The names of ids text.size .. size-1, in id order."""
    names = [f"<|mmtok_{name}|>" for name in vocab.special_names]
    names += [f"<|mmtok_res_{n}|>" for n in range(1, vocab.max_grid + 1)]
    for r in vocab.range_list:
        prefix = r.modality if r.modality == "image" else f"{r.modality}_{r.codebook}"
        names += [f"<|mmtok_{prefix}_{c}|>" for c in range(r.size)]
    assert len(names) == vocab.size - vocab.text.size
    return names


def _is_tokenizers(tokenizer: Any) -> bool:
    return hasattr(tokenizer, "token_to_id") and hasattr(tokenizer, "get_vocab_size")


def _length(tokenizer: Any) -> int:
    return tokenizer.get_vocab_size(with_added_tokens=True) if _is_tokenizers(tokenizer) else len(tokenizer)


def _id_of(tokenizer: Any, name: str):
    if _is_tokenizers(tokenizer):
        return tokenizer.token_to_id(name)
    return tokenizer.convert_tokens_to_ids(name)


def extend_tokenizer(tokenizer: Any, vocab: Vocabulary) -> Any:
    """Add mmtok's tokens to `tokenizer` (in place; also returned). It must be the vocabulary's text tokenizer
    (same size and token table), not extended yet."""
    if vocab.text.describe().get("kind") != "external":
        raise ValueError("the vocabulary uses the built-in byte tokenizer; build it on the Hugging Face tokenizer")
    have, want = _length(tokenizer), vocab.text.size
    if have != want:
        raise ValueError(f"tokenizer has {have} ids but the vocabulary's text part has {want}: pass the tokenizer"
                         " the vocabulary was built on, before any mmtok tokens were added")
    _check_text_table(tokenizer, vocab.text.describe(), "tokenizer")
    names = token_names(vocab)
    if _is_tokenizers(tokenizer):
        from tokenizers import AddedToken

        tokenizer.add_special_tokens([AddedToken(n, normalized=False) for n in names])
    else:
        from tokenizers import AddedToken

        tokenizer.add_tokens([AddedToken(n, normalized=False, special=True) for n in names], special_tokens=True)
    check_extended(tokenizer, vocab)
    return tokenizer


def check_extended(tokenizer: Any, vocab: Vocabulary, *, source: str = "tokenizer") -> None:
    """Every mmtok token name has the Vocabulary's id in `tokenizer`."""
    start = vocab.text.size
    for offset, name in enumerate(token_names(vocab)):
        got = _id_of(tokenizer, name)
        if got != start + offset:
            raise VocabularyMismatchError(f"{source}: {name} has id {got}, the vocabulary says {start + offset}")


def _table_sha(tokenizer: Any, size: int) -> str:
    table = [(str(k), int(v)) for k, v in tokenizer.get_vocab().items() if int(v) < size]
    return hashlib.sha256(json.dumps(sorted(table), ensure_ascii=False).encode("utf-8")).hexdigest()


def _check_text_table(tokenizer: Any, info: dict, source: str) -> None:
    stored = info.get("vocab_sha256")
    if stored is not None and _table_sha(tokenizer, int(info["size"])) != stored:
        raise VocabularyMismatchError(f"{source}: its first {info['size']} ids are not the text tokenizer the"
                                      " vocabulary was built on (token table hash differs)")


class BaseTokenizerView:
    """The text part (ids below the vocabulary's text size) of an extended tokenizer, describing itself as the
    original text tokenizer did, so a reloaded vocabulary keeps its hash."""

    is_mmtok_text_tokenizer = True

    def __init__(self, tokenizer: Any, info: dict):
        self.tokenizer = tokenizer
        self.size = int(info["size"])
        self._info = dict(info)
        self._adapter = ExternalTextTokenizer(tokenizer)

    def encode(self, text: str) -> list[int]:
        ids = self._adapter.encode(text)
        bad = [i for i in ids if i >= self.size]
        if bad:
            raise ValueError(f"text {text[:40]!r} encodes to mmtok token ids {bad[:5]}; write blocks as segments")
        return ids

    def decode(self, ids) -> str:
        return self._adapter.decode(ids)

    def describe(self) -> dict:
        return dict(self._info)


def save_extended(tokenizer: Any, vocab: Vocabulary, folder) -> pathlib.Path:
    """Write the extended tokenizer (save_pretrained, or tokenizer.json for `tokenizers`) and the vocabulary."""
    check_extended(tokenizer, vocab)
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if _is_tokenizers(tokenizer):
        tokenizer.save(str(folder / "tokenizer.json"))
    else:
        tokenizer.save_pretrained(str(folder))
    vocab.save(folder / VOCAB_FILE)
    return folder


def load_extended(folder, *, expected_hash: str | None = None) -> tuple[Any, Vocabulary]:
    """(tokenizer, vocabulary) from a save_extended folder; raises VocabularyMismatchError on any id that
    differs, and if expected_hash is given and is not the vocabulary's."""
    folder = pathlib.Path(folder)
    vocab_file = folder / VOCAB_FILE
    if not vocab_file.is_file():
        raise FileNotFoundError(f"{folder}: no {VOCAB_FILE} (not saved with mmtok.stream.hf_tokenizer.save_extended)")
    data = json.loads(vocab_file.read_text())
    if (folder / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    elif (folder / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    else:
        raise FileNotFoundError(f"{folder}: no tokenizer_config.json or tokenizer.json")
    info = data["text"]
    _check_text_table(tokenizer, info, str(folder))
    vocab = Vocabulary.from_dict(data, BaseTokenizerView(tokenizer, info), source=str(vocab_file))
    check_extended(tokenizer, vocab, source=str(folder))
    if _length(tokenizer) != vocab.size:
        raise VocabularyMismatchError(f"{folder}: tokenizer has {_length(tokenizer)} ids, the vocabulary {vocab.size}")
    if expected_hash is not None:
        vocab.check_hash(expected_hash, source=str(folder))
    return tokenizer, vocab
