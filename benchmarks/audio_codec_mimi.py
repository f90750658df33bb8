"""Benchmark: Mimi encode / decode speed (x real time) on CPU, mmtok vs transformers' `MimiModel`, same weights.

The released configuration (`MimiConfig()` defaults = kyutai/mimi: 24 kHz, 12.5 Hz, 8-layer transformers with a
250-step window, 32 codebooks of 2048) with random weights (codebooks filled), saved by transformers and loaded by
`mmtok.load` from the same folder, so both compute the same function. Timings interleave the two models in one
process, median of --repeats; cold = the first encode + decode in a fresh process, warm = the median of the next two.
Streaming: mmtok's milliseconds per 80 ms frame, pushing 1920 samples to `stream_encoder` and one code frame to
`stream_decoder` (and transformers' own streaming encode, `use_streaming=True` with its caches, per frame).
Needs the `bench` extra (transformers==5.24.0).

    python benchmarks/audio_codec.py --family mimi              # 60 s of audio
    python benchmarks/audio_codec_mimi.py --seconds 10 --repeats 2
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import cold_child, first_and_warm  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "audio_codec_mimi.json"
SAMPLE_RATE = 24000


def build_models(folder: pathlib.Path, seed: int = 0):
    """transformers' MimiModel (released config, random weights, non-zero codebooks) and mmtok's load of its folder."""
    from transformers import MimiConfig, MimiModel

    import mmtok

    torch.manual_seed(seed)
    upstream = MimiModel(MimiConfig()).eval()
    with torch.no_grad():
        for name, buffer in upstream.named_buffers():
            if name.endswith("embed_sum"):
                buffer.normal_()
            elif name.endswith("cluster_usage"):
                buffer.uniform_(0.5, 2.0)
    upstream.save_pretrained(folder)
    return upstream, mmtok.load(folder)


def speech_like(seconds: float, seed: int = 1) -> torch.Tensor:
    """Noise shaped by a slow random envelope, (1, 1, samples) in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    n = int(seconds * SAMPLE_RATE)
    envelope = torch.rand(n // 2400 + 2, generator=gen).repeat_interleave(2400)[:n]
    return (torch.randn(n, generator=gen) * 0.2 * envelope).clamp(-1, 1).view(1, 1, -1)


def run_speed(upstream, codec, seconds: float, repeats: int, levels: int) -> dict:
    audio = speech_like(seconds)
    with torch.no_grad():
        warm = speech_like(1.0)
        upstream.decode(upstream.encode(warm, num_quantizers=levels).audio_codes)
        codec.decode_batch(codec.encode_batch(warm, num_quantizers=levels))
        codes = codec.encode_batch(audio, num_quantizers=levels)
        tasks = {
            "encode transformers": lambda: upstream.encode(audio, num_quantizers=levels).audio_codes,
            "encode mmtok": lambda: codec.encode_batch(audio, num_quantizers=levels),
            "decode transformers": lambda: upstream.decode(codes).audio_values,
            "decode mmtok": lambda: codec.decode_batch(codes),
        }
        times = {name: [] for name in tasks}
        out = {}
        for _ in range(repeats):
            for name, fn in tasks.items():
                start = time.perf_counter()
                result = fn()
                times[name].append(time.perf_counter() - start)
                out.setdefault(name, result)
    agree = (out["encode mmtok"] == out["encode transformers"]).float().mean().item()
    diff = (out["decode mmtok"] - out["decode transformers"]).abs().max().item()
    print(f"sanity: codes agree {agree:.4%}, decode max |diff| {diff:.2e} (decoded rms "
          f"{out['decode mmtok'].square().mean().sqrt().item():.3g})")
    rows = {}
    for op in ("encode", "decode"):
        base = statistics.median(times[f"{op} transformers"])
        mine = statistics.median(times[f"{op} mmtok"])
        rows[op] = {"transformers_s": base, "mmtok_s": mine, "transformers_xrt": seconds / base,
                    "mmtok_xrt": seconds / mine, "speedup": base / mine,
                    "all_runs_s": {"transformers": times[f"{op} transformers"], "mmtok": times[f"{op} mmtok"]}}
    return {"seconds": seconds, "repeats": repeats, "num_quantizers": levels, "codes_agree": agree,
            "decode_max_abs_diff": diff, **rows}


def run_streaming(upstream, codec, frames: int, levels: int, threads: int) -> dict:
    """Milliseconds per 80 ms frame: mmtok stream_encoder / stream_decoder, transformers' streaming encode, with
    `threads` intra-op threads (one frame's ops are small: extra threads mostly wait for each other)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _streaming(upstream, codec, frames, levels) | {"threads": threads}
    finally:
        torch.set_num_threads(before)


def _streaming(upstream, codec, frames: int, levels: int) -> dict:
    audio = speech_like(frames * codec.frame_size / SAMPLE_RATE, seed=2)
    size = codec.frame_size
    result = {}
    with torch.no_grad():
        stream = codec.stream_encoder(num_quantizers=levels)
        times, parts = [], []
        for i in range(frames):
            start = time.perf_counter()
            parts.append(stream.push(audio[..., i * size:(i + 1) * size]))
            times.append(time.perf_counter() - start)
        parts.append(stream.flush())
        codes = torch.cat(parts, dim=-1)
        one = codec.encode_batch(audio, num_quantizers=levels)
        result["mmtok_encode_ms_per_frame"] = 1000 * statistics.median(times[2:])
        result["mmtok_stream_codes_equal_one_pass"] = bool(torch.equal(codes, one))
        decoder = codec.stream_decoder()
        times = []
        for i in range(frames):
            start = time.perf_counter()
            decoder.push(codes[..., i:i + 1])
            times.append(time.perf_counter() - start)
        result["mmtok_decode_ms_per_frame"] = 1000 * statistics.median(times[2:])
        try:
            padding_cache, encoder_cache, times, parts = None, None, [], []
            for i in range(frames):
                start = time.perf_counter()
                out = upstream.encode(audio[..., i * size:(i + 1) * size], num_quantizers=levels,
                                      padding_cache=padding_cache, encoder_cache=encoder_cache, use_streaming=True)
                times.append(time.perf_counter() - start)
                padding_cache, encoder_cache = out.padding_cache, out.encoder_cache
                parts.append(out.audio_codes)
            result["transformers_encode_ms_per_frame"] = 1000 * statistics.median(times[2:])
            result["transformers_stream_codes_equal_one_pass"] = bool(torch.equal(torch.cat(parts, -1), one))
        except Exception as exc:  # report, do not fail the benchmark
            result["transformers_encode_error"] = f"{type(exc).__name__}: {exc}"
    result["frames"] = frames
    return result


def cold_round_trip_child(kind: str, seconds: float, levels: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        upstream, codec = build_models(pathlib.Path(tmp))
    audio = speech_like(seconds)

    def round_trip():
        with torch.no_grad():
            if kind == "mmtok":
                return codec.decode_batch(codec.encode_batch(audio, num_quantizers=levels))
            return upstream.decode(upstream.encode(audio, num_quantizers=levels).audio_codes).audio_values

    print(json.dumps(first_and_warm(round_trip, warm_repeats=2)))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-quantizers", type=int, default=32, help="levels encoded (32 = all, Moshi uses 8)")
    parser.add_argument("--stream-frames", type=int, default=50)
    parser.add_argument("--stream-threads", type=int, default=1, help="intra-op threads for the per-frame timing")
    parser.add_argument("--no-cold", action="store_true")
    parser.add_argument("--cold-child", choices=["mmtok", "transformers"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cold_child:
        cold_round_trip_child(args.cold_child, args.seconds, args.num_quantizers)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; released Mimi config, random weights")
    with tempfile.TemporaryDirectory() as tmp:
        upstream, codec = build_models(pathlib.Path(tmp))
    speed = run_speed(upstream, codec, args.seconds, args.repeats, args.num_quantizers)
    print(f"\n{args.seconds:g} s of audio, {args.num_quantizers} codebooks, median of {args.repeats} "
          f"(x real time = audio seconds / wall seconds)")
    print(f"{'op':<8}{'transformers s':>16}{'mmtok s':>10}{'transformers xRT':>18}{'mmtok xRT':>11}{'speedup':>9}")
    for op in ("encode", "decode"):
        r = speed[op]
        print(f"{op:<8}{r['transformers_s']:>16.2f}{r['mmtok_s']:>10.2f}{r['transformers_xrt']:>18.2f}"
              f"{r['mmtok_xrt']:>11.2f}{r['speedup']:>8.2f}x")
    streaming = run_streaming(upstream, codec, args.stream_frames, args.num_quantizers, args.stream_threads)
    print(f"\nstreaming, one 80 ms frame per call (median of {args.stream_frames - 2}, "
          f"{args.stream_threads} thread(s)):")
    for key, value in streaming.items():
        print(f"  {key}: {value:.2f}" if isinstance(value, float) else f"  {key}: {value}")
    cold = {} if args.no_cold else {
        kind: cold_child(__file__, [kind, "--seconds", str(args.seconds), "--num-quantizers",
                                    str(args.num_quantizers)]) for kind in ("mmtok", "transformers")}
    if cold:
        print(f"\nfirst call in a fresh process (cold) vs the median of the next two (warm), {args.seconds:g} s "
              f"encode + decode")
        print(f"{'model':<14}{'cold s':>9}{'warm s':>9}{'cold/warm':>11}")
        for kind, r in cold.items():
            if "error" in r:
                print(f"{kind:<14} error: {r['error']}")
                continue
            print(f"{kind:<14}{r['cold_s']:>9.2f}{r['warm_s']:>9.2f}{r['cold_over_warm']:>10.2f}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"threads": torch.get_num_threads(), "speed": speed, "streaming": streaming,
                                   "cold_warm": cold}, indent=2))
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
