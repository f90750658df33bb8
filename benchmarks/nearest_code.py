"""Nearest-code lookup speed: every mmtok backend vs torch cdist+argmin, torch chunked addmm+argmin,
faiss-cpu (k=1: IndexFlatL2 for l2, IndexFlatIP for dot, IndexFlatIP on l2-normalised copies for cosine, the
normalisation of the queries timed with it) and the GEMM alone (torch.mm over the same FLOPs, no argmin: the
ceiling a GEMM-based lookup cannot beat). For every metric (l2, cosine, dot; dot also at IBQ's K = 131,072,
D = 256) and every CPU instruction set the machine has. Each instruction set runs in its own process that
emulates a machine with only that set for every library in the comparison, not only mmtok: AVX2 means
MMTOK_CPU_CAPABILITY=avx2 (mmtok's kernel), FAISS_SIMD_LEVEL=AVX2 (faiss' AVX2 code), OPENBLAS_CORETYPE=Haswell
(the OpenBLAS faiss ships, its AVX2 GEMM), MKL_ENABLE_INSTRUCTIONS=AVX2 and ATEN_CPU_CAPABILITY=avx2 (torch's
GEMM and kernels). On an AVX-512 machine, forcing only mmtok to AVX2 would pit it against faiss' AVX-512 GEMM,
which an AVX2-only machine does not have. Each row records the SIMD level faiss ran at. Same inputs, median of
repeats; prints a table of times, speed-ups and % of the GEMM throughput, and writes
benchmarks/results/nearest_code.json.

    python benchmarks/nearest_code.py [--quick] [--n 65536] [--metrics l2,cosine,dot] [--isa avx512,avx2]
                                      [--skip-memory]
"""
from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _common import median_seconds, print_table, write_json  # noqa: E402

import mmtok  # noqa: E402
from mmtok.ops import backends  # noqa: E402

SHAPES = [(1024, 256), (16384, 8), (8192, 16), (16384, 256)]
IBQ_SHAPE = (131072, 256)  # Emu3.5 / Apertus IBQ codebook (dot only)
IBQ_N = 8192
CHUNK_ELEMENTS = 1 << 24  # rows per chunk for the chunked baselines: 64 MiB of fp32 scores


def torch_cdist_argmin(x, c):
    return torch.cdist(x, c).argmin(dim=1)


def torch_chunked_addmm_argmin(x, c):
    bias = c.square().sum(1)
    rows = max(1, CHUNK_ELEMENTS // c.shape[0])
    out = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    for s in range(0, x.shape[0], rows):
        out[s : s + rows] = torch.addmm(bias, x[s : s + rows], c.T, alpha=-2).argmin(dim=1)
    return out


def gemm_alone(x, c):
    rows = max(1, CHUNK_ELEMENTS // c.shape[0])
    ct = c.T
    for s in range(0, x.shape[0], rows):
        torch.mm(x[s : s + rows], ct)


ISA_ENV = {  # a machine with only this instruction set, for every library in the comparison
    "avx2": {"MMTOK_CPU_CAPABILITY": "avx2", "FAISS_SIMD_LEVEL": "AVX2", "OPENBLAS_CORETYPE": "Haswell",
             "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
    "avx512": {"MMTOK_CPU_CAPABILITY": "avx512", "FAISS_SIMD_LEVEL": "AVX512"},
}


def faiss_build() -> str | None:
    """The SIMD level faiss runs at in this process (it dispatches at run time; FAISS_SIMD_LEVEL chooses)."""
    try:
        import faiss
    except Exception:
        return None
    try:
        return faiss.SIMDConfig.get_level_name()
    except AttributeError:  # older faiss: one build per level
        return faiss.get_compile_options()


def faiss_search(c, metric):
    """A function x -> faiss k=1 search for the metric (None without faiss)."""
    try:
        import faiss
    except Exception:
        return None
    import numpy as np

    book = c.numpy().copy()
    if metric == "cosine":
        faiss.normalize_L2(book)
    index = (faiss.IndexFlatL2 if metric == "l2" else faiss.IndexFlatIP)(c.shape[1])
    index.add(book)

    def search(xn):
        if metric == "cosine":
            xn = np.array(xn, copy=True)
            faiss.normalize_L2(xn)
        return index.search(xn, 1)

    return search


def bench_shape(n, k, d, device, dtype, quick, metric="l2", isa=None):
    g = torch.Generator(device="cpu").manual_seed(n + k + d)
    x = torch.randn(n, d, generator=g).to(device=device, dtype=dtype)
    c = torch.randn(k, d, generator=g).to(device=device, dtype=dtype)
    flops = 2.0 * n * k * d
    repeats = 3 if quick else 5
    row = {"N": n, "K": k, "D": d, "metric": metric, "isa": isa or "-", "dtype": str(dtype).replace("torch.", ""),
           "device": device.type, "ms": {}}
    ref = None
    for name in backends.BACKENDS:
        if backends.unavailable_reason(name, device) is not None or name == "torch":
            continue
        t = median_seconds(lambda: mmtok.nearest_code(x, c, metric=metric, backend=name), repeats=repeats, device=device)
        row["ms"][f"mmtok_{name}"] = t * 1e3
        idx = mmtok.nearest_code(x[:4096], c, metric=metric, backend=name)[0]
        ref = idx if ref is None else ref
        row.setdefault("agree_first_4096", {})[name] = float((idx == ref).float().mean())
    row["ms"]["mmtok_torch_reference"] = median_seconds(lambda: mmtok.nearest_code(x, c, metric=metric, backend="torch"), repeats=1 if quick else 3, device=device) * 1e3
    if metric == "l2":
        row["ms"]["torch_cdist_argmin"] = median_seconds(lambda: torch_cdist_argmin(x, c), repeats=1 if quick else 3, warmup=0 if quick else 1, device=device) * 1e3
        row["ms"]["torch_chunked_addmm_argmin"] = median_seconds(lambda: torch_chunked_addmm_argmin(x, c), repeats=repeats, device=device) * 1e3
    else:  # the dense baseline users write: mm + argmax (cosine: on normalised copies)
        norm = torch.nn.functional.normalize
        dense = (lambda: (x @ c.T).argmax(1)) if metric == "dot" else (lambda: (norm(x, dim=1) @ norm(c, dim=1).T).argmax(1))
        row["ms"]["torch_mm_argmax"] = median_seconds(dense, repeats=1 if quick else 3, device=device) * 1e3
    row["ms"]["gemm_alone"] = median_seconds(lambda: gemm_alone(x, c), repeats=repeats, device=device) * 1e3
    if device.type == "cpu" and dtype == torch.float32:
        search = faiss_search(c, metric)
        if search is not None:
            xn = x.numpy()
            row["ms"]["faiss_IndexFlat" + ("L2" if metric == "l2" else "IP")] = median_seconds(lambda: search(xn), repeats=repeats) * 1e3
    fastest = min(v for key, v in row["ms"].items() if key.startswith("mmtok_") and key != "mmtok_torch_reference")
    row["mmtok_best_ms"] = fastest
    row["speedup_vs"] = {key: v / fastest for key, v in row["ms"].items() if not key.startswith("mmtok_")}
    row["pct_of_gemm_throughput"] = 100.0 * row["ms"]["gemm_alone"] / fastest
    row["tflops"] = flops / (fastest / 1e3) / 1e12
    row["gemm_tflops"] = flops / (row["ms"]["gemm_alone"] / 1e3) / 1e12
    return row


def memory_probe(n: int, k: int, d: int) -> dict:
    """Peak RSS growth of one lookup at (n, k, d), measured in a fresh process."""
    code = (
        "import sys, torch, mmtok; sys.path.insert(0, 'benchmarks'); from _common import max_rss_mb;"
        f"x = torch.randn({n}, {d}); c = torch.randn({k}, {d}); mmtok.nearest_code(x[:10], c);"
        "before = max_rss_mb(); idx, dist = mmtok.nearest_code(x, c); after = max_rss_mb();"
        "print(before, after)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = map(float, out.stdout.split())
    return {"N": n, "K": k, "D": d, "peak_rss_growth_mb": after - before, "n_by_k_fp32_mb": n * k * 4 / 2**20}


def run_isa(isa, args) -> list[dict]:
    """This process's rows: every metric and shape with the C++ kernel at `isa` (None: no extension)."""
    from mmtok.ops import set_cpu_capability

    if isa is not None:
        set_cpu_capability(isa)
    shapes = SHAPES[1:3] if args.quick else SHAPES
    results = []
    for metric in args.metrics.split(","):
        cases = [(k, d, args.n) for k, d in shapes]
        if metric == "dot" and not args.quick:
            cases.append((*IBQ_SHAPE, IBQ_N))
        for k, d, n in cases:
            row = bench_shape(n, k, d, torch.device("cpu"), torch.float32, args.quick, metric, isa)
            row["faiss_build"] = faiss_build()
            row["isa_env"] = ISA_ENV.get(isa, {})
            results.append(row)
            print(f"done cpu {isa} {metric} N={n} K={k} D={d}: mmtok {row['mmtok_best_ms']:.1f} ms", flush=True)
    return results


def main(argv=None) -> int:
    import json
    import os
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=65536, help="rows on CPU (GPU uses 1M)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and only the two small-D shapes")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--metrics", default="l2,cosine,dot", help="comma-separated: l2, cosine, dot")
    parser.add_argument("--isa", default="avx512,avx2", help="CPU instruction sets, each in its own process "
                                                            "emulating it for every library (those present)")
    parser.add_argument("--isa-child", nargs=2, metavar=("ISA", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.isa_child:
        isa, out = args.isa_child
        pathlib.Path(out).write_text(json.dumps(run_isa(None if isa == "-" else isa, args)))
        return 0

    info = mmtok.info()
    print(info)
    from mmtok.ops import set_cpu_capability

    isas = [isa for isa in args.isa.split(",") if set_cpu_capability(isa) == isa]
    set_cpu_capability("")
    print(f"default CPU kernel: {info.get('cpu_capability')}; benchmarked: {isas or ['(no C++ extension)']}")
    results = []
    for isa in isas or ["-"]:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            env = {**os.environ, **ISA_ENV.get(isa, {})}
            child = [a for a in (argv if argv is not None else sys.argv[1:])]
            subprocess.run([sys.executable, __file__, *child, "--isa-child", isa, out.name], env=env, check=True)
            results += json.loads(pathlib.Path(out.name).read_text())
    if torch.cuda.is_available():
        for dtype in (torch.float32, torch.bfloat16):
            for metric in args.metrics.split(","):
                for k, d in (SHAPES[1:3] if args.quick else SHAPES):
                    results.append(bench_shape(1 << 20, k, d, torch.device("cuda"), dtype, args.quick, metric))

    columns = sorted({key for r in results for key in r["ms"]})
    keys = ["device", "isa", "metric", "dtype", "N", "K", "D"]
    print("\ntimes (ms, median)")
    print_table(keys + columns, [[r[k] for k in keys] + [r["ms"].get(c) for c in columns] for r in results])
    baselines = sorted({key for r in results for key in r["speedup_vs"]})
    print("\nspeed-up of the fastest mmtok backend over each baseline (x), % of GEMM-alone throughput, TFLOP/s")
    keys = ["device", "isa", "metric", "K", "D"]
    print_table(keys + [f"vs {b}" for b in baselines] + ["% of GEMM", "TFLOP/s", "GEMM TFLOP/s", "faiss build"],
                [[r[k] for k in keys] + [r["speedup_vs"].get(b) for b in baselines]
                 + [r["pct_of_gemm_throughput"], r["tflops"], r["gemm_tflops"], (r.get("faiss_build") or "-")[-12:]]
                 for r in results])
    memory = None
    if not args.skip_memory:
        memory = memory_probe(1_000_000, 16384, 8)
        print(f"\nmemory: N=1M K=16384 D=8 peak RSS growth {memory['peak_rss_growth_mb']:.0f} MiB "
              f"(an N x K fp32 matrix would be {memory['n_by_k_fp32_mb']:.0f} MiB)")
    write_json("nearest_code", {"results": results, "memory": memory})
    return 0


if __name__ == "__main__":
    sys.exit(main())
