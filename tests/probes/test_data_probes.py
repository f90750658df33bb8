"""Probe suite, data pipeline: each hostile or unlucky input of issue #23 (its defect number in the test
name) replayed against `mmtok tokenize` / `mmtok.data`, asserting the promised behaviour: a failure
record with a clear, deterministic message naming the input (the run goes on and finishes), a refusal
before work starts naming the argument, or a correct result. Table: docs/robustness.md, "Data pipeline".

In-process (workers=0) with the tiny LlamaGen fixture, so the whole file stays inside CI's time.
"""
from __future__ import annotations

import errno
import io
import json
import os
import pathlib
import subprocess
import tarfile

import numpy as np
import pytest
from PIL import Image as PILImage

from data_fixtures import save_tiny_image_tokenizer

pytestmark = pytest.mark.timeout(120)


# ---- helpers -------------------------------------------------------------------------------------------
def png_bytes(rng, size=(40, 40)) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def add_member(tar, name, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def output_files(out: pathlib.Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def failures(out: pathlib.Path) -> dict[str, str]:
    return {r["key"]: r["error"] for r in map(json.loads, (out / "failures.jsonl").read_text().splitlines())}


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok") / "image_tokenizer"
    save_tiny_image_tokenizer(folder)
    return folder


@pytest.fixture(scope="module")
def image_tok(tok_dir):
    from mmtok.image import ImageTokenizer

    return ImageTokenizer.from_pretrained(tok_dir)


@pytest.fixture
def rng(seed):
    return np.random.default_rng(seed)


@pytest.fixture
def run(image_tok):
    from mmtok.data import tokenize_dataset

    def go(inputs, out, **options):
        settings = dict(image_tokenizer=image_tok, shard_size=2, batch_size=2, workers=0, progress=False)
        return tokenize_dataset(inputs, out, **{**settings, **options})
    return go


@pytest.fixture
def cli(capsys):
    from mmtok.__main__ import main

    def go(*args):
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err
    return go


@pytest.fixture
def photos(tmp_path, rng):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        (folder / name).write_bytes(png_bytes(rng))
    return folder


def tokens_of(out, key):
    from mmtok.data import TokenShards

    shards = TokenShards(out)
    (index,) = [i for i, k in enumerate(shards.keys()) if k == key]
    return shards[index].tokens


def expected_tokens(image_tok, image):
    from mmtok.stream import TokenStream
    from mmtok.stream.encoder import encode_segments
    from mmtok.stream.segments import Image

    stream = TokenStream.from_tokenizers(image_tokenizer=image_tok)
    return encode_segments(stream.vocab, [Image(codes=image_tok.encode([image])[0])])


# ---- 1: names and keys that are not valid UTF-8 ------------------------------------------------------------
def test_d01_non_utf8_file_names_keys_and_tar_members(tmp_path, rng, run, image_tok):
    from mmtok.data import verify
    from mmtok.data.cli import format_summary

    folder = tmp_path / "media"
    folder.mkdir()
    (folder / os.fsdecode(b"x_\xff.png")).write_bytes(png_bytes(rng))
    (folder / "ok.png").write_bytes(png_bytes(rng))
    manifest = tmp_path / "list.jsonl"
    manifest.write_text('{"path": "media/ok.png", "key": "k\\ud800"}\n')
    shard = tmp_path / "d.tar"
    with tarfile.open(shard, "w", format=tarfile.GNU_FORMAT, encoding="utf-8", errors="surrogateescape") as tar:
        add_member(tar, os.fsdecode(b"t_\xfe.png"), png_bytes(rng))
    out = tmp_path / "out"
    summary = run([folder, manifest, shard], out)
    assert summary.manifest is not None and summary.failures == 0
    from mmtok.data import TokenShards

    shards = TokenShards(out)
    assert sorted(shards.keys()) == sorted(["ok.png", "x_\\udcff.png", "k\\ud800", "d.tar/t_\\udcfe.png"])
    sources = {s.key: s.source for s in shards}
    assert sources["x_\\udcff.png"] == str(folder) + "/x_\\udcff.png"
    assert sources["d.tar/t_\\udcfe.png"] == f"{shard}:t_\\udcfe.png"
    assert verify(out) == []
    format_summary(summary, out).encode("utf-8")  # printable


# ---- 4: FIFO / device inputs --------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_d04_fifo_and_device_inputs_are_skipped_unopened(tmp_path, photos, run):
    from mmtok.audio.tokenizer import AudioTokenizer

    os.mkfifo(photos / "x.wav")
    os.mkfifo(tmp_path / "pipe.png")
    manifest = tmp_path / "list.jsonl"
    manifest.write_text(json.dumps({"path": "pipe.png", "key": "fifo"}) + "\n" +
                        json.dumps({"path": "/dev/zero", "key": "zero", "modality": "image"}) + "\n")
    out = tmp_path / "out"
    summary = run([photos, manifest], out, audio_tokenizer=AudioTokenizer(seed=0))
    assert summary.manifest is not None and summary.samples == 3
    failed = failures(out)
    assert "is a FIFO, not a regular file" in failed["x.wav"] and str(photos / "x.wav") in failed["x.wav"]
    assert "is a FIFO" in failed["fifo"] and "is a character device" in failed["zero"]
    with pytest.raises(ValueError, match="is a FIFO"):  # a FIFO given as an input itself: refused up front
        run([photos / "x.wav"], tmp_path / "out2")


# ---- 5: truncated tar --------------------------------------------------------------------------------------
def _three_member_tar(path, rng):
    with tarfile.open(path, "w") as tar:
        for name in ("a.png", "b.png", "c.png"):
            add_member(tar, name, png_bytes(rng, (48, 48)))
    with tarfile.open(path) as tar:
        return {m.name: m for m in tar}


@pytest.mark.parametrize("cut", ["in_data", "in_header"])
def test_d05_truncated_tar_keeps_its_intact_members(tmp_path, rng, run, cut):
    shard = tmp_path / "t.tar"
    members = _three_member_tar(shard, rng)
    end = members["c.png"].offset_data + 10 if cut == "in_data" else members["c.png"].offset + 100
    data = shard.read_bytes()
    shard.write_bytes(data[:end])
    out = tmp_path / "out"
    summary = run([shard], out)
    from mmtok.data import TokenShards

    assert TokenShards(out).keys() == ["t.tar/a.png", "t.tar/b.png"] and summary.manifest is not None
    failed = failures(out)
    if cut == "in_data":
        assert list(failed) == ["t.tar/c.png"] and "truncated" in failed["t.tar/c.png"]
    else:
        assert list(failed) == ["t.tar#end"] and "members before it were kept" in failed["t.tar#end"]


# ---- 8: exit status with failed inputs; 12: options refused up front -------------------------------------------
def test_d08_exit_status_follows_the_rule(tmp_path, photos, tok_dir, cli):
    base = ["tokenize", photos, "--image-tokenizer", tok_dir, "--workers", 0, "--no-progress"]
    code, stdout, _ = cli(*base, "--out", tmp_path / "good")
    assert code == 0 and "0 failed" in stdout
    (photos / "broken.png").write_bytes(b"not a png")
    code, stdout, _ = cli(*base, "--out", tmp_path / "bad")
    assert code == 1 and "1 failed" in stdout and "broken.png" in stdout
    code, _, stderr = cli(*base, "--out", tmp_path / "bad")  # a rerun of a finished run with failures: still 1
    assert code == 1
    code, _, stderr = cli(*base, "--out", tmp_path / "usage", "--image-size", 7)
    assert code == 2 and "--image-size" in stderr and not (tmp_path / "usage").exists()


@pytest.mark.parametrize("options, named", [
    ({"image_size": 7}, "image_size"), ({"image_size": 0}, "image_size"), ({"image_size": -8}, "image_size"),
    ({"image_size": 64, "max_grid": 8}, "max_grid"), ({"max_grid": 0}, "max_grid"),
    ({"video_fps": 0.0}, "video_fps"), ({"video_max_frames": 0}, "video_max_frames"),
])
def test_d12_bad_options_are_refused_before_work(tmp_path, photos, run, options, named):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=named):
        run([photos], out, **options)
    assert not out.exists()


def test_d12_inputs_without_their_tokenizer_are_refused(tmp_path, photos):
    from mmtok.audio.tokenizer import AudioTokenizer
    from mmtok.data import tokenize_dataset

    with pytest.raises(ValueError, match="--image-tokenizer"):
        tokenize_dataset([photos], tmp_path / "out", audio_tokenizer=AudioTokenizer(seed=0), workers=0,
                         progress=False)
    assert not (tmp_path / "out").exists()


# ---- 9: a corrupt shard is redone on resume ------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["bin", "parquet", "record"])
def test_d09_corrupt_shard_is_redone_and_ends_identical(tmp_path, photos, run, damage):
    from mmtok.data import verify

    (photos / "broken.png").write_bytes(b"not a png")
    clean, out = tmp_path / "clean", tmp_path / "out"
    run([photos], clean)
    run([photos], out)
    path = out / {"bin": "shard-00001.bin", "parquet": "shard-00001.parquet", "record": "shard-00001.json"}[damage]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    assert verify(out) != []
    for retry in (False, True):
        again = run([photos], out, retry_failures=retry)
        if not retry:
            assert again.shards_done_before == 1 and again.shards_written == 1
            assert len(again.shards_redone) == 1 and "shard-00001" in again.shards_redone[0]
    assert output_files(out) == output_files(clean)
    assert verify(out) == []


# ---- 10: deterministic error texts ----------------------------------------------------------------------------
def test_d10_error_texts_are_deterministic(tmp_path, rng, run):
    shard = tmp_path / "m.tar"
    with tarfile.open(shard, "w") as tar:
        add_member(tar, "garbage.png", rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
        add_member(tar, "garbage.mp4", rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
        add_member(tar, "good.png", png_bytes(rng))
    run([shard], tmp_path / "one")
    run([shard], tmp_path / "two")
    one, two = (tmp_path / "one" / "failures.jsonl").read_text(), (tmp_path / "two" / "failures.jsonl").read_text()
    assert one == two and len(one.splitlines()) == 2
    assert " at 0x" not in one and "/tmp" not in one.replace(str(tmp_path), "")
    assert "m.tar:garbage.mp4" in failures(tmp_path / "one")["m.tar/garbage.mp4"]
    assert [p.read_bytes() for p in sorted((tmp_path / "one").glob("shard-*.json"))] == \
           [p.read_bytes() for p in sorted((tmp_path / "two").glob("shard-*.json"))]


# ---- 13: link / device tar members, unreadable subfolders ------------------------------------------------------
def test_d13_link_and_device_members_and_unreadable_folders_are_recorded(tmp_path, rng, run, photos, monkeypatch):
    shard = tmp_path / "l.tar"
    with tarfile.open(shard, "w") as tar:
        add_member(tar, "a.png", png_bytes(rng))
        for name, kind in (("s.png", tarfile.SYMTYPE), ("h.png", tarfile.LNKTYPE), ("d.png", tarfile.CHRTYPE)):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, "a.png" if kind != tarfile.CHRTYPE else ""
            tar.addfile(info)
    (photos / "sub").mkdir()
    (photos / "sub" / "x.png").write_bytes(png_bytes(rng))
    real_scandir = os.scandir

    def scandir(path="."):  # as if the folder had mode 000 (root ignores modes)
        if os.fspath(path) == str(photos / "sub"):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_scandir(path)
    monkeypatch.setattr(os, "scandir", scandir)
    out = tmp_path / "out"
    summary = run([shard, photos], out)
    assert summary.samples == 4 and summary.manifest is not None
    failed = failures(out)
    assert "symbolic link member" in failed["l.tar/s.png"] and "hard link member" in failed["l.tar/h.png"]
    assert "character device member" in failed["l.tar/d.png"]
    assert "folder cannot be listed (Permission denied)" in failed["sub/"]


# ---- 14: GNU sparse tar members ---------------------------------------------------------------------------------
def _sparse_member(name: str, data: bytes, regions: list[tuple[int, int]]) -> bytes:
    """An old-GNU sparse member (type 'S'): header with the region map, then the regions' bytes."""
    stored = b"".join(data[o: o + n] for o, n in regions)
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mtime = len(stored), tarfile.GNUTYPE_SPARSE, 0
    header = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    for i, (offset, length) in enumerate(regions):
        header[386 + 24 * i: 398 + 24 * i] = tarfile.itn(offset, 12, tarfile.GNU_FORMAT)
        header[398 + 24 * i: 410 + 24 * i] = tarfile.itn(length, 12, tarfile.GNU_FORMAT)
    header[483:495] = tarfile.itn(len(data), 12, tarfile.GNU_FORMAT)
    header[148:156] = b" " * 8
    header[148:155] = b"%06o\0" % sum(header[:512])
    return bytes(header) + stored + b"\0" * (-len(stored) % 512)


def _plain_member(name: str, data: bytes) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 0
    return info.tobuf(format=tarfile.GNU_FORMAT) + data + b"\0" * (-len(data) % 512)


@pytest.mark.parametrize("sparse_last", [False, True])
def test_d14_gnu_sparse_members_are_read_through_their_map(tmp_path, rng, run, image_tok, sparse_last):
    pixels = rng.integers(1, 255, size=(64, 64, 3), dtype=np.uint8)
    pixels[16:48] = 0  # a hole: 32 black rows
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="BMP")
    bmp = buffer.getvalue()
    hole = (len(bmp) - 64 * 64 * 3 + 16 * 192, len(bmp) - 64 * 64 * 3 + 48 * 192)
    assert not bmp[hole[0]: hole[1]].strip(b"\0")
    members = [_sparse_member("a.bmp", bmp, [(0, hole[0]), (hole[1], len(bmp) - hole[1])]),
               _plain_member("b.png", png_bytes(rng))]
    shard = tmp_path / "s.tar"
    shard.write_bytes(b"".join(members[::-1] if sparse_last else members) + b"\0" * 1024)
    with tarfile.open(shard) as tar:  # the fixture is a sparse member tarfile itself reads back right
        assert tar.getmember("a.bmp").issparse() and tar.extractfile("a.bmp").read() == bmp
    out = tmp_path / "out"
    summary = run([shard], out)
    assert summary.failures == 0
    want = expected_tokens(image_tok, PILImage.open(io.BytesIO(bmp)).convert("RGB"))
    assert np.array_equal(tokens_of(out, "s.tar/a.bmp"), want)


# ---- 15: duplicate keys -----------------------------------------------------------------------------------------
def test_d15_duplicate_keys_are_recorded_first_one_wins(tmp_path, rng, run, photos):
    manifest = tmp_path / "list.jsonl"
    manifest.write_text(json.dumps({"path": "photos/a.png", "key": "dup"}) + "\n" +
                        json.dumps({"path": "photos/b.png", "key": "dup"}) + "\n")
    shard = tmp_path / "d.tar"
    with tarfile.open(shard, "w") as tar:
        add_member(tar, "s.png", png_bytes(rng))
        add_member(tar, "s.png", png_bytes(rng))
    chat = tmp_path / "chat.json"
    chat.write_text(json.dumps([{"id": "q", "conversations": [{"from": "user", "value": "<img>photos/a.png</img>"}]},
                                {"id": "q", "conversations": [{"from": "user", "value": "<img>photos/c.png</img>"}]}]))
    out = tmp_path / "out"
    run([manifest, shard, chat], out)
    from mmtok.data import TokenShards

    shards = TokenShards(out)
    assert sorted(shards.keys()) == ["chat.json#q", "d.tar/s.png", "dup"]
    assert [s.source for s in shards if s.key == "dup"] == [str(tmp_path / "photos" / "a.png")]
    failed = {r["key"]: r for r in map(json.loads, (out / "failures.jsonl").read_text().splitlines())}
    assert sorted(failed) == ["chat.json#q", "d.tar/s.png", "dup"]
    assert all("duplicate key" in r["error"] and "first given by" in r["error"] for r in failed.values())
    assert failed["dup"]["source"] == str(tmp_path / "photos" / "b.png")


# ---- 16: leftovers of killed renames, stale tokenizer copies ------------------------------------------------------
def test_d16_killed_rename_leftovers_are_removed_and_a_stale_copy_replaced(tmp_path, photos, run, image_tok):
    from mmtok.data import TokenShards, verify
    from mmtok.image import ImageTokenizer

    clean, out = tmp_path / "clean", tmp_path / "out"
    run([photos], clean)
    run([photos], out)
    pid = dead_pid()
    for name in ("run.json", "manifest.json", "failures.jsonl"):
        (out / f"{name}.tmp-{pid}").write_text("half")
    (out / f"run.json.tmp-otherhost-{pid}").write_text("another machine, killed an hour ago")
    os.utime(out / f"run.json.tmp-otherhost-{pid}", (0, 0))
    (out / "manifest.json.tmp-otherhost-1").write_text("another machine, writing now")
    (out / "tokenizers" / f".image.tmp-{pid}").mkdir()
    (out / "tokenizers" / f".image.tmp-{pid}" / "config.json").write_text("{")
    stale = ImageTokenizer.from_pretrained(out / "tokenizers" / "image")
    with __import__("torch").no_grad():
        next(stale.model.parameters()).add_(1.0)
    stale.save_pretrained(out / "tokenizers" / "image")  # another tokenizer's copy left in place
    assert any("tokenizer image: model.safetensors differs" in p for p in verify(out))
    with pytest.raises(ValueError, match="does not match"):
        TokenShards(out).decode(0)
    run([photos], out)
    assert (out / "manifest.json.tmp-otherhost-1").exists()  # may be a live write on another machine: kept
    (out / "manifest.json.tmp-otherhost-1").unlink()
    assert output_files(out) == output_files(clean)
    assert verify(out) == [] and len(TokenShards(out).decode(0)) == 1


# ---- 17: verify never crashes ----------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["record_garbage", "manifest_no_counts", "shard_entry", "manifest_not_json",
                                    "tokenizer_copy", "index_garbage", "vocab_types"])
def test_d17_verify_reports_damage_without_a_traceback(tmp_path, photos, run, cli, damage):
    from mmtok.data import verify

    out = tmp_path / "out"
    run([photos], out)
    manifest = json.loads((out / "manifest.json").read_text())
    if damage == "record_garbage":
        (out / "shard-00000.json").write_bytes(b"\x00garbage{")
    elif damage == "manifest_no_counts":
        del manifest["counts"]
    elif damage == "shard_entry":
        del manifest["shards"][0]["tokens_file"]
    elif damage == "manifest_not_json":
        (out / "manifest.json").write_bytes(b"{\"format\": ")
    elif damage == "tokenizer_copy":
        (out / "tokenizers" / "image" / "config.json").write_text("{}")
    elif damage == "index_garbage":
        (out / "shard-00000.parquet").write_bytes(b"PAR1 not really")
    elif damage == "vocab_types":
        manifest["vocabulary"]["size"] = "big"
    if damage in ("manifest_no_counts", "shard_entry", "vocab_types"):
        (out / "manifest.json").write_text(json.dumps(manifest))
    problems = verify(out)
    assert problems, damage
    code, stdout, _ = cli("verify", out)
    assert code == 1 and "FAIL" in stdout


def test_d17_verify_of_a_folder_that_is_no_output_exits_2(tmp_path, cli):
    code, _, stderr = cli("verify", tmp_path)
    assert code == 2 and "not an mmtok tokenize output" in stderr
    code, _, stderr = cli("verify", tmp_path / "nothing")
    assert code == 2 and "not a folder" in stderr


# ---- 18: a JSONL line that is not UTF-8 ---------------------------------------------------------------------------
def test_d18_invalid_utf8_jsonl_line_is_one_failure_naming_file_and_line(tmp_path, photos, run):
    manifest = tmp_path / "list.jsonl"
    manifest.write_bytes(b"photos/a.png\n{\"path\": \"photos/\xff\xfe.png\"}\nphotos/b.png\n")
    out = tmp_path / "out"
    summary = run([manifest], out)
    assert summary.samples == 2 and summary.manifest is not None
    (error,) = failures(out).values()
    assert f"{manifest}:2: not valid UTF-8" in error


# ---- 19 (--out): unwritable, read-only or full output folders ------------------------------------------------------
def test_d19_unwritable_out_is_a_clear_error(tmp_path, photos, tok_dir, cli, monkeypatch):
    from mmtok.data import outdir, shards

    base = ["tokenize", photos, "--image-tokenizer", tok_dir, "--workers", 0, "--no-progress", "--shard-size", 2]
    (tmp_path / "file").write_text("x")
    code, _, stderr = cli(*base, "--out", tmp_path / "file" / "out")
    assert code == 2 and "cannot write" in stderr and str(tmp_path / "file") in stderr

    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(path))
    with monkeypatch.context() as patch:
        patch.setattr(outdir, "open", read_only, raising=False)
        code, _, stderr = cli(*base, "--out", tmp_path / "ro")
    assert code == 2 and "Read-only file system" in stderr and str(tmp_path / "ro") in stderr

    real, calls = shards.write_atomic, []

    def full_disk(path, data):
        calls.append(path)
        if len(calls) > 2:  # the first shard lands, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)
    with monkeypatch.context() as patch:
        patch.setattr(shards, "write_atomic", full_disk)
        code, _, stderr = cli(*base, "--out", tmp_path / "full")
    assert code == 2 and "No space left on device" in stderr and "shard-00001" in stderr
    code, _, _ = cli(*base, "--out", tmp_path / "full")  # space again: the rerun finishes
    assert code == 0 and not list((tmp_path / "full").glob("*.tmp-*"))


# ---- 22: file modes ---------------------------------------------------------------------------------------------
def test_d22_every_output_file_has_the_same_mode(tmp_path, photos, run):
    out = tmp_path / "out"
    run([photos], out)
    mask = os.umask(0)
    os.umask(mask)
    modes = {p.relative_to(out).as_posix(): p.stat().st_mode & 0o777 for p in out.rglob("*")}
    assert {k: v for k, v in modes.items() if v != (0o777 if (out / k).is_dir() else 0o666) & ~mask} == {}
    assert "tokenizers/image/model.safetensors" in modes


# ---- 23 (tokenize): too-short audio names the file ------------------------------------------------------------------
def test_d23_too_short_audio_names_the_file(tmp_path, rng, run):
    import soundfile

    from mmtok.audio.tokenizer import AudioTokenizer

    folder = tmp_path / "speech"
    folder.mkdir()
    soundfile.write(folder / "long.wav", (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
    soundfile.write(folder / "short.wav", (0.1 * rng.standard_normal(40)).astype(np.float32), 16000)
    out = tmp_path / "out"
    summary = run([folder], out, image_tokenizer=None, audio_tokenizer=AudioTokenizer(seed=0))
    assert summary.samples == 1
    error = failures(out)["short.wav"]
    assert str(folder / "short.wav") in error and "waveforms[" not in error and "short" in error


# ---- 24: changed options name the field and both values --------------------------------------------------------------
def test_d24_changed_option_refusal_names_field_and_values(tmp_path, photos, run):
    out = tmp_path / "out"
    run([photos], out, image_size=32)
    with pytest.raises(ValueError, match=r"options\.image_size: 32 -> 64"):
        run([photos], out, image_size=64)
    with pytest.raises(ValueError, match=r"shard_size: 2 -> 3"):
        run([photos], out, image_size=32, shard_size=3)


def test_d24_a_refused_tokenizer_leaves_the_runs_copy_alone(tmp_path, photos, run, image_tok):
    import copy

    import torch

    out = tmp_path / "out"
    run([photos], out)
    before = output_files(out)
    other = copy.deepcopy(image_tok)
    with torch.no_grad():
        next(other.model.parameters()).add_(1.0)
    with pytest.raises(ValueError, match=r"tokenizers\.image\.hash: \""):
        run([photos], out, image_tokenizer=other)
    assert output_files(out) == before  # the copy that decodes these tokens is untouched


# ---- 16 (real kills): SIGKILL just before each rename of a run, then the same command ---------------------------------
KILL_SCRIPT = """
import os, pathlib, signal, sys
photos, out, tok_dir, target = sys.argv[1:5]
real_replace, real_rename = os.replace, os.rename

def kill_before(dst):
    if str(dst).endswith(target):
        os.kill(os.getpid(), signal.SIGKILL)

def replace(src, dst, *args, **kwargs):
    kill_before(dst)
    return real_replace(src, dst, *args, **kwargs)

def rename(src, dst, *args, **kwargs):
    kill_before(dst)
    return real_rename(src, dst, *args, **kwargs)

os.replace, os.rename = replace, rename  # the test's own hook: nothing in mmtok knows about it
from mmtok.data import tokenize_dataset
from mmtok.image import ImageTokenizer

tokenize_dataset([photos], out, image_tokenizer=ImageTokenizer.from_pretrained(tok_dir), shard_size=2,
                 batch_size=2, workers=0, progress=False)
"""


@pytest.mark.slow
@pytest.mark.parametrize("target", ["tokenizers/image", "run.json", "shard-00001.json", "failures.jsonl",
                                    "manifest.json"])
def test_d16_sigkill_before_each_rename_then_rerun_is_identical(tmp_path, photos, tok_dir, run, target):
    root = pathlib.Path(__file__).resolve().parents[2]
    clean, out = tmp_path / "clean", tmp_path / "out"
    run([photos], clean)
    proc = subprocess.run([os.sys.executable, "-c", KILL_SCRIPT, str(photos), str(out), str(tok_dir), target],
                          env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}, cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert list(out.rglob("*.tmp-*")), "the kill left no temporary file: the hook did not fire where intended"
    run([photos], out)
    assert output_files(out) == output_files(clean)
    assert not list(out.rglob("*.tmp-*"))


# ---- 17: hostile Parquet / Arrow tables (issue 19) -----------------------------------------------------------
def _image_table(rng, keys, blobs):
    import pyarrow as pa

    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    return pa.table({"key": keys, "image": pa.array([{"bytes": b, "path": None} for b in blobs], struct)})


def test_d17_truncated_parquet_footer_is_one_failure_record(tmp_path, rng, run, photos):
    import pyarrow.parquet as pq

    table = tmp_path / "cut.parquet"
    pq.write_table(_image_table(rng, ["x", "y"], [png_bytes(rng), png_bytes(rng)]), table)
    table.write_bytes(table.read_bytes()[:-9])  # the footer length and "PAR1" magic are gone
    summary = run([photos, table], tmp_path / "out")
    assert summary.samples == 3 and summary.failures == 1
    (error,) = failures(tmp_path / "out").values()
    assert error.startswith(f"ValueError: {table}: not a readable Parquet file")


def test_d17_garbage_image_bytes_and_null_key_rows_are_failure_records(tmp_path, rng, run, image_tok):
    import pyarrow.parquet as pq

    good = png_bytes(rng)
    table = tmp_path / "rows.parquet"
    pq.write_table(_image_table(rng, ["good", "junk", None], [good, rng.bytes(300), png_bytes(rng)]), table)
    summary = run([table], tmp_path / "out")
    assert summary.samples == 1 and summary.failures == 2
    errors = failures(tmp_path / "out")
    assert errors["junk"] == f"ValueError: {table}#1: not a readable image (format not recognised)"
    assert errors["rows.parquet#2"] == f"ValueError: {table}#2: null key (column 'key')"
    with PILImage.open(io.BytesIO(good)) as img:
        assert np.array_equal(tokens_of(tmp_path / "out", "good"), expected_tokens(image_tok, img.convert("RGB")))


def test_d17_table_keys_follow_the_duplicate_rule(tmp_path, rng, run, photos):
    import pyarrow.parquet as pq

    table = tmp_path / "dup.parquet"
    pq.write_table(_image_table(rng, ["a.png", "z"], [png_bytes(rng), png_bytes(rng)]), table)
    run([photos, table], tmp_path / "out")
    errors = failures(tmp_path / "out")
    assert list(errors) == ["a.png"] and f"{table}#0: duplicate key 'a.png'" in errors["a.png"]
