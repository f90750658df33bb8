"""Quantizer benchmark: a VQ training step against vector-quantize-pytorch, and BEST-RQ tokens per second.

1. VectorQuantizer training step (forward + backward + EMA update) vs vector_quantize_pytorch.VectorQuantize
   with the same configuration, at B*H*W = 8*32*32 vectors of dim 256 with 16384 codes, and with an 8-dim
   cosine lookup (dim 256 projected to 8, LlamaGen style). Also checks both pick the same indices on the same
   codebook (eval-mode lookups after copying the codebook and projections across).
2. RandomProjectionQuantizer tokens per second vs a plain-torch implementation of the same recipe (which builds
   the frames x codes similarity matrix).
3. The quantizer families (FSQ, LFQ, IBQ, ResidualVQ): training step time and peak memory, each in a fresh
   process (benchmarks/quantizer_families.py; skipped with --no-families).

Prints a table (median of repeats, ratios against the baselines) and writes benchmarks/results/quantizers.json.
Usage: python benchmarks/quantizers.py [--quick] [--repeats N]
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import warnings

import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _common  # noqa: E402

import mmtok
from mmtok import RandomProjectionQuantizer, VectorQuantizer

RESULTS = pathlib.Path(__file__).parent / "results" / "quantizers.json"


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    return _common.median_seconds(fn, repeats=repeats, warmup=warmup, budget_s=float("inf"))


def load_baseline():
    """vector_quantize_pytorch.VectorQuantize, or (None, reason) when it cannot be imported."""
    try:
        from vector_quantize_pytorch import VectorQuantize
    except Exception as exc:  # optional `bench` extra
        return None, f"{type(exc).__name__}: {exc}"
    return VectorQuantize, None


def make_pair(baseline_cls, dim: int, num_codes: int, code_dim: int | None, cosine: bool):
    """Our quantizer and the baseline with the same configuration and the same codebook/projections."""
    ours = VectorQuantizer(num_codes, dim, code_dim=code_dim, l2_normalize=cosine, ema_decay=0.99, beta=0.25)
    if baseline_cls is None:
        return ours, None
    theirs = baseline_cls(dim=dim, codebook_size=num_codes, codebook_dim=code_dim, use_cosine_sim=cosine,
                          decay=0.99, commitment_weight=0.25, kmeans_init=False, threshold_ema_dead_code=0)
    with torch.no_grad():
        ours.codebook.copy_(theirs._codebook.embed[0])
        ours.ema_embed_sum.copy_(theirs._codebook.embed_avg[0])
        ours.ema_cluster_size.copy_(theirs._codebook.cluster_size[0])
        if code_dim is not None:
            ours.in_proj.load_state_dict(theirs.project_in.state_dict())
            ours.out_proj.load_state_dict(theirs.project_out.state_dict())
    return ours, theirs


def training_step(module, z, is_ours: bool):
    def step():
        z.grad = None
        if is_ours:
            out = module(z)
            quantized, loss = out.quantized, out.loss
        else:
            quantized, _, loss = module(z)
            loss = loss.sum()
        (quantized.square().mean() + loss).backward()  # forward + backward; the EMA update runs inside forward
    return step


def float64_argmin(ours, rows: torch.Tensor) -> torch.Tensor:
    """Exact nearest code of some input rows, in float64 (projection and normalisation included)."""
    h = rows.double()
    if ours.in_proj is not None:
        h = F.linear(h, ours.in_proj.weight.double(), ours.in_proj.bias.double())
    if ours.l2_normalize:
        h = F.normalize(h, dim=-1)
    codes = ours.codes(torch.float64)
    return torch.cdist(h, codes).argmin(-1)


def index_agreement(ours, theirs, z) -> tuple[float, float | None]:
    """Fraction of equal indices on the same codebook, and on the rows where they differ, the fraction where
    mmtok's index is the float64 argmin (the baseline's fp32 cdist loses digits to cancellation)."""
    ours.eval(), theirs.eval()
    with torch.no_grad():
        mine = ours.lookup(z).reshape(-1)
        _, other, _ = theirs(z)
        other = other.reshape(-1)
        differ = mine != other
        exact = None
        if bool(differ.any()):
            exact = (float64_argmin(ours, z.detach().reshape(-1, z.shape[-1])[differ]) == mine[differ]).float().mean().item()
    ours.train(), theirs.train()
    return 1.0 - differ.float().mean().item(), exact


def bench_vq(baseline_cls, reason, repeats: int, quick: bool) -> list[dict]:
    rows = []
    cases = [("dim 256, 16384 codes", 256, None, False), ("dim 256 -> 8 cosine, 16384 codes", 256, 8, True)]
    for name, dim, code_dim, cosine in cases:
        torch.manual_seed(0)
        ours, theirs = make_pair(baseline_cls, dim, 16384, code_dim, cosine)
        z = torch.randn(8, 32 * 32, dim, requires_grad=True)  # (B, H*W, C): B*H*W = 8*32*32
        agreement, exact = index_agreement(ours, theirs, z) if theirs is not None else (None, None)
        t_ours = median_seconds(training_step(ours, z, True), repeats)
        t_theirs = median_seconds(training_step(theirs, z, False), repeats) if theirs is not None else None
        rows.append({
            "case": f"VQ train step, {name}", "vectors": z.shape[0] * z.shape[1],
            "mmtok_s": t_ours, "baseline": "vector-quantize-pytorch", "baseline_s": t_theirs,
            "speedup": (t_theirs / t_ours) if t_theirs else None, "same_indices": agreement,
            "mmtok_exact_where_different": exact, "baseline_skipped": reason,
        })
    return rows


def plain_torch_best_rq(x: torch.Tensor, projection: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """The BEST-RQ recipe as usually written: normalise(x A), similarity with every code, argmax."""
    projected = F.normalize(x @ projection[0], dim=-1)
    return (projected @ F.normalize(codebook[0], dim=-1).T).argmax(-1)


def bench_best_rq(repeats: int) -> list[dict]:
    torch.manual_seed(0)
    rpq = RandomProjectionQuantizer(320, code_dim=16, num_codes=8192, seed=0)  # 4 stacked 80-bin fbank frames
    x = torch.randn(8, 250, 320)  # 8 clips of 10 s at 25 frames/s
    frames = x.shape[0] * x.shape[1]
    agree = (rpq(x)[..., 0] == plain_torch_best_rq(x, rpq.projection, rpq.codebook)).float().mean().item()
    with torch.no_grad():
        t_ours = median_seconds(lambda: rpq(x), repeats)
        t_plain = median_seconds(lambda: plain_torch_best_rq(x, rpq.projection, rpq.codebook), repeats)
    return [{
        "case": "BEST-RQ tokens, 320 -> 16, 8192 codes", "vectors": frames, "mmtok_s": t_ours,
        "mmtok_tokens_per_s": frames / t_ours, "baseline": "plain torch", "baseline_s": t_plain,
        "baseline_tokens_per_s": frames / t_plain, "speedup": t_plain / t_ours, "same_indices": agree,
    }]


def print_table(rows: list[dict]) -> None:
    print(f"{'case':46s} {'N':>6s} {'mmtok ms':>10s} {'baseline':>24s} {'base ms':>10s} {'speedup':>8s} {'same idx':>9s}")
    for r in rows:
        base = f"{r['baseline_s'] * 1e3:10.1f}" if r["baseline_s"] else f"{'skipped':>10s}"
        speed = f"{r['speedup']:7.2f}x" if r["speedup"] else f"{'-':>8s}"
        same = f"{100 * r['same_indices']:8.2f}%" if r["same_indices"] is not None else f"{'-':>9s}"
        print(f"{r['case']:46s} {r['vectors']:6d} {r['mmtok_s'] * 1e3:10.1f} {r['baseline']:>24s} {base} {speed} {same}")
        if r.get("mmtok_exact_where_different") is not None:
            print(f"{'':46s} where indices differ, mmtok's is the float64 argmin in "
                  f"{100 * r['mmtok_exact_where_different']:.1f}% of rows")
        if "mmtok_tokens_per_s" in r:
            print(f"{'':46s} tokens/s: mmtok {r['mmtok_tokens_per_s']:,.0f}, plain torch {r['baseline_tokens_per_s']:,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (3)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per case (default 10, 3 with --quick)")
    parser.add_argument("--no-families", action="store_true", help="skip the FSQ / LFQ / IBQ / ResidualVQ steps")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 10)
    warnings.filterwarnings("ignore")
    baseline_cls, reason = load_baseline()
    if reason:
        print(f"vector-quantize-pytorch unavailable, skipping that column: {reason}")
    info = mmtok.info()
    backend = next((b for b in ("cpp", "cuda", "triton") if info["backends"][b]["available"]), "torch")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, nearest_code backend: {backend}, repeats {repeats}")
    rows = bench_vq(baseline_cls, reason, repeats, args.quick) + bench_best_rq(repeats)
    print_table(rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "backend": backend,
                                   "repeats": repeats, "rows": rows}, indent=2))
    print(f"wrote {RESULTS}")
    if not args.no_families:
        import subprocess

        subprocess.run([sys.executable, str(pathlib.Path(__file__).parent / "quantizer_families.py"),
                        "--repeats", str(min(repeats, 5))], check=True)


if __name__ == "__main__":
    main()
