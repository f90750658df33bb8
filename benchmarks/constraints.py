"""Constrained-generation overhead: microseconds per generated token for the constraint's mask update, against
one forward step of a ~100M-parameter decoder on the same CPU.

For vocabularies of ~16k, ~65k and ~150k ids (text ids + specials + 64 resolution tokens + 8192 image codes +
4x1024 codec codes) and batch 1 and 64, each step of the constraint is: advance every row's state by its id,
gather the (batch, vocab) forbidden mask from the cached table, and set those scores to -inf, on a stream of
32x32-grid images between text (rows at different places of the stream). The baseline is one KV-cached decode
step of a Llama-style model (hidden 768, 12 layers, MLP 2048, tied embeddings: 85M parameters plus the
embedding of that vocabulary) at the same batch, with a 64-token context, through `transformers`.
Cold: a fresh process builds the constraint and runs its first step (the masks are built lazily there). Warm:
the median step in a long run. Also the memory of the cached masks.

Prints a table and writes benchmarks/results/constraints.json.
Usage: python benchmarks/constraints.py [--quick] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _common  # noqa: E402

from mmtok.stream import Vocabulary  # noqa: E402
from mmtok.stream.constraints import Constraint  # noqa: E402

SIZES = {"16k": 16_384, "65k": 65_536, "150k": 151_936}
IMAGE_CODES, CODEC = 8192, (4, 1024)


class CountTokenizer:
    """A stand-in text tokenizer of a given size (the constraint only needs the size)."""

    def __init__(self, size: int):
        self.size = size

    def encode(self, text: str) -> list[int]:
        return [ord(c) % self.size for c in text]

    def decode(self, ids) -> str:
        return "".join(chr(65 + i % 26) for i in ids)


def vocabulary(total: int) -> Vocabulary:
    base = Vocabulary(image_codes=IMAGE_CODES, audio_codec=CODEC, max_grid=64)
    text = total - (base.size - 256)
    return Vocabulary(CountTokenizer(text), image_codes=IMAGE_CODES, audio_codec=CODEC, max_grid=64)


def trajectory(vocab: Vocabulary, length: int, seed: int = 0) -> list[int]:
    """Text, then 32x32 images, then text ...: a plausible generated stream (ids the constraint allows)."""
    rng = np.random.default_rng(seed)
    image = vocab.ranges["image"][0]
    ids = []
    while len(ids) < length:
        ids += rng.integers(0, vocab.text.size, 20).tolist()
        ids += [vocab.special("image_begin"), vocab.resolution_token(32), vocab.resolution_token(32)]
        for _ in range(32):
            ids += (image.offset + rng.integers(0, image.size, 32)).tolist() + [vocab.special("end_of_row")]
        ids.append(vocab.special("image_end"))
    return ids


def constraint_steps(size: int, batch: int, steps: int) -> dict:
    vocab = vocabulary(size)
    t0 = time.perf_counter()
    constraint = Constraint(vocab)
    build = time.perf_counter() - t0
    stream = trajectory(vocab, steps + 2000)
    offsets = [(r * 397) % 1100 for r in range(batch)]
    rows = constraint.batch([[]] * batch)
    for row, start in zip(rows.states, offsets):
        row.extend(stream[:start])
    scores = torch.randn(batch, vocab.size)
    times = []
    for t in range(steps):
        tokens = [stream[start + t] for start in offsets]
        t1 = time.perf_counter()
        rows.apply(scores)
        rows.advance(tokens)
        times.append(time.perf_counter() - t1)
    return {"vocab": vocab.size, "build_s": build, "first_step_s": times[0],
            "warm_step_s": float(np.median(times[len(times) // 10:])), "mask_rows": constraint.cached_masks,
            "mask_bytes": constraint.mask_bytes}


def model_step(size: int, batch: int, repeats: int) -> tuple[float, int]:
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=size, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                                      num_attention_heads=12, num_key_value_heads=12, tie_word_embeddings=True,
                                      max_position_embeddings=256)
    model = transformers.LlamaForCausalLM(config).eval()
    params = sum(p.numel() for p in model.parameters())
    context = torch.randint(0, size, (batch, 64))
    with torch.no_grad():
        out = model(context, use_cache=True)
        cache = out.cache
        step = torch.randint(0, size, (batch, 1))

        def one():
            model(step, cache=cache, use_cache=True)
            cache.crop(-1)  # back to the 64-token context

        seconds = _common.median_seconds(one, repeats=repeats, warmup=1, budget_s=60)
    return seconds, params


def cold(size: int, batch: int, threads: int) -> float:
    """Constraint build plus its first step, in a fresh process."""
    code = ("import sys, json, time; t=time.perf_counter(); sys.path.insert(0, 'benchmarks'); import torch;"
            f" torch.set_num_threads({threads}); import constraints as c; r = c.constraint_steps({size}, {batch}, 1);"
            " print(json.dumps(r['build_s'] + r['first_step_s']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=pathlib.Path(__file__).parent.parent)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both sides (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps, repeats = (300, 2) if args.quick else (3000, 5)
    rows, results = [], []
    for name, size in SIZES.items():
        for batch in (1, 64):
            warm = constraint_steps(size, batch, steps)
            cold_s = cold(size, batch, args.threads)
            step_s, params = model_step(size, batch, repeats)
            percent = 100 * warm["warm_step_s"] / step_s
            result = {"vocab_name": name, "batch": batch, **warm, "cold_first_step_s": cold_s,
                      "model_step_s": step_s, "model_params": params, "overhead_percent": percent,
                      "us_per_token": 1e6 * warm["warm_step_s"] / batch}
            results.append(result)
            rows.append([name, warm["vocab"], batch, 1e6 * warm["warm_step_s"], result["us_per_token"],
                         1e3 * cold_s, 1e3 * step_s, f"{params / 1e6:.0f}M", f"{percent:.3f}%",
                         warm["mask_rows"], f"{warm['mask_bytes'] / 2**20:.2f}"])
            print(json.dumps(result))
    _common.print_table(["vocab", "ids", "batch", "warm step us", "us/token", "cold first ms", "model step ms",
                         "params", "constraint/step", "masks", "mask MiB"], rows)
    _common.write_json("constraints", {"threads": args.threads, "steps": steps, "results": results})


if __name__ == "__main__":
    main()
