"""Emu3 VQ-VAE throughput and memory: mmtok (fp32 / bf16) vs `transformers`' own `Emu3VQVAE`, same weights.

The released configuration (`Emu3VQVAEConfig()`: 256 base channels, multipliers [1, 2, 2, 4], attention at the last
level, 32768 codes, temporal factor 4) with random weights (seed 0), written once with `save_pretrained` into a
temporary folder; upstream reads it with `Emu3VQVAE.from_pretrained`, mmtok with `mmtok.load`. Tasks:

    image encode / decode   --image-size px images (upstream encodes an image as 4 copies of the frame)  images/s
    video encode / decode   --frames frames at --video-size px                                            frames/s
    stream memory           mmtok encode_stream (4-frame chunks) vs upstream one pass, for --stream-frames

Every (implementation, task) runs in a fresh process: "cold" is its first call (weights loaded, nothing run yet),
"warm" the median of the next --repeats calls; "peak MiB" is the highest resident memory above the level before
the call, sampled every 2 ms. The script checks that mmtok's codes equal upstream's (fp32: all of them; bf16: the
fraction is reported) and that the decoded pixels agree, then prints the table and writes
benchmarks/results/emu3_tokenizer.json.

    python benchmarks/emu3_tokenizer.py                 # 512 px images, 16 frames at 256 px (slow on 2 cores)
    python benchmarks/emu3_tokenizer.py --quick         # 128 px images, 4 frames at 128 px, 1 repeat
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
from _common import machine, print_table, write_json  # noqa: E402

IMPLS = ("transformers", "mmtok-fp32", "mmtok-bf16")
TASKS = ("image-encode", "image-decode", "video-encode", "video-decode")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakMemory:
    """Highest resident memory (MiB) above the level at entry, sampled by a thread while the block runs."""

    def __enter__(self):
        self.base, self.peak, self._stop = rss_mb(), 0.0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb() - self.base)
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb() - self.base)


# ------------------------------------------------------------------------------------------------ child side
def inputs(task: str, args) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    if task == "image-encode":
        return torch.rand((args.batch, 3, args.image_size, args.image_size), generator=gen) * 2 - 1
    if task == "video-encode" or task.startswith("stream"):
        frames = args.frames if task == "video-encode" else int(task.split(":")[1])
        return torch.rand((1, frames, 3, args.video_size, args.video_size), generator=gen) * 2 - 1
    f, size = 8, (args.image_size if task == "image-decode" else args.video_size)
    shape = (args.batch, size // f, size // f) if task == "image-decode" else (1, args.frames // 4, size // f, size // f)
    return torch.randint(0, 32768, shape, generator=gen)


def runner(impl: str, task: str, model_dir: str):
    """fn() doing the task once, for this implementation."""
    if impl == "transformers":
        from transformers import Emu3VQVAE

        model = Emu3VQVAE.from_pretrained(model_dir).eval()
        if task.endswith("encode") or task.startswith("stream"):
            def encode(x):
                sizes = torch.tensor([list(x.shape[-2:])] * x.shape[0])
                return torch.stack(model.encode(x, image_sizes=sizes).image_tokens)
            return encode
        return model.decode
    import mmtok

    tok = mmtok.load(model_dir, dtype=torch.bfloat16 if impl.endswith("bf16") else torch.float32)
    if task.startswith("stream"):
        return lambda x: torch.cat(list(tok.encode_stream(x.split(4, dim=1))), dim=1)
    return {"image-encode": tok.encode_images, "image-decode": lambda c: tok.decode_images(c, clamp=False),
            "video-encode": tok.encode, "video-decode": lambda c: tok.decode(c, clamp=False)}[task]


def child(impl: str, task: str, model_dir: str, out_path: str, args) -> None:
    torch.set_num_threads(args.threads)
    fn = runner(impl, task, model_dir)
    x = inputs(task, args)
    with torch.inference_mode():
        with PeakMemory() as memory:
            t0 = time.perf_counter()
            out = fn(x)
            cold = time.perf_counter() - t0
        times = []
        for _ in range(args.repeats if not task.startswith("stream") else 0):
            t0 = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t0)
    np.save(out_path, out.float().numpy() if out.is_floating_point() else out.numpy())
    print(json.dumps({"cold_s": cold, "warm_s": float(np.median(times)) if times else None,
                      "peak_mb": memory.peak}))


# ----------------------------------------------------------------------------------------------- parent side
def run_child(impl, task, model_dir, out_path, args) -> dict:
    command = [sys.executable, __file__, "--child", impl, task, model_dir, out_path, *args.forward]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode:
        raise SystemExit(f"{impl} {task} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--video-size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1, help="images per image call")
    parser.add_argument("--repeats", type=int, default=2, help="warm calls (median)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--stream-frames", default="8,16,32", help="video lengths of the memory check")
    parser.add_argument("--stream-size", type=int, default=64, help="frame size of the memory check")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--quick", action="store_true",
                        help="128 px images, 4 frames at 128 px, memory check at 32 px, 1 repeat")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.image_size, args.video_size, args.frames, args.repeats, args.stream_size = 128, 128, 4, 1, 32
    args.forward = ["--image-size", str(args.image_size), "--video-size", str(args.video_size), "--frames",
                    str(args.frames), "--batch", str(args.batch), "--repeats", str(args.repeats), "--threads",
                    str(args.threads)]
    if args.child:
        impl, task, model_dir, out_path = args.child
        if task.startswith("stream"):
            args.video_size = args.stream_size
        return child(impl, task, model_dir, out_path, args)

    from transformers import Emu3VQVAE, Emu3VQVAEConfig

    tasks = [t for t in args.tasks.split(",") if t]
    results, rows = {"args": {k: v for k, v in vars(args).items() if k not in ("child", "forward")}}, []
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        Emu3VQVAE(Emu3VQVAEConfig()).save_pretrained(f"{tmp}/model")
        for task in tasks:
            per = {}
            for impl in IMPLS:
                per[impl] = run_child(impl, task, f"{tmp}/model", f"{tmp}/{impl}-{task}.npy", args)
                per[impl]["output"] = np.load(f"{tmp}/{impl}-{task}.npy")
            ref = per["transformers"].pop("output")
            for impl in IMPLS[1:]:
                out = per[impl].pop("output")
                if task.endswith("encode"):
                    per[impl]["codes_equal"] = float((out == ref).mean())
                else:
                    per[impl]["max_abs_diff"] = float(np.abs(out - ref).max())
            items = args.batch if task.startswith("image") else args.frames
            unit = "images/s" if task.startswith("image") else "frames/s"
            base = per["transformers"]
            for impl in IMPLS:
                r = per[impl]
                r["warm_per_s"] = items / r["warm_s"]
                r["cold_per_s"] = items / r["cold_s"]
                r["speedup_warm"] = base["warm_s"] / r["warm_s"]
                r["speedup_cold"] = base["cold_s"] / r["cold_s"]
                check = r.get("codes_equal", r.get("max_abs_diff"))
                rows.append([task, impl, unit, r["cold_per_s"], r["warm_per_s"], r["speedup_cold"],
                             r["speedup_warm"], r["peak_mb"], check])
            results[task] = per
        stream = {}
        if args.stream_frames:
            for frames in [int(n) for n in args.stream_frames.split(",")]:
                task = f"stream:{frames}"
                for impl in ("transformers", "mmtok-fp32"):
                    forward = list(args.forward)
                    r = run_child(impl, task, f"{tmp}/model", f"{tmp}/{impl}-{task}.npy",
                                  argparse.Namespace(forward=forward + ["--stream-size", str(args.stream_size)]))
                    stream.setdefault(impl, {})[frames] = r["peak_mb"]
            results["stream_peak_mb"] = stream
    results["machine"] = machine()
    print(f"Emu3 VQ-VAE, released config, random weights; images {args.image_size} px x {args.batch}, video "
          f"{args.frames} frames at {args.video_size} px; {args.threads} threads")
    print_table(["task", "impl", "unit", "cold", "warm", "x cold", "x warm", "peak MiB", "codes eq / max|d|"], rows)
    if stream:
        print(f"\npeak MiB of a video encode at {args.stream_size} px by length (mmtok streamed in 4-frame chunks, "
              f"upstream one pass):")
        lengths = sorted(next(iter(stream.values())))
        print_table(["impl", *[f"{n} frames" for n in lengths]], [[impl, *[v[n] for n in lengths]]
                                                                    for impl, v in stream.items()])
    write_json("emu3_tokenizer", results)


if __name__ == "__main__":
    main()
