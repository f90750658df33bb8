"""The shared save/load layer: mmtok folders, weight files, strict key/shape checks, and `mmtok.load`'s layouts."""
from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import mmtok
from mmtok.tokenizer import folder, registry, weights

DATA = pathlib.Path(__file__).parent / "data"
CKPT = DATA / "checkpoints"
LEGACY = DATA / "legacy_folders"


def _tensors(g: torch.Generator) -> dict[str, torch.Tensor]:
    return {"b.weight": torch.randn(3, 4, generator=g), "a.bias": torch.randn(5, generator=g).bfloat16(),
            "count": torch.randint(0, 9, (2, 2), generator=g), "flag": torch.tensor([True, False]),
            "empty": torch.zeros(0, 3)}


# ---- mmtok's own folder ---------------------------------------------------------------------------------
def test_save_and_read_folder_round_trip(tmp_path, seed):
    g = torch.Generator().manual_seed(seed)
    tensors = _tensors(g)
    config = {"format": "ignored", "format_version": 99, "num_codes": 7, "nested": {"x": [1, 2]}}
    folder.save_folder(tmp_path / "tok", "mmtok.test.family", config, tensors, version=3, metadata={"step": 5})
    data = json.loads((tmp_path / "tok" / "config.json").read_text())
    assert list(data)[:2] == ["format", "format_version"]
    assert data == {"format": "mmtok.test.family", "format_version": 3, "num_codes": 7, "nested": {"x": [1, 2]}}
    with safe_open(str(tmp_path / "tok" / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["mmtok_format"] == "mmtok.test.family" and meta["step"] == "5" and meta["format"] == "pt"
    saved = folder.read_folder(tmp_path / "tok", expected_format="mmtok.test.family", max_version=3)
    assert (saved.format, saved.version, saved.config) == ("mmtok.test.family", 3, {"num_codes": 7,
                                                                                    "nested": {"x": [1, 2]}})
    assert set(saved.tensors) == set(tensors)
    for key, value in tensors.items():
        assert saved.tensors[key].dtype == value.dtype and torch.equal(saved.tensors[key], value)
    assert not list((tmp_path / "tok").glob(".*tmp*"))  # no temporary files left


def test_folder_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="starting with 'mmtok.'"):
        folder.save_folder(tmp_path / "x", "taming", {}, {})
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        folder.save_folder(tmp_path / "x", "mmtok.t", {"bad": object()}, {})
    folder.save_folder(tmp_path / "tok", "mmtok.test.family", {"a": 1}, {"w": torch.ones(2)}, version=2)
    with pytest.raises(ValueError, match=r"config.json: format is 'mmtok.test.family', expected 'mmtok.other'"):
        folder.read_folder(tmp_path / "tok", expected_format="mmtok.other")
    with pytest.raises(ValueError, match="format_version 2 is newer than this mmtok reads"):
        folder.read_folder(tmp_path / "tok", max_version=1)
    with pytest.raises(FileNotFoundError, match="tokenizer folder not found"):
        folder.read_folder(tmp_path / "nope")
    with pytest.raises(ValueError, match="downloads nothing"):
        folder.read_folder("https://example.com/tok")
    (tmp_path / "tok" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors not found"):
        folder.read_folder(tmp_path / "tok")
    assert folder.read_folder(tmp_path / "tok", weights_required=False).tensors == {}
    (tmp_path / "tok" / "config.json").write_text('{"model_type": "chameleon"}')
    with pytest.raises(ValueError, match="not an mmtok tokenizer config"):
        folder.read_folder(tmp_path / "tok")
    (tmp_path / "tok" / "config.json").write_text("{oops")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        folder.read_folder(tmp_path / "tok")


def test_legacy_markers():
    assert folder.folder_format({"tokenizer": "best-rq", "seed": 0}) == "mmtok.audio.bestrq"
    assert folder.folder_format({"format": "mmtok.AudioCodec"}) == "mmtok.AudioCodec"
    assert folder.folder_format({"format": "pt"}) is None
    assert folder.read_folder(LEGACY / "image_l2").version == 1  # written before format_version existed


def test_safetensors_written_deterministically(tmp_path, seed):
    g = torch.Generator().manual_seed(seed)
    tensors = _tensors(g)
    meta = {f"k{i}": str(i) for i in range(6)}
    weights.write_safetensors(tmp_path / "a.safetensors", tensors, meta)
    torch.save(tensors, tmp_path / "t.pt")
    # a fresh process (another hash seed) must write the same bytes
    code = ("import sys, torch; from mmtok.tokenizer.weights import write_safetensors; "
            "write_safetensors(sys.argv[1], torch.load(sys.argv[2]), {f'k{i}': str(i) for i in range(6)})")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "b.safetensors"), str(tmp_path / "t.pt")],
                   check=True, env={"PYTHONHASHSEED": str(seed % 1000 + 1), "PATH": "/usr/bin:/bin",
                                    "PYTHONPATH": str(pathlib.Path(mmtok.__file__).parents[1]),
                                    "OMP_NUM_THREADS": "1"})
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    header = (tmp_path / "a.safetensors").read_bytes()
    size = int.from_bytes(header[:8], "little")
    parsed = json.loads(header[8: 8 + size])
    assert list(parsed["__metadata__"]) == sorted(meta) and list(parsed)[1:] == sorted(tensors)
    loaded = load_file(str(tmp_path / "a.safetensors"))  # the reference reader agrees
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())


# ---- weight files ---------------------------------------------------------------------------------------
def test_read_state_dict_formats(tmp_path, seed):
    g = torch.Generator().manual_seed(seed)
    state = {"x.weight": torch.randn(4, 3, generator=g), "y.bias": torch.randn(2, generator=g)}
    save_file(state, str(tmp_path / "model.safetensors"))
    torch.save(state, tmp_path / "pytorch_model.bin")
    for name in ("model.safetensors", "pytorch_model.bin"):
        got = weights.read_state_dict(tmp_path / name)
        assert set(got) == set(state) and all(torch.equal(got[k], state[k]) for k in state)
    # sharded: two shards and an index
    shards = tmp_path / "sharded"
    shards.mkdir()
    save_file({"x.weight": state["x.weight"]}, str(shards / "model-00001-of-00002.safetensors"))
    save_file({"y.bias": state["y.bias"]}, str(shards / "model-00002-of-00002.safetensors"))
    index = {"metadata": {}, "weight_map": {"x.weight": "model-00001-of-00002.safetensors",
                                            "y.bias": "model-00002-of-00002.safetensors"}}
    (shards / "model.safetensors.index.json").write_text(json.dumps(index))
    assert weights.find_weights(shards) == shards / "model.safetensors.index.json"
    got = weights.read_state_dict(weights.find_weights(shards))
    assert all(torch.equal(got[k], state[k]) for k in state)
    index["weight_map"]["z.extra"] = "model-00002-of-00002.safetensors"
    (shards / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="absent from their shards: z.extra"):
        weights.read_state_dict(shards / "model.safetensors.index.json")
    index["weight_map"]["z.extra"] = "../model.safetensors"
    (shards / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="not a file beside the index"):
        weights.read_state_dict(shards / "model.safetensors.index.json")
    # preference order of a downloaded folder
    assert weights.find_weights(tmp_path) == tmp_path / "model.safetensors"
    assert weights.find_weights(tmp_path, ["pytorch_model.bin"]) == tmp_path / "pytorch_model.bin"
    with pytest.raises(FileNotFoundError, match="no weights found"):
        weights.find_weights(tmp_path, ["diffusion_pytorch_model.bin"])


class _Evil:
    pass


def test_unreadable_weight_files_are_named(tmp_path):
    torch.save({"x": _Evil()}, tmp_path / "code.pt")
    with pytest.raises(ValueError, match="code.pt: not a readable torch checkpoint"):
        weights.read_state_dict(tmp_path / "code.pt")  # weights_only: no code in a checkpoint runs
    torch.save({"x": torch.ones(2), "n": 3}, tmp_path / "mixed.bin")
    with pytest.raises(ValueError, match="mixed.bin: entries that are not tensors: n"):
        weights.read_state_dict(tmp_path / "mixed.bin")
    save_file({"x": torch.randn(64, 64)}, str(tmp_path / "full.safetensors"))
    data = (tmp_path / "full.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.safetensors: not a readable safetensors file"):
        weights.read_state_dict(tmp_path / "cut.safetensors")
    torch.save({"x": torch.randn(64, 64)}, tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.pt: not a readable torch checkpoint"):
        weights.read_state_dict(tmp_path / "cut.pt")
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown weight file type"):
        weights.read_state_dict(tmp_path / "w.npz")
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        weights.read_state_dict(tmp_path / "nope.safetensors")


def test_strict_key_and_shape_check_lists_differences(seed):
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    g = torch.Generator().manual_seed(seed)
    good = {k: torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in module.state_dict().items()}
    weights.load_exactly(module, good, "ckpt")
    assert all(v.dtype == torch.float32 for v in module.state_dict().values())
    assert torch.equal(module[0].weight, good["0.weight"].float())
    bad = dict(good)
    del bad["1.bias"]
    bad["2.weight"] = torch.ones(1)
    bad["0.weight"] = torch.ones(5, 3)
    bad["0.bias"] = "not a tensor"
    with pytest.raises(ValueError) as err:
        weights.check_state_dict(module.state_dict(), bad, "f.safetensors")
    message = str(err.value)
    assert message.startswith("f.safetensors: the weights do not match the configured model")
    assert "missing keys: 1.bias" in message and "unexpected keys: 2.weight" in message
    assert "0.weight (weights [5, 3], model expects [4, 3])" in message and "0.bias (not a tensor: str)" in message
    weights.check_state_dict(module.state_dict(), {**good, "step": torch.ones(1)}, "f", ignored=["step"])
    bn = torch.nn.BatchNorm1d(3)
    counted = {**{k: v.clone() for k, v in bn.state_dict().items()}, "num_batches_tracked": torch.tensor(7)}
    weights.load_exactly(bn, counted, "f", ignored=["num_batches_tracked"], optional=["num_batches_tracked"])
    assert int(bn.num_batches_tracked) == 0  # an ignored entry is dropped, not loaded
    partial = {k: v for k, v in good.items() if k != "1.bias"}
    weights.load_exactly(module, partial, "f", optional=["1.bias"])
    many = {f"extra{i:02d}": torch.ones(1) for i in range(20)}
    with pytest.raises(ValueError, match=r"extra11, \.\.\. and 8 more"):
        weights.check_state_dict({}, many, "f")
    assert weights.strip_prefix({"model.vqmodel.a": 1, "model.b": 2}, "model.vqmodel.") == {"a": 1}


# ---- layouts and mmtok.load -----------------------------------------------------------------------------
def test_detect_layout_of_each_fixture():
    assert registry.detect_layout(CKPT / "taming_tiny" / "model.ckpt").name == "taming"
    assert registry.detect_layout(CKPT / "llamagen_tiny" / "model.pt").name == "llamagen"
    assert registry.detect_layout(CKPT / "dac_tiny" / "model.pth").name == "dac"
    for name in ("image_l2", "image_taming", "audio_bestrq", "audio_codec"):
        assert registry.detect_layout(LEGACY / name).name == "mmtok"
    assert registry.layout_names()[0] == "mmtok"


def test_load_gives_upstream_codes():
    io = np.load(CKPT / "taming_tiny" / "io.npz")
    tok = mmtok.load(CKPT / "taming_tiny" / "model.ckpt")  # its yaml is found beside it
    assert torch.equal(tok.encode(torch.from_numpy(io["x"])), torch.from_numpy(io["indices"]))
    io = np.load(CKPT / "llamagen_tiny" / "io.npz")
    tok = mmtok.load(str(CKPT / "llamagen_tiny" / "model.pt"), config_path=CKPT / "llamagen_tiny" / "config.json")
    assert torch.equal(tok.encode(torch.from_numpy(io["x"])), torch.from_numpy(io["indices"]))
    assert tok.code_spec.codebook_sizes == (512,)
    io = np.load(CKPT / "dac_tiny" / "io.npz")
    codec = mmtok.load(CKPT / "dac_tiny" / "model.pth", device="cpu", dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(codec.encode(torch.from_numpy(io["x"][0, 0]), 16000), torch.from_numpy(io["codes"][0]))
    bf16 = mmtok.load(LEGACY / "image_l2", dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16


def test_taming_release_folder(tmp_path):
    import shutil as sh

    (tmp_path / "tokenizer").mkdir()
    sh.copy(CKPT / "taming_tiny" / "model.ckpt", tmp_path / "tokenizer" / "vqgan.ckpt")
    sh.copy(CKPT / "taming_tiny" / "config.yaml", tmp_path / "tokenizer" / "vqgan.yaml")
    (tmp_path / "tokenizer" / "text_tokenizer.json").write_text("{}")
    assert registry.detect_layout(tmp_path / "tokenizer").name == "taming"
    io = np.load(CKPT / "taming_tiny" / "io.npz")
    tok = mmtok.load(tmp_path / "tokenizer")
    assert torch.equal(tok.encode(torch.from_numpy(io["x"])), torch.from_numpy(io["indices"]))


def test_unknown_layout_lists_the_layouts(tmp_path):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text('{"model_type": "not_a_tokenizer"}')
    with pytest.raises(ValueError) as err:
        mmtok.load(tmp_path / "hf")
    message = str(err.value)
    assert "'model_type': 'not_a_tokenizer'" in message
    for name in registry.layout_names():
        assert f"{name} (" in message
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"a file with suffix \.txt.*known layouts: mmtok"):
        mmtok.load(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="without a readable config.json"):
        mmtok.load(tmp_path / "empty")
    torch.save({"something": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no known tokenizer layout"):
        mmtok.load(tmp_path / "other.pt")


def test_hub_ids_urls_and_missing_paths_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="looks like a Hugging Face Hub id.*huggingface-cli download "
                                         "facebook/chameleon-7b --local-dir"):
        mmtok.load("facebook/chameleon-7b")
    with pytest.raises(ValueError, match="nothing is downloaded"):
        mmtok.load("https://huggingface.co/deepseek-ai/Janus-Pro-1B")
    with pytest.raises(FileNotFoundError, match="tokenizer not found"):
        mmtok.load(tmp_path / "missing" / "model.pt")


def test_truncated_and_mismatched_files_are_refused(tmp_path):
    data = (CKPT / "llamagen_tiny" / "model.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="cut.pt"):
        mmtok.load(tmp_path / "cut.pt")
    shutil.copytree(LEGACY / "image_l2", tmp_path / "tok")
    weights_file = tmp_path / "tok" / "model.safetensors"
    weights_file.write_bytes(weights_file.read_bytes()[:5000])
    with pytest.raises(ValueError, match="model.safetensors: not a readable safetensors file"):
        mmtok.load(tmp_path / "tok")
    shutil.copytree(LEGACY / "image_l2", tmp_path / "tok2")
    config = json.loads((tmp_path / "tok2" / "config.json").read_text())
    config["num_codes"] += 1
    (tmp_path / "tok2" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"codebook has shape \(96, 6\) but the config says 97 codes"):
        mmtok.load(tmp_path / "tok2")
    shutil.copytree(LEGACY / "audio_codec", tmp_path / "codec")
    tensors = load_file(str(tmp_path / "codec" / "model.safetensors"))
    tensors.pop(sorted(tensors)[0])
    save_file(tensors, str(tmp_path / "codec" / "model.safetensors"))
    with pytest.raises(ValueError, match="missing keys"):
        mmtok.load(tmp_path / "codec")
    (tmp_path / "fam").mkdir()
    (tmp_path / "fam" / "config.json").write_text('{"format": "mmtok.future.family"}')
    with pytest.raises(ValueError, match="format 'mmtok.future.family' is not one this mmtok reads"):
        mmtok.load(tmp_path / "fam")


def test_format_forces_a_layout(tmp_path):
    shutil.copy(CKPT / "taming_tiny" / "model.ckpt", tmp_path / "weights.pt")
    shutil.copy(CKPT / "taming_tiny" / "config.yaml", tmp_path / "config.yaml")
    with pytest.raises(ValueError, match="no known tokenizer layout"):
        mmtok.load(tmp_path / "weights.pt")  # a taming payload under a LlamaGen suffix
    io = np.load(CKPT / "taming_tiny" / "io.npz")
    tok = mmtok.load(tmp_path / "weights.pt", format="taming")
    assert torch.equal(tok.encode(torch.from_numpy(io["x"])), torch.from_numpy(io["indices"]))
    with pytest.raises(ValueError, match="format='vqgan' is not a known layout; known: mmtok, .*taming"):
        mmtok.load(tmp_path / "weights.pt", format="vqgan")
    with pytest.raises(ValueError, match="float32"):
        mmtok.load(CKPT / "dac_tiny" / "model.pth", dtype=torch.bfloat16)
