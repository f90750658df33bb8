"""Released models' id layouts: ids equal those recorded from the models' own processors in `transformers`
(Chameleon, Emu3, Janus; scripts/fixtures/make_convention_fixtures.py), the documented layouts of
Lumina-mGPT and AnyGPT on synthetic tokenizers, and strict parsing back."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmtok.stream import Audio, AudioCodec, Image, StreamDecodeError, Text, Vocabulary

tokenizers = pytest.importorskip("tokenizers", reason="the synthetic model tokenizers load with `tokenizers`")


def fixture(data_dir, name):
    folder = data_dir / "conventions" / name
    return (tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json")),
            json.loads((folder / "expected.json").read_text()))


def segments(expected, codes=None):
    before, after = expected["text"].split("{image}")
    codes = torch.tensor(expected["codes"]) if codes is None else codes
    return [Text(before), Image(codes=codes), Text(after)]


def test_chameleon_matches_its_processor(data_dir):
    tok, expected = fixture(data_dir, "chameleon")
    conv = Vocabulary.from_convention("chameleon", text_tokenizer=tok, grid=tuple(expected["grid"]))
    assert {str(c): int(i) for c, i in enumerate(conv.image_ids)} == expected["img2bpe"]
    ids = conv.encode(segments(expected))
    assert ids + [conv.token_id("<reserved08706>")] == expected["input_ids"]  # the processor's chat separator
    back = conv.decode(ids)
    assert torch.equal(back[1].codes, torch.tensor(expected["codes"]))
    assert Vocabulary.from_convention("anole", text_tokenizer=tok, grid=(4, 4)).encode(segments(expected)) == ids
    with pytest.raises(ValueError, match="grid"):
        conv.encode([Image(codes=torch.zeros(2, 8, dtype=torch.long))])
    broken = list(ids)
    broken[5] = conv.token_id("sits")
    with pytest.raises(StreamDecodeError, match="image code") as error:
        conv.decode(broken)
    assert error.value.position == 5


def test_emu3_matches_its_processor(data_dir):
    tok, expected = fixture(data_dir, "emu3")
    conv = Vocabulary.from_convention("emu3", text_tokenizer=tok)
    ids = conv.encode(segments(expected))
    assert ids == expected["input_ids"]
    back = conv.decode(ids)
    assert back[1].grid == tuple(expected["grid"]) and torch.equal(back[1].codes, torch.tensor(expected["codes"]))
    prompt = conv.encode([Text(expected["generation_text"])]) + conv.image_prompt(*expected["generation_grid"])
    assert prompt == expected["generation_prompt"]
    broken = list(ids)
    broken[8 + expected["grid"][1]] = conv.ids["eof"]  # where the first end-of-line belongs
    with pytest.raises(StreamDecodeError, match="end-of-line"):
        conv.decode(broken)


def test_janus_matches_its_processor(data_dir):
    tok, expected = fixture(data_dir, "janus")
    conv = Vocabulary.from_convention("janus", text_tokenizer=tok, num_image_tokens=16)
    ids = conv.encode(segments(expected))
    assert ids == expected["input_ids"]
    codes = torch.tensor(expected["codes"])
    assert ids.images == [codes.reshape(-1).tolist()]  # the separate image head's ids
    back = conv.decode(ids)
    assert torch.equal(back[1].codes, codes)
    assert conv.encode([Text(expected["generation_text"])]) + [conv.begin] == expected["generation_prompt"]
    with pytest.raises(StreamDecodeError, match="image-head"):
        conv.decode(list(ids))


def test_lumina_mgpt_layout(data_dir, seed):
    tok, expected = fixture(data_dir, "chameleon")
    conv = Vocabulary.from_convention("lumina_mgpt", text_tokenizer=tok)
    h, w = 2 * np.random.randint(1, 5), 2 * np.random.randint(1, 5)
    codes = torch.randint(0, 64, (h, w))
    ids = conv.encode(segments(expected, codes))
    names = {v: k for k, v in tok.get_vocab().items()}
    image = [names[i] for i in ids[3:-1]]
    assert image[0] == "<racm3:break>" and image[-1] == "<eoss>"
    assert image[1:3] == [f"<reserved{8800 + h // 2:05d}>", f"<reserved{8800 + w // 2:05d}>"]
    rows = np.array(image[3:-1]).reshape(h, w + 1)
    assert (rows[:, -1] == "<reserved08799>").all()
    letters = {chr(ord("A") + i): str(i) for i in range(10)}
    assert [[int("".join(letters[c] for c in n[6:-1])) for n in row] for row in rows[:, :-1]] == codes.tolist()
    assert torch.equal(conv.decode(ids)[1].codes, codes)
    with pytest.raises(ValueError, match="even"):
        conv.encode([Image(codes=torch.zeros(3, 4, dtype=torch.long))])


def anygpt_tokenizer():
    names = ["<s>", "</s>", "<soim>", "<eoim>", "<sosp>", "<eosp>", "<somu>", "<eomu>"]
    names += [f"<👀{i}>" for i in range(8192)] + [f"<🗣️{i}>" for i in range(1024)]
    names += [f"<🎶{i}>" for i in range(4 * 2048)]
    vocab = {"<unk>": 0, "hello": 1, "world": 2}
    for name in names:
        vocab[name] = len(vocab)
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.add_special_tokens(names)
    return tok


def test_anygpt_layout(seed):
    tok = anygpt_tokenizer()
    conv = Vocabulary.from_convention("anygpt", text_tokenizer=tok)
    image = torch.randint(0, 8192, (1, 32))
    speech = torch.randint(0, 1024, (1, 7))
    music = torch.randint(0, 2048, (4, 5))
    ids = conv.encode([Text("hello"), Image(codes=image), Audio(codes=speech), Text("world"),
                       AudioCodec(codes=music)], add_bos=False)
    # the documented strings: image / speech tokens as is, music frame by frame with level l offset by 2048 l
    text = ("hello<soim>" + "".join(f"<👀{c}>" for c in image[0].tolist()) + "<eoim>"
            + "<sosp>" + "".join(f"<🗣️{c}>" for c in speech[0].tolist()) + "<eosp>world<somu>"
            + "".join(f"<🎶{music[k, t] + 2048 * k}>" for t in range(5) for k in range(4)) + "<eomu>")
    assert ids == tok.encode(text, add_special_tokens=False).ids
    back = conv.decode(ids)
    assert torch.equal(back[1].codes, image) and torch.equal(back[2].codes, speech)
    assert torch.equal(back[4].codes, music)
    swapped = list(ids)
    start = ids.index(conv.token_id("<somu>"))
    swapped[start + 1], swapped[start + 2] = swapped[start + 2], swapped[start + 1]
    with pytest.raises(StreamDecodeError, match="level 0"):
        conv.decode(swapped)


def test_conventions_name_what_is_missing():
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>"))
    with pytest.raises(ValueError, match="'<s>'"):
        Vocabulary.from_convention("chameleon", text_tokenizer=tok)
    with pytest.raises(ValueError, match="unknown convention 'gpt4o'"):
        Vocabulary.from_convention("gpt4o", text_tokenizer=tok)
    with pytest.raises(ValueError, match="text tokenizer"):
        Vocabulary.from_convention("emu3")
