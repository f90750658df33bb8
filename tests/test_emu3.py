"""Emu3 VQ-VAE (transformers `Emu3VQVAE` layout): codes and pixels against the upstream outputs recorded by
scripts/fixtures/make_emu3_fixtures.py, streaming against one pass, loading, saving and refusals."""
from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest
import torch

import mmtok
from mmtok.tokenizer import Tokenizer, detect_layout, load
from mmtok.tokenizer.protocol import StreamingVideoEncoder
from mmtok.video.emu3 import Emu3ImageTokenizer, Emu3Tokenizer

DATA = pathlib.Path(__file__).parent / "data" / "emu3"
MODEL = DATA / "model"
MARGIN = 1e-4
BF16_MARGIN = 1e-2
PIXELS = 1e-4


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(DATA / "outputs.npz"))


@pytest.fixture(scope="module")
def tok():
    return load(MODEL)


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a))


def _codes_match(codes: torch.Tensor, expected, margin, threshold) -> None:
    expected, margin = _t(expected).long(), _t(margin)
    assert codes.shape == expected.shape
    sure = margin > threshold
    assert sure.float().mean() > 0.5  # the comparison covers most codes
    assert torch.equal(codes[sure], expected[sure])


def test_layout_detected(tok):
    assert detect_layout(MODEL).name == "emu3"
    assert isinstance(tok, Emu3Tokenizer)
    spec = tok.code_spec
    assert spec.modality == "video" and spec.axes == ("t", "h", "w")
    assert spec.codebook_sizes == (300,) and spec.downsample == (4, 4, 4)
    assert spec.temporal_downsample == 4 and spec.spatial_downsample == 4
    assert isinstance(tok, Tokenizer) and isinstance(tok, StreamingVideoEncoder)
    assert isinstance(tok.as_image_tokenizer(), Tokenizer)
    assert isinstance(mmtok.load(MODEL), Emu3Tokenizer)


@pytest.mark.parametrize("channels_last", [True, False])
def test_image_codes_and_pixels_match_upstream(ref, channels_last):
    tok = load(MODEL, channels_last=channels_last)
    codes = tok.encode_images(_t(ref["image"]))
    _codes_match(codes, ref["image_codes"], ref["image_margin"][:, 0], MARGIN)
    pixels = tok.decode_images(_t(ref["image_codes"]), clamp=False)
    torch.testing.assert_close(pixels, _t(ref["image_decoded"]), atol=PIXELS, rtol=0)


def test_video_codes_latents_and_pixels_match_upstream(tok, ref):
    video = _t(ref["video"])
    latents = tok.encode_latents(video)  # (B, D, t, h, w); upstream's are (B, t, D, h, w)
    torch.testing.assert_close(latents, _t(ref["video_latents"]).transpose(1, 2), atol=1e-4, rtol=1e-5)
    _codes_match(tok.encode(video), ref["video_codes"], ref["video_margin"], MARGIN)
    torch.testing.assert_close(tok.decode(_t(ref["video_codes"]), clamp=False), _t(ref["video_decoded"]),
                               atol=PIXELS, rtol=0)
    torch.testing.assert_close(tok.decode(_t(ref["random_codes"]), clamp=False), _t(ref["random_decoded"]),
                               atol=PIXELS, rtol=0)
    assert float(tok.decode(_t(ref["random_codes"])).abs().max()) <= 1.0  # clamped by default


def test_bf16_codes_equal_where_the_margin_is_clear(ref):
    tok = load(MODEL, dtype=torch.bfloat16)
    _codes_match(tok.encode(_t(ref["video"])), ref["video_codes"], ref["video_margin"], BF16_MARGIN)
    _codes_match(tok.encode_images(_t(ref["image"])), ref["image_codes"], ref["image_margin"][:, 0], BF16_MARGIN)
    pixels = tok.decode(_t(ref["video_codes"]), clamp=False)
    assert pixels.dtype == torch.float32
    assert float((pixels - _t(ref["video_decoded"])).abs().max()) < 0.1


def test_image_is_the_video_of_its_copies(tok, ref):
    image = _t(ref["image"])
    as_video = tok.encode(image.unsqueeze(1).repeat(1, tok.temporal_factor, 1, 1, 1))
    assert torch.equal(as_video[:, 0], tok.encode_images(image))
    frames = tok.decode(tok.encode_images(image).unsqueeze(1), clamp=False)
    torch.testing.assert_close(frames[:, 0], tok.decode_images(tok.encode_images(image), clamp=False),
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize("sizes", [[1, 3, 5, 3], [4, 4, 4], [12], [2, 10]])
def test_streamed_encode_equals_one_pass(tok, sizes):
    gen = torch.Generator().manual_seed(5)
    video = torch.rand((2, 12, 3, 16, 20), generator=gen) * 2 - 1
    whole = tok.encode(video)
    pieces = list(tok.encode_stream(video.split(sizes, dim=1)))
    assert torch.equal(torch.cat(pieces, dim=1), whole)
    # every yielded piece holds exactly the latent frames its chunk completed
    done = np.cumsum(sizes) // tok.temporal_factor
    assert [p.shape[1] for p in pieces] == [int(d) for d in np.diff(np.r_[0, done]) if d]


def test_streamed_encode_refuses_a_partial_group_and_a_changing_shape(tok):
    video = torch.rand((1, 6, 3, 16, 20)) * 2 - 1
    with pytest.raises(ValueError, match="2 frame"):
        list(tok.encode_stream([video]))
    with pytest.raises(ValueError, match="chunk 1"):
        list(tok.encode_stream([video[:, :4], torch.zeros(1, 4, 3, 16, 24)]))


def test_streamed_decode_equals_one_pass(tok, ref):
    codes = torch.randint(0, 300, (2, 5, 3, 4), generator=torch.Generator().manual_seed(2))
    whole = tok.decode(codes, clamp=False)
    pieces = list(tok.decode_stream(codes.split([2, 1, 2], dim=1), clamp=False))
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole, atol=1e-5, rtol=0)


def test_frame_batch_does_not_change_results(ref):
    one = load(MODEL, frame_batch=1)
    many = load(MODEL, frame_batch=64)
    video = _t(ref["video"])
    assert torch.equal(one.encode(video), many.encode(video))
    torch.testing.assert_close(one.decode(_t(ref["random_codes"])), many.decode(_t(ref["random_codes"])),
                               atol=1e-5, rtol=0)


def test_save_and_reload_identical(tok, ref, tmp_path):
    tok.save_pretrained(tmp_path / "saved")
    again = load(tmp_path / "saved")
    assert isinstance(again, Emu3Tokenizer)
    assert again.config == tok.config
    for key, value in tok.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(again.state_dict()[key], value), key
    assert torch.equal(again.encode(_t(ref["video"])), tok.encode(_t(ref["video"])))
    assert torch.equal(Emu3Tokenizer.from_pretrained(tmp_path / "saved").encode_images(_t(ref["image"])),
                       tok.encode_images(_t(ref["image"])))


def test_image_view(ref):
    view = load(MODEL, modality="image")
    assert isinstance(view, Emu3ImageTokenizer)
    assert view.code_spec.modality == "image" and view.code_spec.axes == ("h", "w")
    assert view.code_spec.downsample == (4, 4)
    _codes_match(view.encode(_t(ref["image"])), ref["image_codes"], ref["image_margin"][:, 0], MARGIN)


def test_full_emu3_checkpoint_layout(tok, ref, tmp_path):
    """A full Emu3 model folder: the VQ-VAE config under vq_config, its weights under model.vqmodel."""
    from safetensors.torch import load_file, save_file

    config = json.loads((MODEL / "config.json").read_text())
    full = {"model_type": "emu3", "vq_config": config, "text_config": {"hidden_size": 8}}
    folder = tmp_path / "emu3-full"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(full))
    state = {f"model.vqmodel.{k}": v for k, v in load_file(MODEL / "model.safetensors").items()}
    state["model.text_model.embed_tokens.weight"] = torch.zeros(4, 8)
    save_file(state, folder / "model.safetensors")
    loaded = load(folder)
    assert detect_layout(folder).name == "emu3"
    assert torch.equal(loaded.encode_images(_t(ref["image"])), tok.encode_images(_t(ref["image"])))


def _copy_model(tmp_path) -> pathlib.Path:
    folder = tmp_path / "model"
    shutil.copytree(MODEL, folder)
    return folder


def test_mismatched_config_is_refused_listing_keys_and_shapes(tmp_path):
    folder = _copy_model(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["codebook_size"] = 512
    config["num_res_blocks"] = 2
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as err:
        load(folder)
    message = str(err.value)
    assert "model.safetensors" in message and "missing keys" in message
    assert "quantize.embedding.weight (weights [300, 6], model expects [512, 6])" in message


def test_invalid_config_and_truncated_weights_are_refused(tmp_path):
    folder = _copy_model(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_size": 48}))
    with pytest.raises(ValueError, match="config.json.*hidden_size"):
        load(folder)
    (folder / "config.json").write_text(json.dumps(config))
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="model.safetensors"):
        load(folder)


def test_bad_codes_and_inputs_are_refused(tok):
    with pytest.raises(ValueError, match="outside 0..299"):
        tok.decode(torch.full((1, 1, 2, 2), 300))
    with pytest.raises(ValueError, match="outside 0..299"):
        tok.decode_images(torch.full((1, 2, 2), -1))
    with pytest.raises(ValueError, match="integer"):
        tok.decode(torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="multiple of 4 frames"):
        tok.encode(torch.zeros(1, 6, 3, 16, 20))
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        tok.encode(torch.zeros(1, 3, 16, 20))
    with pytest.raises(ValueError, match="spatial factor 4"):
        tok.encode_images(torch.zeros(1, 3, 18, 20))
    with pytest.raises(ValueError, match="multiple of 4"):
        tok.latent_timestamps(torch.arange(6.0))


def test_latent_timestamps(tok):
    times = torch.arange(12, dtype=torch.float64) / 24.0
    assert torch.equal(tok.latent_timestamps(times), torch.tensor([0.0, 4 / 24, 8 / 24], dtype=torch.float64))


def test_compiles_without_graph_breaks(tok, ref):
    """The per-frame encoder / decoder and the temporal stacks trace as single graphs (torch.compile-friendly)."""
    model = tok.model
    frames = _t(ref["image"]).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        z = model.encode_frames(frames)
        compiled = torch.compile(model.encode_frames, backend="eager", fullgraph=True)
        torch.testing.assert_close(compiled(frames), z, atol=1e-5, rtol=0)
        video_z = z.unsqueeze(2).expand(-1, -1, 4, -1, -1)
        temporal = torch.compile(model.encode_temporal, backend="eager", fullgraph=True)
        torch.testing.assert_close(temporal(video_z), model.encode_temporal(video_z), atol=1e-5, rtol=0)
        hidden, quant = model.decode_temporal(_t(ref["image_codes"]).long().unsqueeze(1))
        h, q = (t[:, :, 0].contiguous(memory_format=torch.channels_last) for t in (hidden, quant))
        decode = torch.compile(model.decode_frames, backend="eager", fullgraph=True)
        torch.testing.assert_close(decode(h, q), model.decode_frames(h, q), atol=1e-5, rtol=0)


def test_processor_normalisation_is_read_and_applied(tmp_path, ref):
    from PIL import Image

    folder = _copy_model(tmp_path)
    mean, std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "Emu3ImageProcessor", "do_normalize": True, "image_mean": mean, "image_std": std}))
    tok = load(folder)
    assert tok.emu3_config.image_mean == mean and tok.emu3_config.image_std == std
    pixels = (np.random.default_rng(0).random((24, 40, 3)) * 255).astype(np.uint8)
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
    normalised = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.equal(tok.encode_images([Image.fromarray(pixels)], mode="native"), tok.encode_images(normalised))
    plain = load(MODEL)
    assert torch.equal(plain.encode_images([Image.fromarray(pixels)], mode="native"), plain.encode_images(x * 2 - 1))
