"""Parquet, Arrow and `datasets` inputs of `mmtok tokenize` (mmtok.data.tables): the same media as rows give
the same tokens as files; bad rows are failure records; a missing / ambiguous column is refused before work.

Tables are made with pyarrow and (where installed) with `datasets` itself; the image tokenizer is the
tiny LlamaGen fixture, in-process (workers=0) except one DataLoader run.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image as PILImage

from data_fixtures import save_tiny_image_tokenizer

pytestmark = pytest.mark.timeout(180)


def png_bytes(rng, size=(40, 32)) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def wav_bytes(rng, seconds=0.6, rate=22050) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, (0.2 * rng.standard_normal(int(seconds * rate))).astype(np.float32), rate, format="WAV")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def image_tok(tmp_path_factory):
    return save_tiny_image_tokenizer(tmp_path_factory.mktemp("tok") / "image_tokenizer")


@pytest.fixture
def rng(seed):
    return np.random.default_rng(seed)


@pytest.fixture
def run(image_tok):
    from mmtok.data import tokenize_dataset

    def go(inputs, out, **options):
        settings = dict(image_tokenizer=image_tok, shard_size=3, batch_size=2, workers=0, progress=False)
        return tokenize_dataset(inputs, out, **{**settings, **options})
    return go


@pytest.fixture
def photos(tmp_path, rng):
    """Seven random PNGs as files, and the same bytes."""
    folder = tmp_path / "photos"
    folder.mkdir()
    images = {f"p{n}.png": png_bytes(rng, (int(rng.integers(24, 60)), int(rng.integers(24, 60)))) for n in range(7)}
    for name, data in images.items():
        (folder / name).write_bytes(data)
    return folder, images


def samples(out) -> dict:
    from mmtok.data import TokenShards

    shards = TokenShards(out)
    return {s.key: s for s in shards}


def failures(out) -> dict:
    return {r["key"]: r["error"] for r in map(json.loads, (out / "failures.jsonl").read_text().splitlines())}


def assert_same_tokens(table_out, files_out, keys=None):
    got, want = samples(table_out), samples(files_out)
    keys = sorted(want) if keys is None else keys
    assert sorted(got) == sorted(keys)
    for key in keys:
        assert np.array_equal(got[key].tokens, want[key].tokens), key
        assert got[key].grid == want[key].grid and got[key].modality == want[key].modality


def image_struct_table(images: dict, captions: bool = True) -> pa.Table:
    names = list(images)
    columns = {"key": names,
               "image": pa.array([{"bytes": images[n], "path": n} for n in names],
                                 pa.struct([("bytes", pa.binary()), ("path", pa.string())]))}
    if captions:
        columns["caption"] = [f"a photo called {n}" for n in names]
        columns["width"] = list(range(len(names)))
    return pa.table(columns)


def test_parquet_image_struct_rows_equal_files_and_keep_metadata(tmp_path, photos, run):
    folder, images = photos
    table = tmp_path / "photos.parquet"
    pq.write_table(image_struct_table(images), table, row_group_size=2)  # several row groups, shards of 3
    run(folder, tmp_path / "files")
    summary = run(table, tmp_path / "table")
    assert summary.samples == 7 and summary.failures == 0
    assert_same_tokens(tmp_path / "table", tmp_path / "files")
    got = samples(tmp_path / "table")
    assert got["p3.png"].meta == {"caption": "a photo called p3.png", "width": 3}
    assert got["p3.png"].source == f"{table}#3"


def test_dataloader_workers_read_rows_like_in_process(tmp_path, photos, run):
    folder, images = photos
    table = tmp_path / "photos.parquet"
    pq.write_table(image_struct_table(images), table, row_group_size=3)
    run(table, tmp_path / "a")
    run(table, tmp_path / "b", workers=2)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    for name in names:
        if name.startswith("shard-") or name == "failures.jsonl":
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_hub_parquet_layout_binary_column_keys_are_file_and_row(tmp_path, photos, run):
    folder, images = photos
    names = list(images)
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "README.md").write_text("dataset card\n")
    for part, chunk in enumerate((names[:4], names[4:])):
        pq.write_table(pa.table({"jpg": pa.array([images[n] for n in chunk], pa.binary()),
                                 "txt": [n for n in chunk]}), repo / "data" / f"train-0000{part}-of-00002.parquet")
    summary = run(repo, tmp_path / "out")
    assert summary.samples == 7
    got = samples(tmp_path / "out")
    want = samples(run(folder, tmp_path / "files") and tmp_path / "files")
    assert sorted(got) == sorted([f"data/train-00000-of-00002.parquet#{r}" for r in range(4)]
                                 + [f"data/train-00001-of-00002.parquet#{r}" for r in range(3)])
    for key, sample in got.items():
        name = sample.meta["txt"]
        assert np.array_equal(sample.tokens, want[name].tokens), key


def test_datasets_save_to_disk_and_hub_parquet_equal_files(tmp_path, photos, run):
    datasets = pytest.importorskip("datasets", reason="the datasets package (test extra) makes these inputs")
    folder, images = photos
    names = list(images)
    paths = [str(folder / n) for n in names]
    ds = datasets.Dataset.from_dict({"key": names, "image": paths, "text": [n.upper() for n in names]})
    ds = ds.cast_column("image", datasets.Image())
    ds.save_to_disk(str(tmp_path / "saved"), max_shard_size="4KB")
    ds.to_parquet(str(tmp_path / "hub.parquet"))
    dd = datasets.DatasetDict({"train": ds.select(range(4)), "test": ds.select(range(4, 7))})
    dd.save_to_disk(str(tmp_path / "dict"))
    run(folder, tmp_path / "files")
    for name, source in (("saved", tmp_path / "saved"), ("hub", tmp_path / "hub.parquet"), ("dict", tmp_path / "dict")):
        summary = run(source, tmp_path / f"out-{name}")
        assert summary.samples == 7 and summary.failures == 0, name
        assert_same_tokens(tmp_path / f"out-{name}", tmp_path / "files")
        assert samples(tmp_path / f"out-{name}")["p2.png"].meta == {"text": "P2.PNG"}


def test_datasets_audio_column_equals_audio_files(tmp_path, rng):
    datasets = pytest.importorskip("datasets", reason="the datasets package (test extra) makes these inputs")
    from mmtok.audio.tokenizer import AudioTokenizer
    from mmtok.data import tokenize_dataset

    folder = tmp_path / "speech"
    folder.mkdir()
    clips = {f"c{n}.wav": wav_bytes(rng, seconds=float(rng.uniform(0.3, 0.9))) for n in range(3)}
    for name, data in clips.items():
        (folder / name).write_bytes(data)
    table = pa.table({"key": list(clips), "sentence": ["hello"] * 3,
                      "audio": pa.array([{"bytes": d, "path": n} for n, d in clips.items()],
                                        pa.struct([("bytes", pa.binary()), ("path", pa.string())]))})
    features = datasets.Features({"key": datasets.Value("string"), "sentence": datasets.Value("string"),
                                  "audio": datasets.Audio()})
    datasets.Dataset(table.cast(features.arrow_schema)).to_parquet(str(tmp_path / "speech.parquet"))
    options = dict(audio_tokenizer=AudioTokenizer(seed=3), shard_size=2, workers=0, progress=False)
    tokenize_dataset(folder, tmp_path / "files", **options)
    summary = tokenize_dataset(tmp_path / "speech.parquet", tmp_path / "table", **options)
    assert summary.samples == 3
    assert_same_tokens(tmp_path / "table", tmp_path / "files")


def test_bad_rows_are_failure_records_and_the_run_finishes(tmp_path, photos, run, rng):
    folder, images = photos
    names = list(images)[:3]
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    rows = [{"bytes": images[n], "path": None} for n in names] + [
        {"bytes": b"\x89PNG garbage" + rng.bytes(50), "path": None},   # garbage bytes
        {"bytes": None, "path": None},                                # nothing at all
        {"bytes": None, "path": str(tmp_path / "missing.png")},       # a path that is not there
        None]                                                         # a null struct
    keys = names + ["garbage", "empty", "missing", None]
    table = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"key": keys, "image": pa.array(rows, struct)}), table)
    summary = run(table, tmp_path / "out")
    assert summary.samples == 3 and summary.failures == 4
    errors = failures(tmp_path / "out")
    assert "not a readable image" in errors["garbage"] and f"{table}#3" in errors["garbage"]
    assert "neither bytes nor a path" in errors["empty"]
    assert "missing.png" in errors["missing"]
    assert "null or empty" in errors["bad.parquet#6"] or "null key" in errors["bad.parquet#6"]
    run(folder, tmp_path / "files")
    assert_same_tokens(tmp_path / "out", tmp_path / "files", keys=names)


def test_missing_and_ambiguous_columns_are_refused_before_work(tmp_path, photos, run):
    folder, images = photos
    table = tmp_path / "two.parquet"
    blobs = list(images.values())
    pq.write_table(pa.table({"a": pa.array(blobs, pa.binary()), "b": pa.array(blobs, pa.binary()),
                             "caption": ["x"] * len(blobs)}), table)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"several media columns.*a \(image\), b \(image\)"):
        run(table, out)
    with pytest.raises(ValueError, match=r"two\.parquet: no column 'jpg' \(--image-column\); its columns: a, b, caption"):
        run(table, out, image_column="jpg")
    with pytest.raises(ValueError, match=r"no column 'name' \(--key-column\)"):
        run(table, out, image_column="a", key_column="name")
    pq.write_table(pa.table({"caption": ["x"]}), tmp_path / "text.parquet")
    with pytest.raises(ValueError, match=r"text\.parquet: no image or audio column.*its columns: caption"):
        run(tmp_path / "text.parquet", out)
    assert not out.exists()  # refused before any work: not even the output folder
    assert run(table, out, image_column="b").samples == len(blobs)


def test_cli_columns_and_exit_status(tmp_path, photos, image_tok, capsys):
    from mmtok.__main__ import main

    folder, images = photos
    tok = tmp_path / "tok"
    image_tok.save_pretrained(tok)
    table = tmp_path / "t.parquet"
    pq.write_table(pa.table({"name": list(images), "img": pa.array(list(images.values()), pa.binary()),
                             "png": pa.array(list(images.values()), pa.binary())}), table)
    args = ["tokenize", str(table), "--out", str(tmp_path / "out"), "--image-tokenizer", str(tok), "--workers", "0",
            "--no-progress", "--shard-size", "4"]
    assert main(args) == 2
    assert "img (image), png (image)" in capsys.readouterr().err
    assert main(args + ["--image-column", "png", "--key-column", "name"]) == 0
    assert sorted(samples(tmp_path / "out")) == sorted(images)
