"""First call vs warm calls of the per-file CLI commands, in a fresh process (issue: every tokenizer fast from
its first call).

A user runs one command on one file; what that costs beyond the interpreter and imports is the command's
first call. Each command runs in its own fresh process: `import mmtok.__main__` is timed on its own (the
fixed cost of any torch program), then `main(argv)` is called once (cold: tokenizer load, first encode, the
allocator and thread pool warming up) and three more times (warm, median). Commands and inputs:
  image-encode   8 photos-like 256x256 PNGs, the shipped default image tokenizer
  audio-tokens   10 minutes of speech-like audio (one 16 kHz wav), BEST-RQ seed 0
  codec-encode   60 s of the same audio, the 16 kHz DAC codec at its released size (random weights)
Prints a table and writes benchmarks/results/cli_first_call.json.

    python benchmarks/cli_first_call.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _common import first_and_warm, print_table, write_json  # noqa: E402

COMMANDS = ("image-encode", "audio-tokens", "codec-encode")


def prepare(folder: pathlib.Path, quick: bool) -> dict[str, list[str]]:
    """The inputs and argv of each command under `folder`."""
    import numpy as np
    import soundfile
    from PIL import Image

    from audio_tokenizer import speech_like
    from mmtok.audio.codec import AudioCodec

    rng = np.random.default_rng(0)
    images = []
    for n in range(8):  # smooth random fields: photo-like spectra, not white noise
        base = rng.standard_normal((3, 16, 16)).cumsum(1).cumsum(2)
        up = np.kron(base, np.ones((1, 16, 16)))
        pixels = ((up - up.min()) / (np.ptp(up) + 1e-9) * 255).astype(np.uint8).transpose(1, 2, 0)
        path = folder / f"img{n}.png"
        Image.fromarray(pixels).save(path)
        images.append(str(path))
    minutes = 1.0 if quick else 10.0
    speech = speech_like(minutes * 60)
    soundfile.write(folder / "speech.wav", speech, 16000)
    soundfile.write(folder / "speech60.wav", speech[: 60 * 16000], 16000)
    codec = folder / "dac16"
    AudioCodec().save_pretrained(codec)  # the released 16 kHz DAC configuration, random weights
    return {
        "image-encode": ["image-encode", *images, "--out", str(folder / "codes")],
        "audio-tokens": ["audio-tokens", str(folder / "speech.wav"), "--seed", "0", "--out", str(folder / "t.jsonl")],
        "codec-encode": ["codec-encode", str(folder / "speech60.wav"), "--codec", str(codec),
                         "--out", str(folder / "codec_codes")],
    }


def child(argv: list[str]) -> dict:
    """In a fresh process: import time, then the first and warm calls of main(argv)."""
    import contextlib
    import io

    start = time.perf_counter()
    from mmtok.__main__ import build_parser, main
    build_parser()  # imports every command's module: the same for every command, reported as startup
    imported = time.perf_counter() - start

    def call():
        with contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
        if code not in (0, None):
            raise SystemExit(f"{argv[0]} exited {code}")

    return {"import_s": imported, **first_and_warm(call, warm_repeats=3)}


def main() -> None:
    if sys.argv[1:2] == ["--cold-child"]:  # the command's own argv follows, options and all
        print(json.dumps(child(sys.argv[2:])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 minute of audio for audio-tokens")
    parser.add_argument("--only", default=",".join(COMMANDS))
    args = parser.parse_args()
    import subprocess

    rows, results = [], {}
    with tempfile.TemporaryDirectory(prefix="mmtok-cli-bench-") as tmp:
        argvs = prepare(pathlib.Path(tmp), args.quick)
        for name in args.only.split(","):
            out = subprocess.run([sys.executable, __file__, "--cold-child", *argvs[name]], capture_output=True,
                                 text=True, timeout=1800)
            if out.returncode != 0:
                results[name] = {"error": (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]}
                rows.append([name, "error", "", "", "", results[name]["error"][:60]])
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results[name] = r
            rows.append([name, f"{r['import_s']:.2f}", f"{r['cold_s']:.3f}", f"{r['warm_s']:.3f}",
                         f"{r['cold_over_warm']:.2f}", "ok" if r["cold_over_warm"] <= 1.5 else "> 1.5x"])
    print_table(["command", "startup s", "first call s", "warm s", "first / warm", "target <= 1.5x"], rows)
    write_json("cli_first_call", {"quick": args.quick, "commands": results})


if __name__ == "__main__":
    main()
