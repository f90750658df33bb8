"""AudioCodec against the DAC fixture (codes, waveforms), strict loading, chunking, I/O paths, layer numerics."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
import soundfile
import torch
import torch.nn.functional as F

from mmtok.audio.codec import AudioCodec
from mmtok.audio.codec.chunking import encode_chunked
from mmtok.audio.codec.layers import Snake1d, WNConv1d, WNConvTranspose1d
from mmtok.audio.codec.quantizer import ResidualVectorQuantizer
from mmtok.audio.io import prepare_waveform

FIXTURE = pathlib.Path(__file__).parent / "data" / "checkpoints" / "dac_tiny"
ATOL = 1e-5


@pytest.fixture(scope="module")
def expected() -> dict[str, torch.Tensor]:
    with np.load(FIXTURE / "io.npz") as data:
        return {k: torch.from_numpy(data[k]) for k in data.files}


@pytest.fixture(scope="module")
def codec() -> AudioCodec:
    return AudioCodec.from_dac(FIXTURE / "model.pth")


def _dac_payload() -> dict:
    return torch.load(FIXTURE / "model.pth", map_location="cpu", weights_only=True)


# -- numerics against the fixture ------------------------------------------------------------------------------
def test_codes_identical_to_fixture(codec, expected):
    assert (codec.sample_rate, codec.hop_length, codec.frame_rate) == (16000, 320, 50.0)
    assert (codec.n_codebooks, codec.codebook_size) == (4, 64)
    codes = codec.encode(expected["x"][0, 0], 16000)
    assert codes.dtype == torch.int64 and codes.shape == (4, 51)
    assert torch.equal(codes, expected["codes"][0])
    with torch.no_grad():
        z_e = codec.encoder(expected["x_padded"])
        z_q, codes_fwd, latents, commitment, codebook_loss = codec.quantizer(expected["z_e"])
    torch.testing.assert_close(z_e, expected["z_e"], atol=ATOL, rtol=0)
    assert torch.equal(codes_fwd, expected["codes"])
    torch.testing.assert_close(latents, expected["latents"], atol=ATOL, rtol=0)
    torch.testing.assert_close(z_q, expected["z"], atol=ATOL, rtol=0)
    torch.testing.assert_close(commitment, expected["commitment_loss"], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(codebook_loss, expected["codebook_loss"], atol=1e-4, rtol=1e-5)


def test_decode_matches_fixture_full_and_two_codebooks(codec, expected):
    codes = expected["codes"][0]
    with torch.no_grad():
        z = codec.quantizer.decode(codes[None])
    torch.testing.assert_close(z, expected["z_from_codes"], atol=ATOL, rtol=0)
    wave = codec.decode(codes)
    assert wave.shape == (320 * 51 - 8,) == (codec.decoded_length(51),)
    torch.testing.assert_close(wave, expected["y_from_codes"][0, 0], atol=ATOL, rtol=0)
    wave2 = codec.decode(codes[:2])
    torch.testing.assert_close(wave2, expected["y_from_codes_nq2"][0, 0], atol=ATOL, rtol=0)
    assert (wave2 - wave).abs().max() > 1e-3  # the prefix really drops information
    forward = wave[: expected["x"].shape[-1]]
    torch.testing.assert_close(forward, expected["audio_forward"][0, 0], atol=ATOL, rtol=0)


# -- loading -----------------------------------------------------------------------------------------------------
def test_from_dac_defaults_latent_dim_when_missing(tmp_path, expected):
    payload = _dac_payload()
    del payload["metadata"]["kwargs"]["latent_dim"]
    path = tmp_path / "old_dac.pth"
    torch.save(payload, path)
    codec = AudioCodec.from_dac(path)
    assert codec.config["latent_dim"] == 8 * 2 ** 4
    assert torch.equal(codec.encode(expected["x"][0, 0], 16000), expected["codes"][0])


@pytest.mark.parametrize("key", ["decoder.model.3.block.1.weight_g", "quantizer.quantizers.2.codebook.weight"])
def test_missing_key_refused_naming_it(tmp_path, key):
    payload = _dac_payload()
    del payload["state_dict"][key]
    torch.save(payload, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=rf"missing keys: {key.replace('.', '[.]')}"):
        AudioCodec.from_dac(tmp_path / "bad.pth")


def test_unexpected_and_wrong_shape_refused_naming_them(tmp_path):
    payload = _dac_payload()
    payload["state_dict"]["quantizer.quantizers.4.codebook.weight"] = torch.randn(64, 8)
    torch.save(payload, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match=r"unexpected keys: quantizer[.]quantizers[.]4[.]codebook[.]weight"):
        AudioCodec.from_dac(tmp_path / "extra.pth")
    payload = _dac_payload()
    payload["state_dict"]["encoder.block.2.block.4.weight_v"] = torch.randn(32, 16, 7)
    torch.save(payload, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"encoder[.]block[.]2[.]block[.]4[.]weight_v \(expected \[32, 16, 8\]"):
        AudioCodec.from_dac(tmp_path / "shape.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        AudioCodec.from_dac(tmp_path / "nope.pth")


def test_save_and_from_pretrained_round_trip(tmp_path, codec, expected):
    codec.save_pretrained(tmp_path / "codec")
    assert {p.name for p in (tmp_path / "codec").iterdir()} == {"config.json", "model.safetensors"}
    again = AudioCodec.from_pretrained(tmp_path / "codec")
    assert again.config == codec.config
    for key, value in codec.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    codes = again.encode(expected["x"][0, 0], 16000)
    assert torch.equal(codes, expected["codes"][0])
    torch.testing.assert_close(again.decode(codes), expected["y_from_codes"][0, 0], atol=ATOL, rtol=0)


# -- long audio ----------------------------------------------------------------------------------------------
def _long_speech(expected, seconds: float) -> torch.Tensor:
    """Real speech, tiled with fresh random gains and offsets to `seconds` (not a multiple of the hop)."""
    clip = expected["x"][0, 0]
    pieces, total = [], 0
    while total < seconds * 16000:
        start = int(torch.randint(0, 4000, ()))
        pieces.append(clip[start:] * float(torch.empty(()).uniform_(0.3, 1.5)))
        total += pieces[-1].numel()
    return torch.cat(pieces)[: int(seconds * 16000) - 77]


def test_chunked_decode_equals_one_shot(seed, codec):
    frames = 150  # 3 s: 10 chunks of 0.3 s, margins on both sides everywhere
    codes = torch.randint(0, codec.codebook_size, (codec.n_codebooks, frames))
    one_shot = codec.decode(codes, chunk_seconds=60.0)
    chunked = codec.decode(codes, chunk_seconds=0.3)
    assert chunked.shape == one_shot.shape == (320 * frames - 8,)
    torch.testing.assert_close(chunked, one_shot, atol=ATOL, rtol=0)  # everywhere: borders included
    odd = codec.decode(codes[:3, :77], chunk_seconds=0.62)  # chunk size not a divisor of the length
    torch.testing.assert_close(odd, codec.decode(codes[:3, :77], chunk_seconds=60.0), atol=ATOL, rtol=0)


def test_chunked_encode_equals_one_shot(seed, codec, expected):
    audio = codec.preprocess(_long_speech(expected, 3.0), 16000)
    with torch.no_grad():
        one_shot = codec.encoder(audio)
        chunked = encode_chunked(codec.encoder, lambda z: z, audio, codec.hop_length, chunk_frames=31)
    torch.testing.assert_close(chunked, one_shot, atol=ATOL, rtol=0)
    codes_chunked = codec.encode(audio[0, 0], 16000, chunk_seconds=0.7)
    codes_one_shot = codec.encode(audio[0, 0], 16000, chunk_seconds=60.0)
    # identical up to near-ties of the cosine lookup (float summation order differs by ~1e-7)
    assert (codes_chunked == codes_one_shot).float().mean() >= 0.995


# -- input paths ---------------------------------------------------------------------------------------------
def test_stereo_and_resampled_inputs(seed, codec, expected):
    x = expected["x"][0, 0]
    tilt = torch.randn_like(x) * 0.01
    stereo = torch.stack([x + tilt, x - tilt])
    assert torch.equal(codec.encode(stereo, 16000), expected["codes"][0])  # channels are averaged
    x48 = prepare_waveform(x, 16000, 48000)
    codes48 = codec.encode(x48, 48000)
    assert torch.equal(codes48, codec.encode(prepare_waveform(x48, 48000, 16000), 16000))
    assert codes48.shape[1] in (51, 52)
    assert (codes48[0, :50] == expected["codes"][0, 0, :50]).float().mean() > 0.8  # same speech, first codebook
    pcm = (stereo.T.clamp(-1, 1) * 32767).round().to(torch.int16)  # (samples, channels) is refused, not guessed
    with pytest.raises(ValueError, match="channels"):
        codec.encode(pcm, 16000)


def test_encode_file_and_decode_to_file(tmp_path, codec, expected):
    pcm = (expected["x"][0, 0] * 32768).round().to(torch.int16).numpy()  # the fixture clip is int16 / 32768
    soundfile.write(tmp_path / "clip.wav", pcm, 16000, subtype="PCM_16")
    codes = codec.encode_file(tmp_path / "clip.wav")
    assert torch.equal(codes, expected["codes"][0])
    codec.decode_to_file(codes, tmp_path / "back.wav", subtype="FLOAT")
    back, rate = soundfile.read(tmp_path / "back.wav", dtype="float32")
    assert rate == 16000
    torch.testing.assert_close(torch.from_numpy(back), expected["y_from_codes"][0, 0], atol=ATOL, rtol=0)
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        codec.encode_file(tmp_path / "missing.wav")


def test_bad_codes_refused(codec):
    with pytest.raises(ValueError, match="codebooks"):
        codec.decode(torch.zeros(5, 10, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        codec.decode(torch.full((4, 10), 64))
    with pytest.raises(ValueError, match="shape"):
        codec.decode(torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        codec.decode(torch.zeros(4, 10))


# -- layers and quantiser against float64 references ------------------------------------------------------------
def test_layers_match_float64_reference(seed):
    conv = WNConv1d(6, 5, 7, dilation=3, padding=9)
    convt = WNConvTranspose1d(6, 4, 10, stride=5, padding=3)
    pointwise = WNConv1d(6, 5, 1)
    snake = Snake1d(6)
    for module in (conv, convt, pointwise, snake):
        for p in module.parameters():
            torch.nn.init.uniform_(p, 0.2, 1.5) if p.shape[-1] == 1 and p.dim() == 3 else torch.nn.init.normal_(p)
    x = torch.randn(2, 6, 40)

    def folded(module):  # w = g * v / ||v||, norm over all dims but 0 (per INPUT channel for the transpose)
        v, g = module.weight_v.double(), module.weight_g.double()
        return g * v / v.flatten(1).norm(dim=1).view(-1, 1, 1)

    ref = {
        conv: F.conv1d(x.double(), folded(conv), conv.bias.double(), padding=9, dilation=3),
        convt: F.conv_transpose1d(x.double(), folded(convt), convt.bias.double(), stride=5, padding=3),
        pointwise: F.conv1d(x.double(), folded(pointwise), pointwise.bias.double()),
        snake: x.double() + torch.sin(snake.alpha.double() * x.double()) ** 2 / (snake.alpha.double() + 1e-9),
    }
    for module, want in ref.items():
        with torch.no_grad():
            fast = module(x)  # inference path (folded weight, in-place Snake, BLAS 1x1)
        slow = module(x)  # training path (recomputed weight, autograd)
        assert slow.requires_grad
        torch.testing.assert_close(fast.double(), want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(slow.detach().double(), want, atol=1e-5, rtol=1e-5)
    assert convt(x).shape[-1] == 5 * 40 - 1  # DAC's transposed conv: 5L - 1


def test_residual_vq_matches_float64_reference(seed):
    rvq = ResidualVectorQuantizer(dim=24, n_codebooks=3, codebook_size=50, codebook_dim=4)
    z = torch.randn(2, 24, 30)
    codes = rvq.encode(z)
    residual, want_codes, want_z = z.double(), [], 0
    for stage in rvq.quantizers:
        w_in = stage.in_proj.weight().double()
        e = F.conv1d(residual, w_in, stage.in_proj.bias.double())
        e = F.normalize(e.transpose(1, 2), dim=-1)
        cb = F.normalize(stage.codebook.weight.double(), dim=-1)
        idx = (e @ cb.T).argmax(-1)
        raw = stage.codebook.weight.double()[idx].transpose(1, 2)
        part = F.conv1d(raw, stage.out_proj.weight().double(), stage.out_proj.bias.double())
        residual, want_z = residual - part, want_z + part
        want_codes.append(idx)
    assert torch.equal(codes, torch.stack(want_codes, 1))
    torch.testing.assert_close(rvq.decode(codes).double(), want_z, atol=1e-5, rtol=1e-5)


def test_cli_convert_encode_decode(tmp_path, expected):
    import argparse

    from mmtok.audio.codec import cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command", required=True))

    def run(*argv):
        args = parser.parse_args([str(a) for a in argv])
        assert args.func(args) == 0

    pcm = (expected["x"][0, 0] * 32768).round().to(torch.int16).numpy()
    soundfile.write(tmp_path / "clip.wav", pcm, 16000, subtype="PCM_16")
    run("codec-convert", FIXTURE / "model.pth", tmp_path / "codec")
    run("codec-encode", tmp_path / "clip.wav", "--codec", tmp_path / "codec", "--out", tmp_path / "codes")
    codes = np.load(tmp_path / "codes" / "clip.npy")
    assert np.array_equal(codes, expected["codes"][0].numpy())
    run("codec-decode", tmp_path / "codes" / "clip.npy", "--dac", FIXTURE / "model.pth", "--out", tmp_path / "wav")
    back, rate = soundfile.read(tmp_path / "wav" / "clip.wav", dtype="float32")
    assert rate == 16000 and back.shape == (320 * 51 - 8,)
    np.testing.assert_allclose(back, expected["y_from_codes"][0, 0].numpy(), atol=2.0 / 32768)  # PCM_16 output

    # a missing input is reported and skipped; the good one is still decoded, and the status says 1 failed
    missing = tmp_path / "codes" / "missing.npy"
    args = parser.parse_args([str(a) for a in ("codec-decode", missing, tmp_path / "codes" / "clip.npy",
                                               "--dac", FIXTURE / "model.pth", "--out", tmp_path / "wav2")])
    assert args.func(args) == 1
    assert soundfile.read(tmp_path / "wav2" / "clip.wav")[0].shape == back.shape
