"""BEST-RQ audio tokenizer speed and memory: mmtok vs plain-torch versions of the same recipe.

Baselines (same log-mel with the relative floor and silence gate, normalisation, stacking and random
projection; they differ in how they
find the nearest code, as the open implementations do):
  torch-matmul   SpeechBrain style: full (tokens x 8192) cosine-similarity matrix, then argmax
  torch-l2       NeMo style: (tokens x 8192 x 16) difference tensor, squared and summed, then argmin
                 (7.9 GB for 10 minutes, so it is timed on a shorter clip and reported per second of audio)
mmtok variants: one-shot `encode` of the whole clip, and `encode_file(chunk_seconds=30)` (two streamed
passes, tokens identical to one-shot).

Speed: x real time (seconds of audio per second), median of repeats, in this process, torch's default
threads. Memory: peak RSS of a fresh subprocess per variant and clip length, minus its RSS before reading
the audio (so imports and the 8192-code tables are not counted); one-shot grows with the clip, streaming
must stay flat.

    python benchmarks/audio_tokenizer.py [--quick] [--minutes 10] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import soundfile
import torch

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _common import cold_child, first_and_warm, print_table, write_json  # noqa: E402

from mmtok.audio.io import load_audio  # noqa: E402
from mmtok.audio.tokenizer import AudioTokenizer  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPEECH = ROOT / "tests" / "data" / "audio" / "arctic_a0007.wav"


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Random pieces of the real speech clip at random gains plus faint noise: speech statistics, any length."""
    speech = load_audio(SPEECH).numpy()
    rng = np.random.default_rng(seed)
    total = int(seconds * 16000)
    out = np.empty(total, np.float32)
    filled = 0
    while filled < total:
        start = int(rng.integers(0, len(speech) - 8000))
        piece = speech[start: start + int(rng.integers(4000, 24000))] * rng.uniform(0.2, 1.0)
        n = min(len(piece), total - filled)
        out[filled: filled + n] = piece[:n]
        filled += n
    return out + 1e-3 * rng.standard_normal(total).astype(np.float32)


class PlainTorchBestRQ:
    """The recipe written the straightforward way: whole-clip tensors, distances materialised."""

    def __init__(self, tokenizer: AudioTokenizer, style: str):
        fb = tokenizer.frontend
        self.window, self.banks = fb.window, fb.mel_banks
        self.scale = fb.power_scale()
        self.floor, self.gate = tokenizer.relative_floor.floor, tokenizer.relative_floor.gate
        self.projection = tokenizer.quantizer.projection[0]
        self.codebook = tokenizer.quantizer.codebook[0]
        self.style = style

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.unfold(0, 400, 160).contiguous() * 32768.0
        frames = frames - frames.mean(dim=1, keepdim=True)
        frames = torch.cat([frames[:, :1] * 0.03, frames[:, 1:] - 0.97 * frames[:, :-1]], dim=1) * self.window
        power = torch.fft.rfft(frames, n=512).abs() ** 2
        # the relative floor: level = loudest 10 ms (DC removed), floor and silence gate relative to it
        hops = x[: x.shape[0] // 160 * 160].double().view(-1, 160)
        level = float((hops - hops.mean(dim=1, keepdim=True)).square().mean(dim=1).max())
        mel = ((power @ self.banks) / (level * self.scale)).clamp_min(self.floor).log()
        active = mel.amax(dim=1) >= torch.log(torch.tensor(self.gate))
        mel[~active] = torch.log(torch.tensor(self.floor))
        speech = mel[active] if bool(active.any()) else mel
        mel = (mel - speech.mean(0)) / (speech.std(0) + 1e-5)
        stacked = mel[: mel.shape[0] // 4 * 4].reshape(-1, 320)
        z = torch.nn.functional.normalize(stacked @ self.projection, dim=-1)
        codes = torch.nn.functional.normalize(self.codebook, dim=-1)
        if self.style == "torch-matmul":
            return (z @ codes.T).argmax(dim=-1)
        return ((z[:, None, :] - codes[None, :, :]) ** 2).sum(-1).argmin(dim=-1)


def run_variant(variant: str, path: str, tokenizer: AudioTokenizer):
    if variant == "mmtok":
        return tokenizer.encode(load_audio(path), 16000)[0]
    if variant == "mmtok-stream":
        return tokenizer.encode_file(path, chunk_seconds=30.0)[0]
    return PlainTorchBestRQ(tokenizer, variant).encode(load_audio(path))


def measure_memory(variant: str, seconds: float, workdir: pathlib.Path) -> dict:
    """Peak RSS of a fresh process running one variant on one clip length."""
    path = workdir / f"clip_{int(seconds)}s.wav"
    if not path.exists():
        soundfile.write(str(path), speech_like(seconds), 16000, subtype="FLOAT")
    command = [sys.executable, __file__, "--child", variant, str(path), "--threads", str(torch.get_num_threads())]
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_runs(fn, repeats: int, budget_s: float = 60.0) -> tuple[float, float]:
    """Median wall and median CPU seconds of fn() after one warm-up run (CPU time shows the work done
    even when other processes share the cores)."""
    fn()
    walls, cpus, start = [], [], time.perf_counter()
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
        if time.perf_counter() - start > budget_s:
            break
    return statistics.median(walls), statistics.median(cpus)


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM: unlike ru_maxrss it is not inherited across fork/exec)."""
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(variant: str, path: str) -> None:
    tokenizer = AudioTokenizer()
    tokenizer.encode(torch.from_numpy(speech_like(2.0)), 16000)  # warm up kernels and allocator
    before = peak_rss_mb()
    tokens = run_variant(variant, path, tokenizer)
    print(json.dumps({"before_mb": before, "peak_mb": peak_rss_mb(), "tokens": int(tokens.shape[-1])}))


def cold_warm_child(variant: str, path: str) -> None:
    """Run in a fresh process: the first call of one variant on the file (cold), then the median of the next
    three (warm). The tokenizer is built and the file written before the clock starts."""
    tokenizer = AudioTokenizer()
    print(json.dumps(first_and_warm(lambda: run_variant(variant, path, tokenizer), warm_repeats=3)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1-minute clip, fewer repeats and lengths")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--cold-child", nargs=2, metavar=("VARIANT", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return child(*args.child)
    if args.cold_child:
        return cold_warm_child(*args.cold_child)

    minutes = 1.0 if args.quick else args.minutes
    seconds = minutes * 60
    repeats = 3 if args.quick else 5
    tokenizer = AudioTokenizer()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="mmtok_audio_bench_"))
    clip = speech_like(seconds)
    path = workdir / "clip.wav"
    soundfile.write(str(path), clip, 16000, subtype="FLOAT")
    short_seconds = min(seconds, 60.0)
    short_path = workdir / "short.wav"
    soundfile.write(str(short_path), clip[: int(short_seconds * 16000)], 16000, subtype="FLOAT")
    print(f"clip: {seconds:.0f} s of speech-like audio, torch threads: {torch.get_num_threads()}")

    # speed
    reference = run_variant("mmtok", str(path), tokenizer)
    speed = {}
    for variant in ("mmtok", "mmtok-stream", "torch-matmul", "torch-l2"):
        use, dur = (short_path, short_seconds) if variant == "torch-l2" else (path, seconds)
        t, cpu = time_runs(lambda: run_variant(variant, str(use), tokenizer), repeats)
        tokens = run_variant(variant, str(use), tokenizer)
        agree = float((tokens == reference[: tokens.shape[0]]).double().mean())
        speed[variant] = {"seconds": t, "cpu_seconds": cpu, "audio_seconds": dur, "x_real_time": dur / t,
                          "x_real_time_per_cpu_second": dur / cpu, "agreement": agree}
    base = speed["mmtok"]["x_real_time"]
    print(f"\nspeed (x real time = seconds of audio per second of wall time; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores)")
    print_table(["variant", "audio s", "wall s", "x real time", "mmtok / variant", "cpu s", "x RT per cpu-s",
                 "same tokens"],
                [[v, r["audio_seconds"], r["seconds"], r["x_real_time"], base / r["x_real_time"], r["cpu_seconds"],
                  r["x_real_time_per_cpu_second"], f"{100 * r['agreement']:.2f}%"] for v, r in speed.items()])

    # cold (first call in a fresh process) and warm (median of the next three, same process)
    cold = {}
    for variant in ("mmtok", "mmtok-stream", "torch-matmul"):
        r = cold_child(__file__, [variant, str(path), "--threads", str(torch.get_num_threads())])
        cold[variant] = r
    print(f"\nfirst call in a fresh process (cold) vs warm, {seconds:.0f} s clip")
    print_table(["variant", "cold s", "warm s", "cold/warm", "cold x RT", "warm x RT", "cold cpu/warm cpu"],
                [[v, r.get("cold_s"), r.get("warm_s"), r.get("cold_over_warm"),
                  seconds / r["cold_s"] if "cold_s" in r else None, seconds / r["warm_s"] if "warm_s" in r else None,
                  r.get("cold_over_warm_cpu")] for v, r in cold.items()])

    # memory
    lengths = [30.0, 60.0, 120.0] if args.quick else [60.0, 300.0, 600.0, 1800.0]
    memory = []
    for variant in ("mmtok", "mmtok-stream", "torch-matmul", "torch-l2"):
        for length in lengths:
            if variant == "torch-l2" and length > 120:
                continue  # 2 x 13 MB per second of audio: 7.9 GB per copy at 10 minutes
            if variant == "torch-matmul" and length > 600:
                continue
            m = measure_memory(variant, length, workdir)
            if "error" not in m:
                m["extra_mb"] = m["peak_mb"] - m["before_mb"]
            memory.append({"variant": variant, "audio_seconds": length, **m})
    print("\npeak memory (fresh process per row; extra = peak RSS minus RSS before reading the audio)")
    print_table(["variant", "audio s", "tokens", "extra MiB", "peak RSS MiB", "error"],
                [[m["variant"], m["audio_seconds"], m.get("tokens"), m.get("extra_mb"), m.get("peak_mb"),
                  m.get("error")] for m in memory])
    write_json("audio_tokenizer", {"clip_seconds": seconds, "threads": torch.get_num_threads(),
                                   "load_average": os.getloadavg()[0], "speed": speed, "cold_warm": cold,
                                   "memory": memory})


if __name__ == "__main__":
    main()
