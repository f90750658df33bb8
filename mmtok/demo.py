"""`mmtok demo`: the main job end to end on bundled data: photos and speech to tokens, one interleaved
token stream, and back to pixels and sound. Writes its outputs to `demo_out/` and prints a summary.

It uses the default image tokenizer shipped in the package when present; otherwise the tiny LlamaGen-layout
fixture (random weights: the round trip works, the pictures are not recognisable).
"""
from __future__ import annotations

import pathlib
import time

import numpy as np
import torch

REPO = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO / "tests" / "data"


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [-1, 1]."""
    mse = float(((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2).square().mean())
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def _nearest_code_summary() -> None:
    import mmtok
    from mmtok.ops import nearest_code_reference

    report = mmtok.info()
    names = [n for n, e in report["backends"].items() if e["available"]]
    print(f"nearest_code backends available: {', '.join(names)} (cpu: {report.get('cpu_capability', 'n/a')})")
    x, c = torch.randn(65536, 16), torch.randn(8192, 16)
    mmtok.nearest_code(x[:64], c)
    t0 = time.perf_counter()
    idx, _ = mmtok.nearest_code(x, c)
    fused = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref, _ = nearest_code_reference(x, c, "l2")
    chunked = time.perf_counter() - t0
    print(f"  65536 vectors x 8192 codes (D=16): fused {fused * 1e3:.0f} ms, chunked torch {chunked * 1e3:.0f} ms "
          f"({chunked / fused:.1f}x), same indices: {bool((idx == ref).float().mean() > 0.999)}")


def _image_tokenizer(data: pathlib.Path):
    from mmtok.image import ImageTokenizer

    try:
        return ImageTokenizer.default(), "default (shipped, trained on photographs)"
    except FileNotFoundError as exc:
        path = data / "checkpoints" / "llamagen_tiny" / "model.pt"
        print(f"  (no default image tokenizer: {exc}; using the random-weight LlamaGen fixture)")
        return ImageTokenizer.from_llamagen(path), "llamagen_tiny fixture (random weights)"


def _save_grid(originals: torch.Tensor, recons: torch.Tensor, path: pathlib.Path) -> None:
    from PIL import Image

    rows = torch.cat([torch.cat(list(originals), dim=2), torch.cat(list(recons), dim=2)], dim=1)
    array = ((rows.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(array).save(path)


def run(args) -> int:
    data = pathlib.Path(args.data)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    _nearest_code_summary()

    print("\nimages -> tokens -> pixels")
    tokenizer, label = _image_tokenizer(data)
    photos = sorted(p for p in (data / "images").iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    size = args.image_size or tokenizer.image_size
    with torch.inference_mode():
        pixels = tokenizer.prepare_images([str(p) for p in photos], size=size)
        codes = tokenizer.encode(pixels)
        recon = tokenizer.decode(codes)
    grid_path = out / "reconstructions.png"
    _save_grid(pixels.float().cpu(), recon.float().cpu(), grid_path)
    h, w = codes.shape[1:]
    print(f"  tokenizer: {label}, {tokenizer.num_codes} codes, f{tokenizer.downsample_factor}")
    for p, a, b in zip(photos, pixels, recon):
        print(f"  {p.name:24s} {size}x{size} -> {h}x{w} = {h * w} tokens, PSNR {_psnr(a.float(), b.float()):.2f} dB")
    print(f"  originals (top) vs reconstructions (bottom): {grid_path}")

    print("\nspeech -> tokens (BEST-RQ) and -> codec codes -> sound")
    from mmtok.audio import AudioCodec, AudioTokenizer
    from mmtok.audio.io import load_audio

    speech_path = data / "audio" / "arctic_a0007.wav"
    speech = load_audio(speech_path)
    audio_tok = AudioTokenizer()
    audio_codes = audio_tok.encode(speech, 16000)
    seconds = speech.numel() / 16000
    print(f"  {speech_path.name}: {seconds:.2f} s -> {audio_codes.shape[-1]} BEST-RQ tokens "
          f"({audio_codes.shape[-1] / seconds:.1f}/s), {int(audio_codes.unique().numel())} distinct codes")
    codec = AudioCodec.from_dac(data / "checkpoints" / "dac_tiny" / "model.pth")
    codec_codes = codec.encode(speech, 16000)
    wav_path = out / "codec_roundtrip.wav"
    codec.decode_to_file(codec_codes, wav_path)
    print(f"  codec (dac_tiny fixture, random weights): {tuple(codec_codes.shape)} codes -> {wav_path}")

    print("\none interleaved stream, parsed back")
    from mmtok.stream import Audio, AudioCodec as CodecSegment, Image, Text, TokenStream

    stream = TokenStream.from_tokenizers(image_tokenizer=tokenizer, audio_tokenizer=audio_tok, audio_codec=codec)
    segments = [Text("A photo: "), Image(codes=codes[0]), Text(" and the words: "), Audio(codes=audio_codes),
                Text(" spoken back: "), CodecSegment(codes=codec_codes)]
    ids = stream.encode(segments)
    back = stream.decode(ids, decode_images=True)
    same = back == segments
    print(f"  vocabulary {len(stream.vocab)} ids (hash {stream.vocab_hash[:12]}), sequence of {len(ids)} tokens; "
          f"decoded segments equal the encoded ones: {same}")
    np.save(out / "stream_ids.npy", np.asarray(ids, dtype=np.int64))
    print(f"\noutputs in {out}/")
    return 0 if same else 1


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="tokenize bundled photos and speech, build a stream, decode it back")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="folder with images/, audio/ and checkpoints/")
    p.add_argument("--out", default="demo_out", help="where the grid PNG, the WAV and the ids go")
    p.add_argument("--image-size", type=int, default=None, help="square size the photos are cropped to")
    p.set_defaults(func=run)
