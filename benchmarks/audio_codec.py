"""Benchmark: AudioCodec encode/decode speed (x real time) and peak memory on CPU, vs a DAC-style torch tree.

Real 16 kHz configuration (encoder_dim 64, rates [2,4,5,8], decoder_dim 1536, rates [8,5,4,2], 12 codebooks of
1024, dim 8) with random weights; the same state_dict is loaded into both models, so they compute the same
function. The baseline (`dac_baseline.py`) is one-shot with weight norm recomputed per call and a cdist lookup,
as DAC's code is; mmtok runs chunked with folded weights. Timings interleave the two models, same process,
median of --repeats. Peak memory (VmHWM of a fresh child process, reset after the model is built, so: weights + the run) is
measured for a long file through encode_file + decode_to_file, at two lengths to show it does not grow.

    python benchmarks/audio_codec.py            # 60 s timing, 10-minute file memory (slow on 2 cores)
    python benchmarks/audio_codec.py --quick    # 8 s timing, 1 vs 2 minute memory
    python benchmarks/audio_codec.py --family snac [--seconds 60]   # SNAC 24 kHz vs the snac package
    python benchmarks/audio_codec.py --family mimi [options of audio_codec_mimi.py]   # Mimi vs transformers
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import cold_child, first_and_warm  # noqa: E402
from dac_baseline import DACStyleCodec  # noqa: E402

from mmtok.audio.codec import AudioCodec  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "audio_codec.json"
SAMPLE_RATE = 16000


def build_models(seed: int = 0) -> tuple[DACStyleCodec, AudioCodec]:
    torch.manual_seed(seed)
    baseline = DACStyleCodec().eval()
    codec = AudioCodec()
    codec.load_state_dict(baseline.state_dict(), strict=True)  # identical key sets: the same architecture
    return baseline, codec.eval()


def speech_like(seconds: float, seed: int = 1) -> torch.Tensor:
    """Noise shaped by a slow random envelope (not silence, not stationary), in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    n = int(seconds * SAMPLE_RATE)
    envelope = torch.rand(n // 1600 + 2, generator=gen).repeat_interleave(1600)[:n]
    return (torch.randn(n, generator=gen) * 0.2 * envelope).clamp(-1, 1)


def time_interleaved(tasks: dict, repeats: int) -> tuple[dict[str, list[float]], dict]:
    """Run the tasks in turn, `repeats` rounds; returns the wall times and each task's first result."""
    times: dict[str, list[float]] = {name: [] for name in tasks}
    results = {}
    for _ in range(repeats):
        for name, fn in tasks.items():
            start = time.perf_counter()
            out = fn()
            times[name].append(time.perf_counter() - start)
            results.setdefault(name, out)
    return times, results


def run_speed(seconds: float, repeats: int) -> dict:
    baseline, codec = build_models()
    audio = speech_like(seconds)
    with torch.no_grad():
        codes = codec.encode(speech_like(1.0), SAMPLE_RATE)  # warm up (extension load, oneDNN init)
        codec.decode(codes)
        baseline.decode(baseline.encode(speech_like(1.0).view(1, 1, -1)))
        codes = codec.encode(audio, SAMPLE_RATE)
        times, out = time_interleaved({
            "encode dac-style": lambda: baseline.encode(audio.view(1, 1, -1))[0],
            "encode mmtok": lambda: codec.encode(audio, SAMPLE_RATE),
            "decode dac-style": lambda: baseline.decode(codes[None])[0, 0],
            "decode mmtok": lambda: codec.decode(codes),
        }, repeats)
    agree = (out["encode mmtok"] == out["encode dac-style"]).float().mean().item()
    diff = (out["decode mmtok"] - out["decode dac-style"]).abs().max().item()
    print(f"sanity: codes agree {agree:.4%}, decode max |diff| {diff:.2e}")
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = {}
    for op in ("encode", "decode"):
        base, mine = med[f"{op} dac-style"], med[f"{op} mmtok"]
        rows[op] = {"dac_style_s": base, "mmtok_s": mine, "dac_style_xrt": seconds / base,
                    "mmtok_xrt": seconds / mine, "speedup": base / mine,
                    "all_runs_s": {"dac_style": times[f"{op} dac-style"], "mmtok": times[f"{op} mmtok"]}}
    return {"seconds": seconds, "repeats": repeats, "codes_agree": agree, "decode_max_abs_diff": diff, **rows}


def _peak_rss_mib() -> float:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_rss() -> bool:
    """Restart the high-water mark (Linux: write 5 to /proc/self/clear_refs), so model building is not counted."""
    try:
        pathlib.Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_child(kind: str, seconds: float) -> None:
    """Run in a fresh process: one long-file round trip (or a baseline one-shot); print peak RSS in MiB."""
    import gc

    import soundfile

    torch.manual_seed(0)
    model = AudioCodec().eval() if kind == "mmtok" else DACStyleCodec().eval()
    audio = speech_like(seconds)
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "long.wav"
        soundfile.write(path, audio.numpy(), SAMPLE_RATE, subtype="PCM_16")
        del audio
        gc.collect()
        reset = _reset_peak_rss()
        before = _peak_rss_mib()
        if kind == "mmtok":
            codes = model.encode_file(path)
            model.decode_to_file(codes, pathlib.Path(tmp) / "back.wav")
        else:
            with torch.no_grad():
                wave = torch.from_numpy(soundfile.read(path, dtype="float32")[0])
                soundfile.write(pathlib.Path(tmp) / "back.wav",
                                model.decode(model.encode(wave.view(1, 1, -1)))[0, 0].numpy(), SAMPLE_RATE)
    peak = _peak_rss_mib()
    print(json.dumps({"peak_rss_mib": peak, "rss_before_mib": before, "peak_reset": reset}))


def cold_round_trip_child(kind: str, seconds: float) -> None:
    """Run in a fresh process: the first encode+decode round trip (cold) and the median of the next (warm)."""
    baseline, codec = build_models()
    audio = speech_like(seconds)

    def round_trip():
        with torch.no_grad():
            if kind == "mmtok":
                return codec.decode(codec.encode(audio, SAMPLE_RATE))
            return baseline.decode(baseline.encode(audio.view(1, 1, -1)))

    print(json.dumps(first_and_warm(round_trip, warm_repeats=2)))


def measure_memory(kind: str, seconds: float) -> dict:
    cmd = [sys.executable, __file__, "--memory-child", kind, "--seconds", str(seconds)]
    start = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return {**json.loads(out), "wall_s": time.perf_counter() - start, "audio_s": seconds}


def main() -> None:
    if "--family" in sys.argv:  # `--family snac|mimi [its options]`: audio_codec_snac.py / audio_codec_mimi.py
        i = sys.argv.index("--family")
        family = sys.argv[i + 1] if i + 1 < len(sys.argv) else ""
        if family != "dac":
            if family not in ("snac", "mimi"):
                sys.exit(f"--family must be dac, snac or mimi, got {family!r}")
            if family == "snac":
                from audio_codec_snac import main as family_main
            else:
                from audio_codec_mimi import main as family_main

            family_main(sys.argv[1:i] + sys.argv[i + 2:])
            return
        del sys.argv[i: i + 2]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 s timing, memory at 1 and 2 minutes")
    parser.add_argument("--seconds", type=float, default=None, help="audio length for timing (default 60)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--memory-minutes", type=float, nargs="+", default=None,
                        help="long-file lengths for the memory test (default 1 10)")
    parser.add_argument("--memory-child", choices=["mmtok", "dac-style"], help=argparse.SUPPRESS)
    parser.add_argument("--cold-child", choices=["mmtok", "dac-style"], help=argparse.SUPPRESS)
    parser.add_argument("--no-cold", action="store_true", help="skip the fresh-process (cold) round trips")
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.seconds)
        return
    if args.cold_child:
        cold_round_trip_child(args.cold_child, args.seconds)
        return
    seconds = args.seconds or (8.0 if args.quick else 60.0)
    repeats = args.repeats or (2 if args.quick else 3)
    minutes = args.memory_minutes or ([1.0, 2.0] if args.quick else [1.0, 10.0])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; real 16 kHz DAC config, random weights")

    speed = run_speed(seconds, repeats)
    print(f"\n{seconds:g} s of audio, median of {repeats} (x real time = audio seconds / wall seconds)")
    print(f"{'op':<8}{'dac-style s':>13}{'mmtok s':>10}{'dac-style xRT':>15}{'mmtok xRT':>11}{'speedup':>9}")
    for op in ("encode", "decode"):
        r = speed[op]
        print(f"{op:<8}{r['dac_style_s']:>13.2f}{r['mmtok_s']:>10.2f}{r['dac_style_xrt']:>15.2f}"
              f"{r['mmtok_xrt']:>11.2f}{r['speedup']:>8.2f}x")

    cold = {} if args.no_cold else {kind: cold_child(__file__, [kind, "--seconds", str(seconds)])
                                    for kind in ("mmtok", "dac-style")}
    if cold:
        print(f"\nfirst call in a fresh process (cold) vs the median of the next two (warm), {seconds:g} s "
              f"encode + decode")
        print(f"{'model':<12}{'cold s':>9}{'warm s':>9}{'cold/warm':>11}{'cold xRT':>10}{'warm xRT':>10}")
        for kind, r in cold.items():
            if "error" in r:
                print(f"{kind:<12} error: {r['error']}")
                continue
            print(f"{kind:<12}{r['cold_s']:>9.2f}{r['warm_s']:>9.2f}{r['cold_over_warm']:>10.2f}x"
                  f"{seconds / r['cold_s']:>10.2f}{seconds / r['warm_s']:>10.2f}")

    memory = {"mmtok": [measure_memory("mmtok", m * 60) for m in minutes],
              "dac-style": [measure_memory("dac-style", seconds)]}
    print("\npeak memory (peak RSS of a fresh process during the run; weights are in `before`)")
    print(f"{'model':<34}{'audio':>9}{'peak MiB':>10}{'before MiB':>12}")
    for m, r in zip(minutes, memory["mmtok"]):
        print(f"{'mmtok encode_file+decode_to_file':<34}{m:>7g} m{r['peak_rss_mib']:>10.0f}{r['rss_before_mib']:>12.0f}")
    r = memory["dac-style"][0]
    print(f"{'dac-style one-shot encode+decode':<34}{seconds:>7g} s{r['peak_rss_mib']:>10.0f}{r['rss_before_mib']:>12.0f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"threads": torch.get_num_threads(), "speed": speed, "cold_warm": cold,
                                   "memory": memory}, indent=2))
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
