"""Training-step time and peak memory of mmtok's quantizer families against vector-quantize-pytorch.

One training step = forward (quantize, loss) + backward, on random inputs, in training mode:
- FSQ levels [8, 5, 5, 5] with 256-channel projections, 16 x 1024 positions (vs vector_quantize_pytorch.FSQ);
- LFQ 18 bits, entropy loss on (weight 0.1), 4 x 16 x 16 positions (vs vector_quantize_pytorch.LFQ);
- IBQ 131,072 codes x 256, 1024 positions (vs the dense upstream formula: one-hot straight-through on the
  softmax, as SEED-Voken / Emu3.5 write it; vector-quantize-pytorch has no IBQ);
- ResidualVQ 8 levels x 1024 codes x 128, 8192 positions (vs vector_quantize_pytorch.ResidualVQ).
Each (quantizer, implementation) runs in a fresh subprocess: the first step is the cold figure, the median of
the next ones the warm figure, and the peak RSS growth over the process's baseline (after the inputs exist) is
the memory figure. Prints a table and writes benchmarks/results/quantizer_families.json. Needs the `bench` extra; also run by
benchmarks/quantizers.py (after its VectorQuantizer / BEST-RQ rows).

    python benchmarks/quantizer_families.py [--repeats 5] [--only fsq,lfq]
"""
from __future__ import annotations

import argparse
import json
import pathlib
import resource
import statistics
import subprocess
import sys
import time

RESULTS = pathlib.Path(__file__).parent / "results" / "quantizer_families.json"
CASES = ("fsq", "lfq", "ibq", "rvq")


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(case: str, impl: str):
    """(module, input, step) for one case: step() runs forward + backward once."""
    import torch

    torch.manual_seed(0)
    if case == "fsq":
        z = torch.randn(16, 1024, 256, requires_grad=True)
        if impl == "mmtok":
            from mmtok.quantize import FSQ
            q = FSQ([8, 5, 5, 5], dim=256).train()
            return lambda: (q(z).quantized.square().mean()).backward()
        from vector_quantize_pytorch import FSQ as VFSQ
        q = VFSQ(levels=[8, 5, 5, 5], dim=256).train()
        return lambda: (q(z)[0].square().mean()).backward()
    if case == "lfq":
        z = torch.randn(4, 18, 16, 16, requires_grad=True)
        if impl == "mmtok":
            from mmtok.quantize import LFQ
            q = LFQ(18, entropy_weight=0.1, channel_dim=1).train()

            def step():
                out = q(z)
                (out.loss + out.quantized.square().mean()).backward()
            return step
        from vector_quantize_pytorch import LFQ as VLFQ
        q = VLFQ(dim=18, codebook_size=2**18, entropy_loss_weight=0.1).train()

        def step():
            quantized, _, aux = q(z)
            (aux + quantized.square().mean()).backward()
        return step
    if case == "ibq":
        z = torch.randn(1024, 256, requires_grad=True)
        if impl == "mmtok":
            from mmtok.quantize import IBQ
            q = IBQ(131072, 256).train()

            def step():
                out = q(z)
                (out.loss + out.quantized.square().mean()).backward()
            return step
        codebook = torch.nn.Parameter(torch.empty(131072, 256).uniform_(-1 / 131072, 1 / 131072))

        def step():
            logits = z @ codebook.t()
            soft = torch.softmax(logits, dim=-1)
            index = soft.max(-1, keepdim=True)[1]
            hard = torch.zeros_like(logits).scatter_(-1, index, 1.0)
            one_hot = hard - soft.detach() + soft
            zq = one_hot @ codebook
            zq2 = hard @ codebook
            loss = ((zq - z) ** 2).mean() + ((zq2.detach() - z) ** 2).mean() + 0.25 * ((zq2 - z.detach()) ** 2).mean()
            (loss + zq.square().mean()).backward()
        return step
    if case == "rvq":
        z = torch.randn(8, 1024, 128, requires_grad=True)
        if impl == "mmtok":
            from mmtok.quantize import ResidualVQ
            q = ResidualVQ(8, 1024, 128).train()

            def step():
                out = q(z)
                (out.loss + out.quantized.square().mean()).backward()
            return step
        from vector_quantize_pytorch import ResidualVQ as VRVQ
        q = VRVQ(dim=128, codebook_size=1024, num_quantizers=8, learnable_codebook=True, ema_update=False).train()

        def step():
            quantized, _, commit = q(z)
            (commit.sum() + quantized.square().mean()).backward()
        return step
    raise ValueError(case)


def run_one(case: str, impl: str, repeats: int) -> dict:
    import torch

    torch.set_num_threads(2)
    step = build(case, impl)
    base = _peak_mib()
    t0 = time.perf_counter()
    step()
    cold = time.perf_counter() - t0
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        warm.append(time.perf_counter() - t0)
    return {"cold_s": cold, "warm_s": statistics.median(warm), "peak_growth_mib": _peak_mib() - base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default=",".join(CASES))
    parser.add_argument("--one", nargs=2, metavar=("CASE", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(*args.one, args.repeats)))
        return
    from mmtok.ops import info

    rows = {}
    for case in args.only.split(","):
        for impl in ("mmtok", "baseline"):
            proc = subprocess.run([sys.executable, __file__, "--one", case, impl, "--repeats", str(args.repeats)],
                                  capture_output=True, text=True)
            if proc.returncode:
                rows[(case, impl)] = {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
            else:
                rows[(case, impl)] = json.loads(proc.stdout.strip().splitlines()[-1])
    baseline_name = {"fsq": "vq-pytorch FSQ", "lfq": "vq-pytorch LFQ", "ibq": "dense IBQ formula",
                     "rvq": "vq-pytorch ResidualVQ"}
    print(f"CPU: {info()['cpu_capability']}, 2 threads")
    print(f"| quantizer | baseline | mmtok warm | baseline warm | speed-up | mmtok cold | baseline cold | "
          f"mmtok peak | baseline peak | memory ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    out = []
    for case in args.only.split(","):
        m, b = rows[(case, "mmtok")], rows[(case, "baseline")]
        if "error" in m or "error" in b:
            print(f"| {case} | {baseline_name[case]} | {m.get('error', '')} | {b.get('error', '')} |")
            out.append({"case": case, "mmtok": m, "baseline": b})
            continue
        speed = b["warm_s"] / m["warm_s"]
        memory = m["peak_growth_mib"] / max(b["peak_growth_mib"], 1e-9)
        print(f"| {case} | {baseline_name[case]} | {m['warm_s'] * 1e3:.1f} ms | {b['warm_s'] * 1e3:.1f} ms | "
              f"{speed:.2f}x | {m['cold_s'] * 1e3:.1f} ms | {b['cold_s'] * 1e3:.1f} ms | "
              f"{m['peak_growth_mib']:.0f} MiB | {b['peak_growth_mib']:.0f} MiB | {memory:.2f} |")
        out.append({"case": case, "baseline_name": baseline_name[case], "mmtok": m, "baseline": b,
                    "speedup_warm": speed, "memory_ratio": memory})
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"cpu_capability": info()["cpu_capability"], "rows": out}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
