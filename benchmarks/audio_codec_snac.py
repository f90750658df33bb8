"""Benchmark: SNAC encode / decode speed (x real time) on CPU, mmtok's `SnacCodec` vs the `snac` package's own model.

The released 24 kHz configuration (hubertsiuzdak/snac_24khz: encoder_dim 48, rates [2, 4, 8, 8], decoder_dim 1024,
rates [8, 8, 4, 2], no attention, depthwise, noise, 3 levels of 4096 codes, strides [4, 2, 1]; 19.8 M parameters)
with random weights, saved in the Hub layout and loaded by both (`SNAC.from_pretrained(folder)`-equivalent and
`mmtok.load(folder)`), so they compute the same function. Same process, the models interleaved, median of
--repeats. Decoding is timed with the noise on for both (mmtok `noise_seed=`, upstream's global RNG seeded alike,
so the outputs are comparable) and for mmtok's deterministic default. Cold: the first call in a fresh process
(load included separately), warm: the median of the next two.

    python benchmarks/audio_codec.py --family snac            # 60 s of audio
    python benchmarks/audio_codec_snac.py --seconds 10        # the same, standalone; needs `pip install snac`
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import time
import types

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import cold_child, first_and_warm  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "audio_codec_snac.json"
SNAC_24KHZ = {"sampling_rate": 24000, "encoder_dim": 48, "encoder_rates": [2, 4, 8, 8], "decoder_dim": 1024,
              "decoder_rates": [8, 8, 4, 2], "attn_window_size": None, "codebook_size": 4096, "codebook_dim": 8,
              "vq_strides": [4, 2, 1], "noise": True, "depthwise": True}
RATE = SNAC_24KHZ["sampling_rate"]
SEED = 7


def _snac():
    sys.modules.setdefault("huggingface_hub", types.ModuleType("huggingface_hub"))  # imported by from_pretrained
    from snac import SNAC

    return SNAC


def save_release(folder: pathlib.Path) -> None:
    torch.manual_seed(0)
    model = _snac()(**SNAC_24KHZ).eval()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(SNAC_24KHZ, indent=2))
    torch.save(model.state_dict(), folder / "pytorch_model.bin")


def load_upstream(folder: pathlib.Path):
    model = _snac().from_config(str(folder / "config.json"))
    model.load_state_dict(torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True))
    return model.eval()


def load_mmtok(folder: pathlib.Path):
    import mmtok

    return mmtok.load(folder)


def speech_like(seconds: float, seed: int = 1) -> torch.Tensor:
    """Noise shaped by a slow random envelope (not silence, not stationary), in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    n = int(seconds * RATE)
    envelope = torch.rand(n // 2400 + 2, generator=gen).repeat_interleave(2400)[:n]
    return (torch.randn(n, generator=gen) * 0.2 * envelope).clamp(-1, 1)


def upstream_decode(model, levels):
    torch.manual_seed(SEED)
    return model.decode(levels)[0, 0]


def run_speed(folder: pathlib.Path, seconds: float, repeats: int) -> dict:
    upstream, codec = load_upstream(folder), load_mmtok(folder)
    audio = speech_like(seconds)
    with torch.no_grad():
        warm = speech_like(1.0)
        upstream.decode(upstream.encode(warm.view(1, 1, -1)))
        codec.decode(codec.encode(warm, RATE))
        codes = codec.encode(audio, RATE)
        levels = [lv.unsqueeze(0) for lv in codec.to_levels(codes)]
        tasks = {
            "encode upstream": lambda: upstream.encode(audio.view(1, 1, -1)),
            "encode mmtok": lambda: codec.encode(audio, RATE),
            "decode upstream": lambda: upstream_decode(upstream, levels),
            "decode mmtok": lambda: codec.decode(codes, noise_seed=SEED),
            "decode mmtok deterministic": lambda: codec.decode(codes),
        }
        times = {name: [] for name in tasks}
        out = {}
        for _ in range(repeats):
            for name, fn in tasks.items():
                start = time.perf_counter()
                result = fn()
                times[name].append(time.perf_counter() - start)
                out.setdefault(name, result)
    mine = codec.to_levels(out["encode mmtok"])
    agree = sum(int((a[0] == b).sum()) for a, b in zip(out["encode upstream"], mine)) / sum(b.numel() for b in mine)
    diff = float((out["decode mmtok"] - out["decode upstream"]).abs().max())
    print(f"sanity: codes agree {agree:.4%}, seeded-noise decode max |diff| {diff:.2e}")
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = {}
    for op, mine_key in (("encode", "encode mmtok"), ("decode", "decode mmtok"),
                         ("decode_deterministic", "decode mmtok deterministic")):
        base = med[f"{op.split('_')[0]} upstream"]
        rows[op] = {"upstream_s": base, "mmtok_s": med[mine_key], "upstream_xrt": seconds / base,
                    "mmtok_xrt": seconds / med[mine_key], "speedup": base / med[mine_key],
                    "all_runs_s": {"upstream": times[f"{op.split('_')[0]} upstream"], "mmtok": times[mine_key]}}
    return {"seconds": seconds, "repeats": repeats, "codes_agree": agree, "decode_max_abs_diff": diff, **rows}


def cold_round_trip_child(kind: str, folder: pathlib.Path, seconds: float) -> None:
    """In a fresh process: load, then the first encode + decode (cold) and the median of the next two (warm)."""
    start = time.perf_counter()
    model = load_mmtok(folder) if kind == "mmtok" else load_upstream(folder)
    load_s = time.perf_counter() - start
    audio = speech_like(seconds)

    def round_trip():
        with torch.no_grad():
            if kind == "mmtok":
                return model.decode(model.encode(audio, RATE), noise_seed=SEED)
            return upstream_decode(model, model.encode(audio.view(1, 1, -1)))

    print(json.dumps({"load_s": load_s, **first_and_warm(round_trip, warm_repeats=2)}))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="audio length (default 60)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-cold", action="store_true", help="skip the fresh-process (cold) round trips")
    parser.add_argument("--cold-child", choices=["mmtok", "upstream"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=pathlib.Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cold_child:
        cold_round_trip_child(args.cold_child, args.folder, args.seconds)
        return
    try:
        _snac()
    except ImportError:
        print("the `snac` package is not installed (pip install snac==1.2.1, the `bench` extra): nothing to compare")
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; SNAC 24 kHz release config, random weights")
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp) / "snac_24khz"
        save_release(folder)
        speed = run_speed(folder, args.seconds, args.repeats)
        print(f"\n{args.seconds:g} s of 24 kHz audio, median of {args.repeats} (x real time = audio s / wall s)")
        print(f"{'op':<22}{'upstream s':>12}{'mmtok s':>10}{'upstream xRT':>14}{'mmtok xRT':>11}{'speedup':>9}")
        for op in ("encode", "decode", "decode_deterministic"):
            r = speed[op]
            print(f"{op:<22}{r['upstream_s']:>12.2f}{r['mmtok_s']:>10.2f}{r['upstream_xrt']:>14.2f}"
                  f"{r['mmtok_xrt']:>11.2f}{r['speedup']:>8.2f}x")
        cold = {} if args.no_cold else {
            kind: cold_child(__file__, [kind, "--folder", str(folder), "--seconds", str(args.seconds)])
            for kind in ("mmtok", "upstream")}
    if cold:
        print(f"\nfresh process: load, first encode + decode (cold), median of the next two (warm), "
              f"{args.seconds:g} s")
        print(f"{'model':<10}{'load s':>8}{'cold s':>9}{'warm s':>9}{'cold/warm':>11}")
        for kind, r in cold.items():
            if "error" in r:
                print(f"{kind:<10} error: {r['error']}")
                continue
            print(f"{kind:<10}{r['load_s']:>8.2f}{r['cold_s']:>9.2f}{r['warm_s']:>9.2f}{r['cold_over_warm']:>10.2f}x")
        if all("error" not in r for r in cold.values()):
            print(f"cold round trip speedup {cold['upstream']['cold_s'] / cold['mmtok']['cold_s']:.2f}x, "
                  f"warm {cold['upstream']['warm_s'] / cold['mmtok']['warm_s']:.2f}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"threads": torch.get_num_threads(), "config": SNAC_24KHZ, "speed": speed,
                                   "cold_warm": cold}, indent=2))
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
