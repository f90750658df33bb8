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

Engines (`--engine local,ray`; needs the ray extra): the same --engine-images PNGs through the local engine
(--workers DataLoader workers) and the Ray engine (a local Ray with --workers CPUs, as many actors, no
DataLoader workers in them), shard size 1000, each in a fresh process: cold (first call: Ray starting, actors
receiving the tokenizers) and warm (a second call in the same process), items/s and the Ray / local ratio;
then the peak driver RSS of each engine as the number of shards grows 10x (shard size 1000 -> 100, same images).

    python benchmarks/tokenize_dataset.py --engine local,ray --engine-images 2000
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


def child_engine(args) -> None:
    """(subprocess) two tokenize_dataset calls with one engine: cold and warm seconds, and the driver's peak RSS."""
    import time

    image, _ = load_tokenizers()
    kwargs = {}
    if args.engine_child == "ray":
        import ray

        kwargs = {"engine": "ray", "concurrency": args.workers}
        start = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - start
    times = []
    for _ in range(1 if args.once else 2):
        out = pathlib.Path(args.rss_out)
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        summary = _engine_run(args.rss_child, out, image, args, **kwargs)
        times.append(time.perf_counter() - start)
    if args.engine_child == "ray":
        times[0] += ray_start  # a cold run starts Ray
    print(json.dumps({"items": summary.processed, "shards": summary.shards_total, "cold_s": times[0],
                      "warm_s": times[-1] if len(times) > 1 else None, "driver_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def _engine_run(folder, out, image, args, **kwargs):
    from mmtok.data import tokenize_dataset

    return tokenize_dataset(folder, out, image_tokenizer=image, workers=0 if kwargs else args.workers,
                            batch_size=args.batch_size, shard_size=args.shard_size, progress=False, **kwargs)


def engine_child(engine: str, folder: pathlib.Path, out: pathlib.Path, shard_size: int, args, once=False) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--engine-child", engine, "--rss-child", str(folder),
                           "--rss-out", str(out), "--workers", str(args.workers), "--batch-size",
                           str(args.batch_size), "--shard-size", str(shard_size)] + (["--once"] if once else []),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{engine} child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare_engines(engines: list[str], args) -> None:
    from _common import machine, print_table, write_json

    with tempfile.TemporaryDirectory(prefix="mmtok-bench-engines-") as tmp:
        tmp = pathlib.Path(tmp)
        make_images(tmp / "images", args.engine_images)
        speed = {e: engine_child(e, tmp / "images", tmp / f"out_{e}", 1000, args) for e in engines}
        base = speed.get("local")
        rows = []
        for e, m in speed.items():
            cold, warm = m["items"] / m["cold_s"], m["items"] / m["warm_s"]
            rows.append([e, m["items"], m["shards"], cold, warm,
                         None if base is None else cold / (base["items"] / base["cold_s"]),
                         None if base is None else warm / (base["items"] / base["warm_s"])])
        print(f"\nitems/s, {args.engine_images} images 64x64 (tiny LlamaGen), shard size 1000, {args.workers} "
              f"CPUs (local: {args.workers} DataLoader workers; ray: {args.workers} actors)")
        print_table(["engine", "items", "shards", "cold items/s", "warm items/s", "cold / local", "warm / local"],
                    rows)
        memory = {}  # half the images, one call each: shard size 1000 -> 100 is 10x the shards
        make_images(tmp / "half", max(1, args.engine_images // 2), seed=1)
        for e in engines:
            for shard_size in (1000, 100):
                m = engine_child(e, tmp / "half", tmp / f"rss_{e}", shard_size, args, once=True)
                memory[f"{e}/{m['shards']}"] = {"engine": e, "shard_size": shard_size, **m}
        print(f"\npeak driver RSS (MiB) as the shards grow 10x (the same {max(1, args.engine_images // 2)} images)")
        print_table(["engine", "shard size", "shards", "driver MiB"],
                    [[m["engine"], m["shard_size"], m["shards"], m["driver_mib"]] for m in memory.values()])
    write_json("tokenize_dataset_engines", {
        "machine": machine(), "args": vars(args), "speed": speed, "driver_rss": memory,
        "ray_over_local": {k: (speed["ray"]["items"] / speed["ray"][k]) / (speed["local"]["items"] / speed["local"][k])
                           for k in ("cold_s", "warm_s")} if {"ray", "local"} <= set(speed) else None})


def compare_parquet(args) -> None:
    """Parquet input (the same PNG bytes in a binary column, row groups of 256) vs the images as files:
    items/s of the local engine, the first call (cold: tokenizer load excluded, file caches warm) and
    the median of the next `repeats` (warm), same process, same tokenizer."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from _common import machine, print_table, write_json

    image, _ = load_tokenizers()
    with tempfile.TemporaryDirectory(prefix="mmtok-bench-parquet-") as tmp:
        tmp = pathlib.Path(tmp)
        make_images(tmp / "images", args.images)
        files = sorted((tmp / "images").glob("*.png"))
        pq.write_table(pa.table({"key": [f.name for f in files],
                                 "png": pa.array([f.read_bytes() for f in files], pa.binary())}),
                       tmp / "images.parquet", row_group_size=256)
        result = {}
        for name, source in (("files", tmp / "images"), ("parquet", tmp / "images.parquet")):
            cold = timed(lambda: run_pipeline(source, tmp / f"out_{name}", args.workers, args.batch_size, image), 1)
            warm = timed(lambda: run_pipeline(source, tmp / f"out_{name}", args.workers, args.batch_size, image),
                         args.repeats)
            result[name] = {"items": len(files), "cold_s": cold, "warm_s": warm,
                            "cold_items_per_s": len(files) / cold, "warm_items_per_s": len(files) / warm}
    base = result["files"]
    print(f"\nitems/s, {args.images} images 64x64 PNG (tiny LlamaGen), {args.workers} DataLoader workers")
    print_table(["input", "items", "cold items/s", "warm items/s", "warm / files"],
                [[k, m["items"], m["cold_items_per_s"], m["warm_items_per_s"],
                  m["warm_items_per_s"] / base["warm_items_per_s"]] for k, m in result.items()])
    write_json("tokenize_dataset_parquet", {"machine": machine(), "args": vars(args), "result": result})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--speech-minutes", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive-limit", type=int, default=500, help="naive image loop timed on this many files")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--parquet", action="store_true", help="only: Parquet input vs the same images as files")
    parser.add_argument("--engine", default="local",
                        help="'local' (default: the comparison above) or a list like 'local,ray': engines compared")
    parser.add_argument("--engine-images", type=int, default=2000, help="images of the engine comparison")
    parser.add_argument("--shard-size", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument("--engine-child", help=argparse.SUPPRESS)
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    parser.add_argument("--rss-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine_child:
        return child_engine(args)
    if args.rss_child:
        return child_rss(args)
    engines = [e.strip() for e in args.engine.split(",") if e.strip()]
    if engines != ["local"]:
        return compare_engines(engines, args)
    if args.quick:
        args.images, args.speech_minutes, args.repeats, args.naive_limit = 300, 1.0, 1, 150
    if args.parquet:
        return compare_parquet(args)
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
