"""End-to-end dataset tokenization: `mmtok.data.tokenize_dataset` (what `mmtok tokenize` runs) vs a naive loop.

Datasets (generated in a temporary folder):
  * images: --images PNGs of 64x64 (structured gradients + noise), the tiny LlamaGen fixture (f4, 512 codes)
  * speech: --speech-minutes of 16 kHz speech from espeak-ng (if installed; else a synthetic voiced signal),
    in clips of 3-8 s, the BEST-RQ AudioTokenizer
Compared, in one process (median of --repeats, after one warm-up call of each tokenizer):
  * naive: one file, one call, batch size 1, one .npy per input (what one-off scripts do)
  * mmtok: tokenize_dataset with --workers DataLoader workers and --batch-size, writing shards + manifest
Memory: the peak RSS (main process and, separately, the largest worker) of tokenize_dataset in a fresh
subprocess, for the image set and for one 10x larger, to show that memory stays flat as the dataset grows.

    python benchmarks/tokenize_dataset.py --quick      # 300 images, 1 min of speech, 1 repeat
    python benchmarks/tokenize_dataset.py              # 2,000 images, 10 min of speech, 3 repeats
"""
from __future__ import annotations

import argparse
import json
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
CKPT = ROOT / "tests/data/checkpoints/llamagen_tiny"
SENTENCES = ["the quick brown fox jumps over the lazy dog", "a tokenizer turns sound into discrete codes",
             "please call stella and ask her to bring these things with her from the store",
             "six spoons of fresh snow peas five thick slabs of blue cheese", "we also need a small plastic snake",
             "she can scoop these things into three red bags and we will go meet her wednesday"]


def make_images(folder: pathlib.Path, count: int, seed: int = 0) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64]
    for i in range(count):
        a, b, c = rng.uniform(0.02, 0.2, size=3)
        base = np.stack([np.sin(a * xx + i), np.cos(b * yy), np.sin(c * (xx + yy))], axis=-1)
        pixels = np.clip((base * 0.4 + 0.5) * 255 + rng.normal(0, 12, size=base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:06d}.png")


def make_speech(folder: pathlib.Path, minutes: float, seed: int = 0) -> str:
    """Clips adding up to `minutes`; returns the source ('espeak-ng' or 'synthetic')."""
    import soundfile

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    espeak = shutil.which("espeak-ng")
    total, n = 0.0, 0
    while total < minutes * 60:
        path = folder / f"{n:05d}.wav"
        if espeak:
            text = " ".join(rng.choice(SENTENCES, size=int(rng.integers(1, 3))))
            subprocess.run([espeak, "-w", str(path), "-s", str(int(rng.integers(140, 200))), text], check=True,
                           capture_output=True)
        else:
            seconds = rng.uniform(3, 8)
            t = np.arange(int(seconds * 16000)) / 16000
            f0 = rng.uniform(90, 220) * (1 + 0.1 * np.sin(2 * np.pi * 3 * t))
            voice = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / 16000) / k for k in range(1, 8))
            envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t)
            soundfile.write(path, (0.1 * voice * envelope + 0.003 * rng.standard_normal(t.size)).astype(np.float32),
                            16000)
        total += soundfile.info(str(path)).duration
        n += 1
    return "espeak-ng" if espeak else "synthetic"


def load_tokenizers():
    from mmtok.audio.tokenizer import AudioTokenizer
    from mmtok.image import ImageTokenizer

    image = ImageTokenizer.from_llamagen(CKPT / "model.pt", config_path=CKPT / "config.json")
    return image, AudioTokenizer(seed=0)


def naive_images(files, tok, out: pathlib.Path) -> None:
    for path in files:
        np.save(out / (path.stem + ".npy"), tok.encode([path])[0].numpy())


def naive_audio(files, tok, out: pathlib.Path) -> None:
    for path in files:
        np.save(out / (path.stem + ".npy"), tok.encode_file(path).numpy())


def timed(fn, repeats: int) -> float:
    """Median wall time of `repeats` runs, no warm-up (a warm-up run would leave the outputs in place)."""
    from _common import median_seconds

    return median_seconds(fn, repeats=repeats, warmup=0, budget_s=float("inf"))


def run_pipeline(inputs, out: pathlib.Path, workers: int, batch_size: int, image=None, audio=None):
    from mmtok.data import tokenize_dataset

    shutil.rmtree(out, ignore_errors=True)
    return tokenize_dataset(inputs, out, image_tokenizer=image, audio_tokenizer=audio, workers=workers,
                            batch_size=batch_size, shard_size=1000, progress=False)


def child_rss(args) -> None:
    """(subprocess) tokenize a folder and print the peak RSS of this process and of its workers."""
    image, _ = load_tokenizers()
    summary = run_pipeline(args.rss_child, pathlib.Path(args.rss_out), args.workers, args.batch_size, image=image)
    print(json.dumps({"items": summary.processed,
                      "main_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "worker_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))


def measure_rss(folder: pathlib.Path, out: pathlib.Path, args) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--rss-child", str(folder), "--rss-out", str(out),
                           "--workers", str(args.workers), "--batch-size", str(args.batch_size)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--speech-minutes", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive-limit", type=int, default=500, help="naive image loop timed on this many files")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    parser.add_argument("--rss-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        return child_rss(args)
    if args.quick:
        args.images, args.speech_minutes, args.repeats, args.naive_limit = 300, 1.0, 1, 150
    from _common import machine, print_table, write_json

    image_tok, audio_tok = load_tokenizers()
    with tempfile.TemporaryDirectory(prefix="mmtok-bench-") as tmp:
        tmp = pathlib.Path(tmp)
        make_images(tmp / "images", args.images)
        source = make_speech(tmp / "speech", args.speech_minutes)
        image_files = sorted((tmp / "images").glob("*.png"))
        speech_files = sorted((tmp / "speech").glob("*.wav"))
        naive_out = tmp / "naive"
        naive_out.mkdir()
        image_tok.encode([image_files[0]]), audio_tok.encode_file(speech_files[0])  # warm up both
        subset = image_files[: args.naive_limit]
        naive_img = len(subset) / timed(lambda: naive_images(subset, image_tok, naive_out), args.repeats)
        ours_img = args.images / timed(lambda: run_pipeline(tmp / "images", tmp / "out_img", args.workers,
                                                             args.batch_size, image=image_tok), args.repeats)
        speech_seconds = sum(__import__("soundfile").info(str(p)).duration for p in speech_files)
        naive_t = timed(lambda: naive_audio(speech_files, audio_tok, naive_out), args.repeats)
        ours_t = timed(lambda: run_pipeline(tmp / "speech", tmp / "out_speech", args.workers, args.batch_size,
                                            audio=audio_tok), args.repeats)
        rows = [["images 64x64", args.images, naive_img, ours_img, ours_img / naive_img],
                [f"speech ({source}, {speech_seconds / 60:.1f} min)", len(speech_files), len(speech_files) / naive_t,
                 len(speech_files) / ours_t, naive_t / ours_t]]
        print(f"\nitems/s, naive loop (batch 1, one .npy per file) vs tokenize_dataset "
              f"({args.workers} workers, batch {args.batch_size})")
        print_table(["dataset", "items", "naive items/s", "mmtok items/s", "speedup"], rows)
        print(f"speech: {speech_seconds / naive_t:.0f} vs {speech_seconds / ours_t:.0f} seconds of audio per second")

        small = max(1, args.images // 10)
        make_images(tmp / "small", small, seed=1)
        make_images(tmp / "large", small * 10, seed=1)
        memory = {n: measure_rss(tmp / name, tmp / f"rss_{name}", args) for n, name in ((small, "small"),
                                                                                        (small * 10, "large"))}
        print("\npeak RSS (MiB) of tokenize_dataset in a fresh process, images")
        print_table(["images", "main MiB", "largest worker MiB"],
                    [[n, m["main_mib"], m["worker_mib"]] for n, m in memory.items()])
    write_json("tokenize_dataset", {
        "machine": machine(), "args": vars(args), "speech_source": source, "speech_seconds": speech_seconds,
        "images": {"naive_items_per_s": naive_img, "mmtok_items_per_s": ours_img, "speedup": ours_img / naive_img},
        "speech": {"naive_items_per_s": len(speech_files) / naive_t, "mmtok_items_per_s": len(speech_files) / ours_t,
                   "speedup": naive_t / ours_t},
        "peak_rss_mib": {str(n): m for n, m in memory.items()}})


if __name__ == "__main__":
    main()
