"""VectorQuantizer under torch.distributed: 2 CPU processes on gloo, each seeing a different half of the batch.

After every step both ranks must hold the same codebook, equal (to fp32 rounding) to one process that saw the
whole batch; steps where a rank (or every rank) has an empty batch must not hang."""
from __future__ import annotations

import datetime
import os
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mmtok import VectorQuantizer

WORLD = 2
TIMEOUT_S = 240  # generous: a loaded 2-core CI machine spawns two torch processes slowly


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ema_quantizer(rank_seed: int) -> VectorQuantizer:
    torch.manual_seed(rank_seed)  # ranks start from different codebooks: the first step must sync them
    return VectorQuantizer(24, 6, ema_decay=0.8, l2_normalize=True)


def _worker(rank: int, port: int, init_seed: int, batches: list, out_dir: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=TIMEOUT_S))
    try:
        results = {}
        # 1) EMA with halves of each batch: must equal one process on the whole batch
        vq = _ema_quantizer(init_seed + rank)
        half = batches[0].shape[0] // WORLD
        stats = []
        for batch in batches:
            out = vq(batch[rank * half:(rank + 1) * half])
            stats.append(torch.stack([out.stats["perplexity"], out.stats["usage"]]))
        results["ema"] = (vq.codebook.clone(), vq.ema_cluster_size.clone(), torch.stack(stats))

        # 2) k-means init + EMA + dead codes, with rank 1 empty on the first step and everyone empty on one step
        torch.manual_seed(init_seed + 100 * rank + 1)
        vq = VectorQuantizer(16, 6, ema_decay=0.9, kmeans_init=True, dead_code_threshold=0.5)
        for step, batch in enumerate(batches):
            local = batch[rank * half:(rank + 1) * half]
            if (step == 0 and rank == 1) or step == 2:
                local = local[:0]
            out = vq(local)
            assert torch.isfinite(out.loss)
        results["kmeans_ema"] = vq.codebook.clone()

        # 3) gradient-learned codebook with k-means and dead codes, rank 0 empty on the first step
        torch.manual_seed(init_seed + 100 * rank + 2)
        vq = VectorQuantizer(16, 6, kmeans_init=True, dead_code_threshold=2.0, usage_decay=0.5)
        for step, batch in enumerate(batches):
            local = batch[rank * half:(rank + 1) * half]
            out = vq(local[:0] if (step == 0 and rank == 0) else local)
        results["kmeans_grad"] = (vq.codebook.detach().clone(), vq.code_usage.clone())
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _run_ranks(init_seed: int, batches: list, out_dir: str) -> list[dict]:
    context = mp.spawn(_worker, args=(_free_port(), init_seed, batches, out_dir), nprocs=WORLD, join=False)
    deadline = time.monotonic() + TIMEOUT_S
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            raise AssertionError(f"distributed quantizer ranks did not finish within {TIMEOUT_S} s (hang)")
    return [torch.load(os.path.join(out_dir, f"rank{r}.pt")) for r in range(WORLD)]


def test_two_gloo_ranks_match_one_process_and_survive_empty_batches(seed, tmp_path):
    batches = [torch.randn(40, 6) for _ in range(4)]
    ranks = _run_ranks(seed, batches, str(tmp_path))

    single = _ema_quantizer(seed)  # rank 0's initial codebook, the one broadcast to every rank
    single_stats = []
    for batch in batches:
        out = single(batch)
        single_stats.append(torch.stack([out.stats["perplexity"], out.stats["usage"]]))
    for rank in ranks:
        codebook, cluster_size, stats = rank["ema"]
        torch.testing.assert_close(codebook, single.codebook, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(cluster_size, single.ema_cluster_size, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(stats, torch.stack(single_stats), atol=1e-4, rtol=1e-5)  # global stats
    assert torch.equal(ranks[0]["ema"][0], ranks[1]["ema"][0])
    assert not torch.equal(single.codebook, _ema_quantizer(seed).codebook)  # the steps did change it

    assert torch.equal(ranks[0]["kmeans_ema"], ranks[1]["kmeans_ema"])
    assert torch.isfinite(ranks[0]["kmeans_ema"]).all()
    assert torch.equal(ranks[0]["kmeans_grad"][0], ranks[1]["kmeans_grad"][0])
    assert torch.equal(ranks[0]["kmeans_grad"][1], ranks[1]["kmeans_grad"][1])
