"""In-process tests of mmtok.data: input discovery (folder, JSONL, Qwen-VL, webdataset tar), the
TokenShards reader (random access, iteration, rank/worker splits, decode), --retry-failures and the
refusal to resume with different settings."""
from __future__ import annotations

import io
import json
import shutil
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from data_fixtures import save_tiny_image_tokenizer


def write_png(path, rng, size):
    PILImage.fromarray(rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)).save(path)


def add_member(tar, name, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def image_tok(tmp_path_factory):
    return save_tiny_image_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture
def inputs(tmp_path, seed):
    rng = np.random.default_rng(seed)
    folder = tmp_path / "images"
    (folder / "b").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    names = ["z.png", "a.png", "b/c.png", "b/a.jpg", "m.png"]
    for name in names:
        write_png(folder / name, rng, (int(rng.integers(40, 120)), int(rng.integers(40, 120))))
    write_png(folder / ".hidden" / "x.png", rng, (40, 40))
    (folder / "notes.txt").write_text("not media")
    conversations = tmp_path / "chat.json"
    conversations.write_text(json.dumps([
        {"id": "q1", "conversations": [{"from": "user", "value": "Picture 1: <img>images/a.png</img>\nWhat?"},
                                       {"from": "assistant", "value": "Noise <ref>x</ref><box>(1,2),(30,40)</box>"}]},
        {"id": "q2", "conversations": [{"from": "user", "value": "<img>images/m.png</img><img>images/z.png</img>"}]},
        {"id": "bad", "conversations": [{"from": "user"}]},
    ]))
    shard = tmp_path / "data-000.tar"
    with tarfile.open(shard, "w") as tar:
        for key in ("s0", "s1"):
            buffer = io.BytesIO()
            PILImage.fromarray(rng.integers(0, 255, size=(64, 64, 3), dtype=np.uint8)).save(buffer, format="PNG")
            add_member(tar, f"{key}.png", buffer.getvalue())
            add_member(tar, f"{key}.txt", f"caption {key}".encode())
    return {"folder": folder, "conversations": conversations, "tar": shard, "names": names}


def test_discovery_order_and_sources(inputs):
    from mmtok.data import discover

    items = discover([inputs["folder"], inputs["conversations"], inputs["tar"]])
    assert [i.key for i in items] == ["a.png", "b/a.jpg", "b/c.png", "m.png", "z.png", "chat.json#q1", "chat.json#q2",
                                      "chat.json#bad", "data-000.tar/s0.png", "data-000.tar/s1.png"]
    assert [i.modality for i in items[:5]] == ["image"] * 5 and items[5].modality == "conversation"
    assert items[8].meta == {"txt": "caption s0"} and items[8].member == "s0.png"
    manifest = inputs["folder"].parent / "list.jsonl"
    manifest.write_text('images/a.png\n{"audio": "x.flac", "key": "k", "lang": "en"}\n{"path": "notes.txt"}\n')
    a, b, c = discover(manifest)
    assert a.key == "images/a.png" and a.source == str(inputs["folder"] / "a.png")
    assert (b.modality, b.key, b.meta) == ("audio", "k", {"lang": "en"})
    assert c.modality == "invalid" and "modality" in c.error
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        discover(inputs["folder"] / "nothing-here")


@pytest.fixture
def tokenized(tmp_path, inputs, image_tok):
    from mmtok.data import tokenize_dataset

    out = tmp_path / "out"
    summary = tokenize_dataset([inputs["folder"], inputs["conversations"], inputs["tar"]], out,
                               image_tokenizer=image_tok, shard_size=3, batch_size=2, workers=0, progress=False)
    assert summary.manifest is not None and summary.failures == 1  # the malformed conversation
    return out


def test_token_shards_random_access_iteration_and_decode(tokenized, inputs, image_tok, seed):
    from mmtok.data import TokenShards
    from mmtok.stream import TokenStream
    from mmtok.stream.encoder import encode_segments
    from mmtok.stream.segments import Image

    shards = TokenShards(tokenized)
    assert len(shards) == 9
    stream = TokenStream.from_tokenizers(image_tokenizer=image_tok)
    assert shards.manifest["vocabulary"]["hash"] == stream.vocab_hash
    listed = list(shards)
    order = torch.randperm(len(shards)).tolist()
    for i in order:  # random access agrees with iteration and with the API one image at a time
        sample = shards[i]
        assert sample.key == listed[i].key and np.array_equal(sample.tokens, listed[i].tokens)
        assert shards.tokens(i).dtype == np.uint16
        if sample.modality == "image" and ".tar:" not in sample.source:
            codes = image_tok.encode([sample.source])[0]
            assert sample.source == str(inputs["folder"] / sample.key)
            assert np.array_equal(sample.tokens, encode_segments(stream.vocab, [Image(codes=codes)]))
            (pixels,) = shards.decode(i)
            assert torch.equal(pixels, image_tok.decode(codes[None])[0])
    assert shards[-1].key == listed[-1].key
    with pytest.raises(IndexError):
        shards[len(shards)]
    tar_sample = next(s for s in listed if s.key == "data-000.tar/s1.png")
    assert tar_sample.meta == {"txt": "caption s1"}
    with tarfile.open(inputs["tar"]) as tar:
        member = PILImage.open(io.BytesIO(tar.extractfile("s1.png").read()))
        codes = image_tok.encode([member])[0]
    assert np.array_equal(tar_sample.tokens, encode_segments(stream.vocab, [Image(codes=codes)]))
    # Qwen-VL conversations: the same ids as TokenStream.encode_qwen_vl (whose file has a bad record: drop it)
    good = inputs["conversations"].with_name("good.json")
    good.write_text(json.dumps(json.loads(inputs["conversations"].read_text())[:2]))
    for sample_id, ids in stream.encode_qwen_vl(good):
        (sample,) = [s for s in listed if s.key == f"chat.json#{sample_id}"]
        assert sample.tokens.tolist() == list(ids)
        assert len(sample.grid) == 2 * sum(isinstance(x, Image) for x in shards.segments(sample.index))


def test_splits_by_rank_and_dataloader_worker(tokenized):
    from mmtok.data import TokenShards

    shards = TokenShards(tokenized)
    keys = shards.keys()
    parts = [shards.split(r, 3).keys() for r in range(3)]
    assert sorted(sum(parts, [])) == sorted(keys) and len(set(sum(parts, []))) == len(keys)
    assert parts[1] == keys[1::3]
    seen = []
    for rank in range(2):
        loader = torch.utils.data.DataLoader(shards.iterable(rank, 2), batch_size=None, num_workers=2)
        seen += [s.key for s in loader]
    assert sorted(seen) == sorted(keys)


def test_retry_failures_and_changed_settings(tmp_path, inputs, image_tok):
    from mmtok.data import tokenize_dataset, verify

    manifest = tmp_path / "list.jsonl"
    manifest.write_text("images/a.png\nimages/late.png\nimages/z.png\nimages/m.png\n")
    out = tmp_path / "retry"
    run = dict(image_tokenizer=image_tok, shard_size=2, batch_size=2, workers=0, progress=False)
    first = tokenize_dataset(manifest, out, **run)
    assert first.failed_keys == ["images/late.png"]
    shard1 = (out / "shard-00001.bin").read_bytes()
    shutil.copy(inputs["folder"] / "a.png", inputs["folder"] / "late.png")  # the file shows up later
    again = tokenize_dataset(manifest, out, **run)
    assert again.processed == 0 and again.shards_done_before == 2  # plain rerun: nothing to do
    retried = tokenize_dataset(manifest, out, retry_failures=True, **run)
    assert retried.processed == 1 and retried.failures == 0 and retried.manifest["counts"]["failures"] == 0
    assert (out / "shard-00001.bin").read_bytes() == shard1 and (out / "failures.jsonl").read_text() == ""
    fresh = tmp_path / "fresh"
    tokenize_dataset(manifest, fresh, **run)
    assert (out / "shard-00000.bin").read_bytes() == (fresh / "shard-00000.bin").read_bytes()
    assert (out / "manifest.json").read_text() == (fresh / "manifest.json").read_text()
    assert verify(out) == []
    with pytest.raises(ValueError, match="shard_size"):
        tokenize_dataset(manifest, out, **{**run, "shard_size": 3})
