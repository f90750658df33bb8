"""Video tokenizer throughput and memory: decode + sample + tokenize a generated 720p H.264 video.

Measures, in one process (median of repeats), frames per second through
  * decode only (PyAV, every frame, no conversion)                          -- the ceiling
  * mmtok VideoTokenizer at 1 fps and at the full frame rate                -- streaming, batched
  * a naive baseline: decode every frame to full-resolution RGB into a list, then sample, resize with
    PIL and tokenize (what a first script usually does; memory grows with the video)
and, in fresh subprocesses, the peak RSS for two video lengths (streaming vs naive), to show that the
streaming path's memory is flat in the video's length.

The image tokenizer is the tiny LlamaGen fixture (f4, 512 codes) at --size (default 128: a 32x32 grid),
so the numbers are dominated by decoding and preprocessing rather than by a big VQ-GAN.

    python benchmarks/video_tokenizer.py --quick     # 2 cores: 3 s / 6 s of 720p30, size 64, 3 repeats
    python benchmarks/video_tokenizer.py --seconds 10 --long-seconds 40 --repeats 3
"""
from __future__ import annotations

import argparse
import fractions
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import av
import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
CKPT = ROOT / "tests/data/checkpoints/llamagen_tiny"
WIDTH, HEIGHT, FPS = 1280, 720, 30


def write_video(path: pathlib.Path, seconds: float) -> pathlib.Path:
    """720p30 H.264: a textured, panning background (so decoding costs what real footage costs) with a
    moving box and a bobbing square on top."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    texture = np.random.default_rng(0).integers(0, 48, (HEIGHT, WIDTH, 3))
    gradient = np.stack([(xx * 200 // WIDTH), (yy * 200 // HEIGHT), np.full_like(xx, 80)], axis=-1)
    background = (gradient + texture).astype(np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"preset": "ultrafast", "g": str(2 * FPS)})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i in range(int(seconds * FPS)):
            image = np.roll(background, 4 * i, axis=1)  # camera pan
            x = (i * 17) % (WIDTH - 160)
            image[200:360, x: x + 160] = (240, 40, 40)
            cy, cx = 500 + int(80 * np.sin(i / 10)), (WIDTH - 1 - x) % (WIDTH - 100) + 50
            image[cy - 40: cy + 40, cx - 40: cx + 40] = (40, 220, 80)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, fractions.Fraction(1, FPS)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def load_image_tokenizer():
    from mmtok.image import ImageTokenizer

    return ImageTokenizer.from_llamagen(CKPT / "model.pt", config_path=CKPT / "config.json")


def decode_only(path) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))


def streaming(path, tokenizer, fps, size, batch) -> int:
    from mmtok.video import VideoTokenizer

    tokens = VideoTokenizer(tokenizer, fps=fps, size=size, batch_size=batch).encode(path, audio=False)
    return len(tokens)


def naive(path, tokenizer, fps, size, batch) -> int:
    """Decode everything to RGB first, keep it all, then pick frames and tokenize through PIL."""
    with av.open(str(path)) as container:
        frames = [(f.time, f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    if fps is None:
        chosen = [rgb for _, rgb in frames]
    else:
        chosen, next_time = [], 0.0
        for t, rgb in frames:
            if t + 1e-9 >= next_time:
                chosen.append(rgb)
                next_time += 1.0 / fps
    from PIL import Image

    count = 0
    with torch.inference_mode():
        for i in range(0, len(chosen), batch):
            images = [Image.fromarray(rgb) for rgb in chosen[i: i + batch]]
            count += len(tokenizer.encode(images, size=size, mode="center_crop"))
    return count


def timed(fn, repeats) -> tuple[float, int]:
    """Median seconds over `repeats` runs after one untimed warm-up (first-call imports, allocator)."""
    fn()
    times, count = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        count = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), count


def peak_rss_child(mode: str, path, fps, size, batch) -> float:
    """Peak RSS (MiB) of a fresh process that tokenizes `path` with `mode`."""
    cmd = [sys.executable, __file__, "--child", mode, str(path), str(fps), str(size), str(batch)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return float(out.stdout.strip().splitlines()[-1])


def child(mode, path, fps, size, batch) -> None:
    fps = None if fps == "None" else float(fps)
    tokenizer = load_image_tokenizer()
    (streaming if mode == "streaming" else naive)(path, tokenizer, fps, int(size), int(batch))
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="video length for the throughput runs")
    parser.add_argument("--long-seconds", type=float, default=40.0, help="second length for the memory check")
    parser.add_argument("--size", type=int, default=128, help="tokenizer input size (grid = size / 4)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="3 s and 6 s of video, size 64, 3 repeats")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.quick:
        args.seconds, args.long_seconds, args.size, args.repeats = 3.0, 6.0, 64, 3

    tokenizer = load_image_tokenizer()
    rows, results = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        short = write_video(pathlib.Path(tmp) / "short.mp4", args.seconds)
        long = write_video(pathlib.Path(tmp) / "long.mp4", args.long_seconds)
        total = int(args.seconds * FPS)
        base_time, _ = timed(lambda: decode_only(short), args.repeats)
        rows.append(("decode only (all frames)", None, total, base_time))
        for fps in (1.0, None):
            label = "1 fps" if fps else "full rate"
            for name, fn in (("mmtok streaming", streaming), ("naive decode-all", naive)):
                seconds, sampled = timed(lambda: fn(short, tokenizer, fps, args.size, args.batch), args.repeats)
                rows.append((f"{name}, {label}", fps, sampled, seconds))
        memory = {}
        for mode in ("streaming", "naive"):
            memory[mode] = [peak_rss_child(mode, p, 1.0, args.size, args.batch) for p in (short, long)]

    naive_by_label = {r[0].split(", ")[1]: r[3] for r in rows if r[0].startswith("naive")}
    print(f"\n720p{FPS} H.264, {args.seconds:g} s ({total} frames), tokenizer input {args.size}x{args.size}, "
          f"batch {args.batch}, torch threads {torch.get_num_threads()}, median of {args.repeats}")
    print(f"{'path':34s} {'sampled':>8s} {'time s':>8s} {'video fr/s':>11s} {'tok fr/s':>9s} {'x naive':>8s}")
    for label, fps, sampled, seconds in rows:
        kind = label.split(", ")[-1]
        ratio = f"{naive_by_label[kind] / seconds:8.2f}" if kind in naive_by_label else f"{'':8s}"
        tok = f"{sampled / seconds:9.2f}" if "decode only" not in label else f"{'':9s}"
        print(f"{label:34s} {sampled:8d} {seconds:8.2f} {total / seconds:11.1f} {tok} {ratio}")
        results[label] = {"sampled_frames": sampled, "seconds": seconds, "video_frames_per_s": total / seconds,
                          "sampled_frames_per_s": sampled / seconds}
    print(f"\npeak RSS at 1 fps (MiB): {'':10s} {args.seconds:g} s video   {args.long_seconds:g} s video   growth")
    for mode, (a, b) in memory.items():
        print(f"  {mode:28s} {a:12.0f} {b:14.0f} {b - a:+10.0f}")
    results["peak_rss_mib"] = {m: dict(zip([args.seconds, args.long_seconds], v)) for m, v in memory.items()}
    results["setup"] = {"width": WIDTH, "height": HEIGHT, "fps": FPS, "seconds": args.seconds, "size": args.size,
                        "batch": args.batch, "repeats": args.repeats, "torch_threads": torch.get_num_threads(),
                        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count()}
    out = ROOT / "benchmarks/results/video_tokenizer.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
