"""Hostile and unlucky inputs to the models, decoders and readers (issue 23), one test per defect id.

Each test replays the probe that found the defect and asserts the promised behaviour: a clear error naming
the file / argument / field before work starts, or the correct result; no code ever runs from a checkpoint;
decoders of untrusted ids allocate memory bounded by their input. The table in docs/robustness.md
("Models and decoders") lists the promise, the cases and these tests.
"""
from __future__ import annotations

import os
import pickle
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))


# ---------------------------------------------------------------------------------------------------- 2
class _Payload:
    """Unpickling this writes a marker file: the proof that a loader ran code from a checkpoint."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def _hostile_files(tmp_path):
    """The same payload as a torch.save zip, a raw pickle and inside a plausible state_dict layout."""
    marker = str(tmp_path / "PWNED")
    files = []
    for name, obj in [("zip.pt", _Payload(marker)), ("state.ckpt", {"state_dict": {"w": _Payload(marker)}}),
                      ("dac.pth", {"state_dict": {}, "metadata": {"kwargs": _Payload(marker)}})]:
        path = tmp_path / name
        torch.save(obj, path)
        files.append(str(path))
    raw = tmp_path / "raw.bin"
    raw.write_bytes(pickle.dumps(_Payload(marker)))
    files.append(str(raw))
    return marker, files


def test_2_no_loader_runs_code_from_a_checkpoint(tmp_path, seed):
    """Training --resume / --init and every inference loader refuse a pickle that would run code, naming the
    file, and the code never runs."""
    from test_train_loop import smooth_photos, tiny_config

    from mmtok.audio.codec.checkpoint import read_dac_file
    from mmtok.image.checkpoints import read_torch_checkpoint
    from mmtok.tokenizer.weights import read_torch_pickle
    from mmtok.train.checkpoint import load_checkpoint
    from mmtok.train.perceptual import LPIPS
    from mmtok.train.trainer import VQGANTrainer

    marker, files = _hostile_files(tmp_path)
    trainer = VQGANTrainer(tiny_config(tmp_path / "run", steps=1, seed=seed % 1000),
                           smooth_photos(1, torch.Generator().manual_seed(seed)), progress=False)
    loaders = [load_checkpoint, trainer.resume, trainer.init_weights, read_torch_checkpoint, read_torch_pickle,
               read_dac_file, LPIPS.from_file]
    for path in files:
        for loader in loaders:
            with pytest.raises(ValueError) as info:
                loader(path)
            assert path in str(info.value), (loader, str(info.value))
            assert not os.path.exists(marker), f"{loader} ran code from {path}"
    # a checkpoint directory whose latest.safetensors is really a pickle is refused the same way
    directory = tmp_path / "ckpts"
    directory.mkdir()
    os.link(files[0], directory / "latest.safetensors")
    with pytest.raises(ValueError, match="not an mmtok training checkpoint"):
        trainer.resume(str(directory))
    assert not os.path.exists(marker)


def test_2_cli_refuses_a_hostile_checkpoint_before_work(tmp_path, seed):
    """`mmtok train-vqgan --init FILE` / `--resume FILE` with the payload: exit 2, the file named on stderr, no
    code run, nothing trained or written."""
    import json

    from PIL import Image as PILImage
    from test_train_loop import TINY, smooth_photos

    from mmtok.__main__ import main

    marker, files = _hostile_files(tmp_path)
    photo = smooth_photos(1, torch.Generator().manual_seed(seed))[0]
    PILImage.fromarray(photo.permute(1, 2, 0).numpy()).save(tmp_path / "p.png")
    out = tmp_path / "run"
    for flag in ("--init", "--resume"):
        code = main(["train-vqgan", str(tmp_path / "p.png"), "--out-dir", str(out), "--model", json.dumps(TINY),
                     "--crop", "16", "--min-side", "32", "--steps", "1", "--no-bf16", flag, files[0]])
        assert code == 2 and not os.path.exists(marker) and not out.exists()


def test_2_train_state_round_trips_without_pickle(tmp_path, seed):
    """The checkpoint is plain safetensors + JSON: it opens with safetensors alone and restores every piece of
    state (optimizer int keys, tuples, NumPy's uint32 key, Python's RNG tuple) exactly."""
    import random

    import numpy as np
    from safetensors import safe_open

    from mmtok.train.checkpoint import load_checkpoint, save_checkpoint

    random.seed(seed)
    np.random.seed(seed % 2**32)
    state = {"config": {"lr": 1e-4, "betas": (0.5, 0.9)}, "step": 7, "model": {"w": torch.randn(3, 2)},
             "disc": {}, "opt_g": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2)}},
                                   "param_groups": [{"params": [0], "betas": (0.5, 0.9), "fused": None}]},
             "opt_d": {"state": {}, "param_groups": []},
             "ranks": [{"rng": {"python": random.getstate(), "numpy": np.random.get_state(),
                                "torch": torch.get_rng_state()}}]}
    path = str(tmp_path / "step_0000007.safetensors")
    save_checkpoint(path, state)
    with safe_open(path, framework="pt") as f:
        assert "mmtok.train_state" in f.metadata()
    back = load_checkpoint(str(tmp_path))  # the directory's latest.safetensors
    assert back["opt_g"]["state"][0]["step"].item() == 3.0 and back["config"]["betas"] == (0.5, 0.9)
    assert torch.equal(back["model"]["w"], state["model"]["w"])
    assert back["ranks"][0]["rng"]["python"] == random.getstate()
    np_state = back["ranks"][0]["rng"]["numpy"]
    assert np_state[1].dtype == np.uint32 and (np_state[1] == np.random.get_state()[1]).all()
    random.setstate(back["ranks"][0]["rng"]["python"])
    np.random.set_state(np_state)


# ---------------------------------------------------------------------------------------------------- 3
_PEAK_SCRIPT = r"""
import resource, sys
from mmtok.stream import TokenStream, Vocabulary
grid, reps = int(sys.argv[1]), int(sys.argv[2])
vocab = Vocabulary(image_codes=512, max_grid=grid)
ib, ie, bos, res = vocab.special("image_begin"), vocab.special("image_end"), vocab.special("bos"), vocab.resolution_token(grid)
ids = [bos] + [ib, res, res, ie] * reps
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = TokenStream(vocab).decode(ids, strict=False)
cells = sum(s.codes.numel() for s in out)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024, cells, len(out.repairs))
"""


@pytest.mark.parametrize("grid,reps", [(64, 250_000), (30_000, 1)])
def test_3_lenient_decode_memory_is_bounded_by_the_input(grid, reps):
    """10^6 ids of empty 64x64 images, and six ids declaring a 30000x30000 grid: the padded cells stay within
    max(len(ids), 2^16) and the peak memory growth of the decode (measured in a fresh process) stays small
    (it was +8 GB / +6.9 GB)."""
    import subprocess

    from mmtok.stream.decoder import MAX_REPAIRS, PAD_FLOOR

    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(grid), str(reps)], capture_output=True, text=True,
                          env=env, timeout=300, check=True)
    peak_mib, cells, repairs = done.stdout.split()
    n = 1 + 4 * reps
    assert int(cells) <= max(n, PAD_FLOOR)
    assert int(repairs) <= MAX_REPAIRS + 1
    assert float(peak_mib) < 300, done.stdout


def test_3_strict_decode_refuses_an_incomplete_huge_grid_without_allocating_it():
    from mmtok.stream import StreamDecodeError, TokenStream, Vocabulary

    vocab = Vocabulary(image_codes=512, max_grid=30_000)
    ids = [vocab.special("image_begin"), vocab.resolution_token(30_000), vocab.resolution_token(30_000),
           vocab.special("image_end")]
    with pytest.raises(StreamDecodeError, match="truncated|30000"):
        TokenStream(vocab).decode(ids)
    out = TokenStream(vocab).decode(ids, strict=False)
    assert list(out) == [] and [r.kind for r in out.repairs][-1] == "dropped_image"


# --------------------------------------------------------------------------------------------------- 20
def _stream():
    from mmtok.stream import TokenStream, Vocabulary

    return TokenStream(Vocabulary(image_codes=512, max_grid=8))


@pytest.mark.parametrize("bad", [97.9, 97.0, "97", b"97", True, 2**63, -(2**63) - 1, None, [97]])
def test_20_strict_decode_refuses_entries_that_are_not_integer_ids(bad, seed):
    import numpy as np

    from mmtok.stream import StreamDecodeError

    stream = _stream()
    text = stream.vocab.text.encode("hi there")
    position = 1 + seed % len(text)
    ids = [stream.vocab.special("bos")] + text
    ids.insert(position, bad)
    with pytest.raises(StreamDecodeError) as info:
        stream.decode(ids)
    assert info.value.position == position and repr(bad)[:10] in str(info.value)
    lenient = stream.decode(ids, strict=False)  # a foreign token there; the text around it survives
    assert lenient.repairs and lenient.repairs[0].position == position
    assert "".join(s.text for s in lenient) == "hi there"
    if isinstance(bad, float):  # arrays and tensors of floats are refused the same way
        for container in (np.array(ids[:position] + [bad], dtype=np.float64), torch.tensor([float(i) for i in ids])):
            with pytest.raises(StreamDecodeError, match="not an integer token id"):
                stream.decode(container)
    if bad == 2**63:
        with pytest.raises(StreamDecodeError, match="int64"):
            stream.decode(np.array([2**63, 1], dtype=np.uint64))


@pytest.mark.parametrize("stamp", ["nan", "1e400", "inf", "-infinity", "1_0", "9" * 400, "0x10"])
def test_20_frame_timestamps_must_be_finite_decimals(stamp, seed):
    from mmtok.stream import Frame, StreamDecodeError, Video

    stream = _stream()
    codes = torch.randint(0, 512, (2, 3))
    good = list(stream.encode([Video(frames=[Frame(codes=codes, timestamp=1.25)])], add_bos=False, add_eos=False))
    text = stream.vocab.text.encode("1.250")
    cut = good.index(stream.vocab.special("frame")) + 1
    assert good[cut:cut + len(text)] == text
    ids = good[:cut] + stream.vocab.text.encode(stamp) + good[cut + len(text):]
    with pytest.raises(StreamDecodeError, match="not a finite decimal"):
        stream.decode(ids)
    (video,) = stream.decode(ids, strict=False)
    assert video.frames[0].timestamp is None and torch.equal(video.frames[0].codes, codes)
    assert stream.decode(good)[0].frames[0].timestamp == 1.25


# --------------------------------------------------------------------------------------------------- 21
def _backends():
    from mmtok.ops import backends

    return [b for b in backends.BACKENDS
            if backends.unavailable_reason(b, torch.device("cuda" if b == "cuda" else "cpu")) is None]


def _float64_truth(x, codebook, metric):
    """argmin of the metric from the float64 expanded form (exact products of fp32 inputs: no overflow)."""
    import torch.nn.functional as F

    x, c = x.double().cpu(), codebook.double().cpu()
    if metric == "cosine":
        return (-(F.normalize(x, dim=1) @ F.normalize(c, dim=1).T)).argmin(1)
    if metric == "dot":
        return (-(x @ c.T)).argmin(1)
    return (c.square().sum(1)[None] - 2 * x @ c.T).argmin(1)


@pytest.mark.parametrize("metric", ["l2", "cosine", "dot"])
def test_21_nearest_code_near_the_float_limit_is_right_on_every_backend(metric, seed):
    """x = 3e38 (finite): the probe's case (seed 0, K 64, D 8: code 44), then fresh random rows mixing huge and
    ordinary magnitudes; every backend returns the float64 argmin, and the same codes."""
    import mmtok

    torch.manual_seed(0)
    codebook = torch.randn(64, 8)
    probe = torch.full((1, 8), 3e38)
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randn(32, 8, generator=generator)
    huge = torch.rand(32, generator=generator) < 0.5
    rows[huge] = rows[huge] / rows[huge].abs().amax(1, keepdim=True) * 3e38  # up to 3e38, still finite
    x = torch.cat([probe, rows])
    assert bool(torch.isfinite(x).all())
    truth = _float64_truth(x, codebook, metric)
    if metric == "l2":
        assert int(truth[0]) == 44
    results = {}
    for backend in _backends():
        device = torch.device("cuda" if backend == "cuda" else "cpu")
        indices, distances = mmtok.nearest_code(x.to(device), codebook.to(device), metric=metric, backend=backend)
        results[backend] = indices.cpu()
        assert torch.equal(indices.cpu(), truth), (backend, indices.tolist(), truth.tolist())
        assert not bool(distances.isnan().any())
    assert len(results) >= 2


def test_21_float64_inputs_beyond_float64_range_are_refused_clearly():
    import mmtok

    x = torch.full((2, 4), 1e300, dtype=torch.float64)
    with pytest.raises(ValueError, match="overflow even a float64"):
        mmtok.nearest_code(x, torch.full((3, 4), 1e10, dtype=torch.float64), backend="torch")
    # huge but computable in float64: answered, not refused
    assert mmtok.nearest_code(x, torch.ones(3, 4, dtype=torch.float64), backend="torch")[0].tolist() == [0, 0]
    # ordinary inputs skip the guard's float64 path entirely: same answer as the kernels always gave
    x = torch.randn(100, 4)
    c = torch.randn(16, 4)
    assert torch.equal(mmtok.nearest_code(x, c, backend="torch")[0], _float64_truth(x, c, "l2"))


# ---------------------------------------------------------------------------------------------------- 6
def _gradient(dtype, high):
    import numpy as np

    return np.linspace(0, high, 64 * 64).reshape(64, 64).astype(dtype)


@pytest.mark.parametrize("name,dtype,high,divisor", [
    ("grey16.png", "uint16", 65535, 257.0), ("grey16.tif", "uint16", 65535, 257.0),
    ("float.tif", "float32", 1.0, 1 / 255.0), ("int32.tif", "int32", 2**31 - 1, (2**31 - 1) / 255.0)])
def test_6_high_depth_images_keep_their_range(tmp_path, name, dtype, high, divisor):
    """A full-range 16-bit / float / 32-bit gradient maps onto 0..255 in proportion (it was 99.7% white)."""
    import numpy as np
    from PIL import Image as PILImage

    from mmtok.image.preprocess import open_image, preprocess

    array = _gradient(dtype, high)
    path = tmp_path / name
    PILImage.fromarray(array).save(path)
    rgb = np.asarray(open_image(str(path)), dtype=np.float64)
    expected = np.clip(np.rint(array.astype(np.float64) / divisor), 0, 255)
    assert np.abs(rgb - expected[..., None]).max() <= 1
    assert (rgb == 255).mean() < 0.01 and (rgb == 0).mean() < 0.01
    pixels = preprocess([str(path)], size=64, mode="center_crop", factor=16)
    assert float((pixels >= 1.0).float().mean()) < 0.01 and abs(float(pixels.mean())) < 0.05


def test_6_float_or_signed_images_without_a_pixel_mapping_are_refused(tmp_path):
    import numpy as np
    from PIL import Image as PILImage

    from mmtok.image.preprocess import open_image

    cases = {"hdr.tif": _gradient("float32", 40.0), "signed.tif": _gradient("int32", 1000) - 500,
             "nan.tif": np.full((4, 4), np.nan, dtype=np.float32)}
    for name, array in cases.items():
        path = tmp_path / name
        PILImage.fromarray(array).save(path)
        with pytest.raises(ValueError, match=r"float image|signed 32-bit|NaN") as info:
            open_image(str(path))
        assert str(path) in str(info.value)


# --------------------------------------------------------------------------------------------------- 23
@pytest.fixture
def odd_paths(tmp_path):
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    broken = tmp_path / "broken.wav"
    broken.symlink_to(tmp_path / "gone.wav")
    fifo = tmp_path / "x.wav"
    os.mkfifo(fifo)
    return {"symbolic link loop": str(loop), "character device": "/dev/zero", "a FIFO": str(fifo),
            "broken symbolic link": str(broken)}


def test_23_images_name_the_real_problem(odd_paths):
    """A symlink loop, /dev/zero, a FIFO (which must not hang) and a broken link say what they are."""
    from mmtok.image.preprocess import open_image

    for problem, path in odd_paths.items():
        with pytest.raises((ValueError, OSError)) as info:
            open_image(path)
        message = str(info.value)
        assert problem in message and path in message, message
        assert problem == "broken symbolic link" or "not found" not in message


def test_23_audio_names_the_real_problem(odd_paths, tmp_path, monkeypatch):
    import numpy as np
    import soundfile

    from mmtok.audio.io import audio_info, load_audio

    for problem, path in odd_paths.items():
        for reader in (load_audio, audio_info):
            with pytest.raises((ValueError, OSError)) as info:
                reader(path)
            assert problem in str(info.value) and path in str(info.value)
    wav = tmp_path / "locked.wav"
    soundfile.write(wav, np.zeros(1600, dtype=np.float32), 16000)
    wav.chmod(0)
    if os.geteuid() == 0:  # root reads any file: make the permission check see what a user would
        import mmtok.paths

        monkeypatch.setattr(mmtok.paths.os, "access", lambda *a, **k: False)
    with pytest.raises(PermissionError, match="permission denied") as info:
        load_audio(wav)
    assert str(wav) in str(info.value) and "System error" not in str(info.value)


# ---------------------------------------------------------------------------------------------------- 7
_ABSURD_SCRIPT = r"""
import json, pathlib, resource, shutil, sys, time
import torch, yaml
data, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
from mmtok.audio.codec import AudioCodec
from mmtok.image import ImageTokenizer
cases = []
# taming yaml asking for ch=4096 next to the tiny checkpoint
doc = yaml.safe_load((data / "taming_tiny" / "config.yaml").read_text())
doc["model"]["params"]["ddconfig"]["ch"] = 4096
(out / "big.yaml").write_text(yaml.safe_dump(doc))
cases.append(("ch=4096", lambda: ImageTokenizer.from_taming(data / "taming_tiny" / "model.ckpt", out / "big.yaml")))
# our image folder whose config.json says ch=4096, and one with 10^6 levels
ImageTokenizer.from_taming(data / "taming_tiny" / "model.ckpt", data / "taming_tiny" / "config.yaml").save_pretrained(out / "img")
config = json.loads((out / "img" / "config.json").read_text())
for name, change in [("img_ch", {"ch": 4096}), ("img_levels", {"ch_mult": [1] * 10**6, "decoder_ch_mult": None})]:
    shutil.copytree(out / "img", out / name)
    inner = config.get("config", config)
    patched = dict(config, config={**inner, **change}) if "config" in config else {**config, **change}
    (out / name / "config.json").write_text(json.dumps(patched))
cases.append(("ch=4096", lambda: ImageTokenizer.from_pretrained(out / "img_ch")))
cases.append(("len(ch_mult)=1000000", lambda: ImageTokenizer.from_pretrained(out / "img_levels")))
# DAC kwargs n_codebooks = codebook_size = 10^6, and a codec folder with codebook_size = 10^6
payload = torch.load(data / "dac_tiny" / "model.pth", weights_only=True)
payload["metadata"]["kwargs"].update(n_codebooks=10**6, codebook_size=10**6)
torch.save(payload, out / "dac.pth")
cases.append(("n_codebooks=1000000", lambda: AudioCodec.from_dac(out / "dac.pth")))
AudioCodec.from_dac(data / "dac_tiny" / "model.pth").save_pretrained(out / "codec")
config = json.loads((out / "codec" / "config.json").read_text())
inner = config.get("config", config)
inner["codebook_size"] = 10**6
(out / "codec" / "config.json").write_text(json.dumps(config))
cases.append(("codebook_size=1000000", lambda: AudioCodec.from_pretrained(out / "codec")))
# zoo layouts through mmtok.load: a transformers Chameleon folder, a diffusers VQModel folder
import mmtok
for name, folder, key, field in [("chameleon", data.parent / "chameleon" / "hf", "base_channels", "ch=131072"),
                                 ("diffusers", data.parent / "diffusers_vq" / "group_tiny", "block_out_channels",
                                  "block_out_channels[0]=16384")]:
    shutil.copytree(folder, out / name)
    doc = json.loads((out / name / "config.json").read_text())
    node = doc.get("vq_config", doc) if key not in doc else doc
    node[key] = [v * 4096 for v in node[key]] if isinstance(node[key], list) else node[key] * 4096
    (out / name / "config.json").write_text(json.dumps(doc))
    cases.append((field, lambda name=name: mmtok.load(out / name)))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for field, load in cases:
    start = time.perf_counter()
    try:
        load()
        print(json.dumps({"field": field, "error": None}))
    except ValueError as exc:
        print(json.dumps({"field": field, "error": str(exc), "seconds": time.perf_counter() - start}))
print(json.dumps({"peak_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024}))
"""


def test_7_absurd_config_sizes_are_refused_before_building(tmp_path, data_dir):
    """ch=4096 (yaml, config.json), 10^6 levels, DAC kwargs n_codebooks = codebook_size = 10^6, a codec
    config.json with codebook_size = 10^6, a Chameleon / diffusers VQModel folder with 4096x the channels: each
    a quick ValueError naming the field, with flat memory (it was 6-8 GB and 20 s, then a RuntimeError at the
    memory limit)."""
    import json
    import subprocess

    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", _ABSURD_SCRIPT, str(data_dir / "checkpoints"), str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    *records, peak = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(records) == 7
    for record in records:
        assert record["error"] is not None, record
        assert record["field"] in record["error"].replace(" ", ""), record
        assert record["seconds"] < 10, record
    assert peak["peak_mib"] < 200, peak


def test_7_config_bounds_without_weights():
    from mmtok.audio.codec.config import CodecConfig
    from mmtok.image import VQGANConfig

    with pytest.raises(ValueError, match="image_size"):
        VQGANConfig(num_codes=4, code_dim=4, z_channels=4, ch=32, image_size=10**9)
    with pytest.raises(ValueError, match="sample_rate"):
        CodecConfig(sample_rate=10**12)


# --------------------------------------------------------------------------------------------------- 19
def _corrupted_folders(base, root):
    """Copies of a saved folder with one config field of the wrong type / missing, or broken weights."""
    import json
    import shutil
    import struct

    config = json.loads((base / "config.json").read_text())
    weights = (base / "model.safetensors").read_bytes()
    huge = json.dumps({"a": {"dtype": "F32", "shape": [10**12], "data_offsets": [0, 4 * 10**12]}}).encode()
    cases = {"list": "[1, 2]", "empty": "", "weights_truncated": weights[: len(weights) // 2],
             "weights_garbage": b"\x00\x01" * 40, "weights_huge_header": struct.pack("<Q", len(huge)) + huge}
    for key in config:
        if key in ("format",):
            continue
        for tag, value in (("none", None), ("list", [1]), ("dict", {"a": 1}), ("neg", -1), ("str", "x")):
            cases[f"{key}_{tag}"] = json.dumps({**config, key: value})
    folders = {}
    for name, content in cases.items():
        folder = root / f"{base.name}-{name}"
        shutil.copytree(base, folder)
        target = "model.safetensors" if name.startswith("weights_") else "config.json"
        (folder / target).write_bytes(content if isinstance(content, bytes) else content.encode())
        folders[name] = folder
    return folders


def test_19_every_loader_failure_is_a_value_error_naming_the_file(tmp_path, data_dir):
    """Wrong-typed or missing config fields, a non-object config, truncated / garbage / lying safetensors: the
    family loaders and mmtok.load raise ValueError (or OSError) whose message holds the folder's path; never a
    bare KeyError, TypeError, AttributeError or SafetensorError."""
    import mmtok
    from mmtok.audio.codec import AudioCodec
    from mmtok.image import ImageTokenizer

    ckpt = data_dir / "checkpoints"
    ImageTokenizer.from_taming(ckpt / "taming_tiny" / "model.ckpt", ckpt / "taming_tiny" / "config.yaml") \
        .save_pretrained(tmp_path / "image")
    AudioCodec.from_dac(ckpt / "dac_tiny" / "model.pth").save_pretrained(tmp_path / "codec")
    checked = 0
    for base, loader in ((tmp_path / "image", ImageTokenizer.from_pretrained),
                         (tmp_path / "codec", AudioCodec.from_pretrained)):
        for name, folder in _corrupted_folders(base, tmp_path).items():
            for load in (loader, mmtok.load):
                try:
                    load(folder)
                except (ValueError, OSError) as exc:
                    assert str(folder) in str(exc), (name, load, str(exc))
                    checked += 1
                # a field with a usable default or a None meaning "default" may load; that is fine
    assert checked > 50


def test_19_vocabulary_files_fail_with_the_path(tmp_path):
    import json

    from mmtok.stream import Vocabulary

    path = Vocabulary(image_codes=16).save(tmp_path / "vocab.json")
    record = json.loads(path.read_text())
    cases = {"not_json.json": "{", "list.json": "[]"}
    for key in ("modalities", "resolution_tokens", "special_tokens", "text", "end_of_row"):
        for value in (None, [1], "x", -1):
            cases[f"{key}_{value}.json"] = json.dumps({**record, key: value})
    for name, text in cases.items():
        bad = tmp_path / name
        bad.write_text(text)
        with pytest.raises(ValueError) as info:
            Vocabulary.load(bad)
        assert str(bad) in str(info.value), (name, str(info.value))


# ---------------------------------------------------------------------------------------------------- 11
_STREAM_SCRIPT = r"""
import resource, sys, time
import numpy as np, torch
from mmtok.audio.features import FeatureStats
from mmtok.audio.tokenizer import AudioTokenizer
seed, seconds, chunk = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(seed)
clip = torch.from_numpy((rng.standard_normal(int(seconds * 16000)) * rng.uniform(0.05, 0.5)).astype(np.float32))
stats = FeatureStats.from_mean_std(torch.randn(80) - 5.0, torch.rand(80) + 1.0)
out = []
for variant in ("relative-floor", "absolute-floor"):
    tok = AudioTokenizer(frontend_variant=variant)
    expected = tok.encode(clip, 16000, stats=stats)
    tok.encode(clip[:16000], 16000)  # warm every path before the baseline
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu = time.process_time()
    if variant == "relative-floor":  # two passes: a re-iterable sequence of views
        chunks = [clip[i: i + chunk] for i in range(0, len(clip), chunk)]
    else:  # one pass over a generator
        chunks = (clip[i: i + chunk] for i in range(0, len(clip), chunk))
    got = torch.cat(list(tok.stream(chunks, stats=stats)), dim=1)
    out.append((int(torch.equal(got, expected)), (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024,
                (time.process_time() - cpu) / seconds))
print(" ".join(f"{e} {m:.1f} {c:.3f}" for e, m, c in out))
"""


def test_11_streaming_tiny_chunks_is_linear_with_flat_memory(seed):
    """`AudioTokenizer.stream` over 1 ms chunks (16 samples) of 30 s of audio, both frontends: codes equal the
    one-shot encode with the same statistics, and the peak memory growth of the stream (a fresh process) stays
    small; it was quadratic (1.5-5 s of CPU per second of audio, 3.4 GB peak). The process timeout bounds the
    CPU cost without timing it."""
    import subprocess

    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", _STREAM_SCRIPT, str(seed), "30", "16"], capture_output=True,
                          text=True, env=env, timeout=240, check=True)
    fields = done.stdout.split()
    for variant in range(2):
        equal, peak_mib, _cpu_per_second = fields[3 * variant: 3 * variant + 3]
        assert equal == "1", done.stdout
        assert float(peak_mib) < 150, done.stdout


ZOO_RELEASES = ["chameleon/hf", "janus/hf", "emu3/model", "emu35_ibq/standalone", "diffusers_vq/group_tiny",
                "diffusers_vq/spatial", "dac_transformers/weightnorm", "encodec/causal", "mimi/causal",
                "snac/attn", "speechtokenizer/bilstm", "var/vae"]


def _zoo_corruptions(base, root):
    """Copies of a downloaded release folder: its config.json not an object / empty / each top-level field of
    the wrong type or missing, and each weight file truncated or garbage."""
    import json
    import shutil

    config = json.loads((base / "config.json").read_text())
    cases: dict[str, tuple[str, bytes]] = {"config_list": ("config.json", b"[1, 2]"), "config_empty": ("config.json", b"")}
    for key in config:
        for tag, value in (("none", None), ("list", [1]), ("str", "x"), ("neg", -1)):
            cases[f"{key}_{tag}"] = ("config.json", json.dumps({**config, key: value}).encode())
        cases[f"{key}_missing"] = ("config.json", json.dumps({k: v for k, v in config.items() if k != key}).encode())
    for weights in sorted(p for p in base.iterdir() if p.is_file() and p.suffix in (".bin", ".pt", ".pth",
                                                                                   ".safetensors", ".ckpt")):
        data = weights.read_bytes()
        cases[f"{weights.name}_truncated"] = (weights.name, data[: len(data) // 2])
        cases[f"{weights.name}_garbage"] = (weights.name, b"\x00\x01" * 40)
    for name, (target, content) in cases.items():
        folder = root / f"{base.parent.name}-{base.name}-{name}"
        shutil.copytree(base, folder)
        (folder / target).write_bytes(content)
        yield name, folder


@pytest.mark.parametrize("release", ZOO_RELEASES)
def test_19_zoo_release_folders_fail_with_the_path(tmp_path, data_dir, release):
    """The downloaded layouts mmtok.load reads (transformers, diffusers, codec releases) given a broken config or
    weight file: a ValueError / OSError naming the folder, never a bare KeyError / TypeError / AttributeError /
    IndexError / pickle or safetensors error; a field with a usable default may load (then it must still be a
    tokenizer)."""
    import mmtok

    refused = 0
    for name, folder in _zoo_corruptions(data_dir / release, tmp_path):
        try:
            loaded = mmtok.load(folder)
        except (ValueError, OSError) as exc:
            assert str(folder) in str(exc), (release, name, f"{type(exc).__name__}: {exc}")
            refused += 1
        else:
            assert hasattr(loaded, "encode") and hasattr(loaded, "decode"), (release, name)
    assert refused >= 4, release
