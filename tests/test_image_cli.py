"""`mmtok image-convert / image-encode / image-decode`: upstream checkpoints converted, codes equal to the API's,
PNGs equal to decode_to_pil, and bad inputs reported by path without losing the good outputs."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from mmtok import ImageTokenizer
from mmtok.image import cli

PARSER = argparse.ArgumentParser()
cli.register(PARSER.add_subparsers(dest="command", required=True))


def run(*argv) -> int:
    args = PARSER.parse_args([str(a) for a in argv])
    return args.func(args)


def drawn_image(seed: int, size=(80, 64)) -> Image.Image:
    gen = np.random.default_rng(seed)
    img = Image.new("RGB", size, tuple(int(v) for v in gen.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        box = sorted(gen.integers(0, size[0], 2)), sorted(gen.integers(0, size[1], 2))
        draw.ellipse([box[0][0], box[1][0], box[0][1], box[1][1]], fill=tuple(int(v) for v in gen.integers(0, 256, 3)))
    return img


@pytest.fixture(scope="module")
def taming_dir(tmp_path_factory):
    from pathlib import Path

    folder = Path(__file__).parent / "data" / "checkpoints" / "taming_tiny"
    out = tmp_path_factory.mktemp("taming_converted")
    assert run("image-convert", "--taming", folder / "model.ckpt", "--config", folder / "config.yaml", out) == 0
    return out


def test_llamagen_convert_keeps_the_fixture_numerics(tmp_path, data_dir):
    folder = data_dir / "checkpoints" / "llamagen_tiny"
    assert run("image-convert", "--llamagen", folder / "model.pt", "--config", folder / "config.json", tmp_path) == 0
    io = np.load(folder / "io.npz")
    codes = ImageTokenizer.from_pretrained(tmp_path).encode(torch.from_numpy(io["x"]))
    assert np.array_equal(codes.numpy(), io["indices"])


def test_encode_then_decode_equals_the_api_and_skips_bad_files(tmp_path, taming_dir, seed, capsys):
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"drawn{i}.png")
        drawn_image(seed + i).save(paths[-1])
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    missing = tmp_path / "missing.png"
    status = run("image-encode", paths[0], broken, missing, paths[1], "--tokenizer", taming_dir, "--out", tmp_path / "codes")
    assert status == 1
    err = capsys.readouterr().err
    assert str(broken) in err and str(missing) in err and "2 input(s) failed" in err
    tok = ImageTokenizer.from_pretrained(taming_dir)
    for path in paths:
        saved = np.load(tmp_path / "codes" / f"{path.stem}.npy")
        assert saved.dtype == np.int16 and saved.shape == (16, 16)
        assert np.array_equal(saved, tok.encode([path])[0].numpy())
    assert not (tmp_path / "codes" / "broken.npy").exists()

    bad = tmp_path / "codes" / "out_of_range.npy"
    wrong = np.load(tmp_path / "codes" / "drawn0.npy")
    wrong[3, 5] = tok.num_codes
    np.save(bad, wrong)
    status = run("image-decode", tmp_path / "codes" / "drawn0.npy", bad, tmp_path / "codes" / "drawn1.npy",
                 "--tokenizer", taming_dir, "--out", tmp_path / "png")
    assert status == 1
    assert f"{bad}: code {tok.num_codes} at position (b, i, j) = (0, 3, 5)" in capsys.readouterr().err
    for path in paths:
        png = np.asarray(Image.open(tmp_path / "png" / f"{path.stem}.png"))
        expected = np.asarray(tok.decode_to_pil(torch.from_numpy(np.load(tmp_path / "codes" / f"{path.stem}.npy")))[0])
        assert png.shape == (64, 64, 3) and np.array_equal(png, expected)


def test_default_tokenizer_native_size(tmp_path, data_dir):
    photo = data_dir / "images" / "chelsea.png"
    assert run("image-encode", photo, "--mode", "native", "--out", tmp_path) == 0
    codes = np.load(tmp_path / "chelsea.npy")
    width, height = Image.open(photo).size
    f = ImageTokenizer.default().downsample_factor
    # its own size, rounded to whole tokens
    assert abs(codes.shape[0] * f - height) <= f // 2 and abs(codes.shape[1] * f - width) <= f // 2
    assert np.array_equal(codes, ImageTokenizer.default().encode([photo], mode="native")[0].numpy())
