"""The quantizer families in DistributedDataParallel training: 2 CPU ranks on gloo, each on its own half of
every batch, must hold identical parameters and buffers after every step (and have moved from the start).

Each model is a small linear encoder in front of the quantizer, trained with SGD on the quantizer's loss plus a
reconstruction term through the straight-through output; ResidualVQ runs with quantizer dropout drawn from a
generator seeded the same on both ranks (the documented way to keep ranks in step)."""
from __future__ import annotations

import datetime
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

WORLD, TIMEOUT_S, STEPS = 2, 120, 3
FAMILIES = ("fsq", "lfq", "ibq", "residual_vq", "residual_fsq", "multiscale")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _model(name: str) -> tuple[nn.Module, tuple]:
    from mmtok.quantize import FSQ, IBQ, LFQ, MultiScaleResidualVQ, ResidualFSQ, ResidualVQ

    if name == "multiscale":
        return MultiScaleResidualVQ(24, 6, (1, 2, 4)), (4, 6, 4, 4)
    quantizer = {
        "fsq": lambda: FSQ([5, 4, 3], dim=6),
        "lfq": lambda: LFQ(6, entropy_weight=0.1),
        "ibq": lambda: IBQ(32, 6, entropy_weight=0.05),
        "residual_vq": lambda: ResidualVQ(3, 16, 6, quantizer_dropout=True,
                                          generator=torch.Generator().manual_seed(5)),
        "residual_fsq": lambda: ResidualFSQ([5, 5, 5], 2, dim=6),
    }[name]()
    return quantizer, (16, 6)


class Wrapped(nn.Module):
    def __init__(self, quantizer: nn.Module, shape: tuple):
        super().__init__()
        self.encoder = nn.Linear(6, 6)
        self.quantizer, self.shape = quantizer, shape

    def forward(self, x):
        z = self.encoder(x.movedim(1, -1)).movedim(-1, 1) if len(self.shape) == 4 else self.encoder(x)
        out = self.quantizer(z)
        return out.loss + (out.quantized - x).square().mean()


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=TIMEOUT_S))
    try:
        results = {}
        for name in FAMILIES:
            torch.manual_seed(0)  # the same start on both ranks, as DDP requires
            quantizer, shape = _model(name)
            model = Wrapped(quantizer, shape)
            start = {k: v.detach().clone() for k, v in model.state_dict().items()}
            ddp = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
            opt = torch.optim.SGD(ddp.parameters(), lr=0.5)
            data = torch.Generator().manual_seed(100 + rank)  # each rank its own half of the batch
            for _ in range(STEPS):
                loss = ddp(torch.randn(shape, generator=data))
                opt.zero_grad()
                loss.backward()
                opt.step()
            results[name] = (start, {k: v.detach().clone() for k, v in model.state_dict().items()})
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ranks_hold_identical_state(tmp_path):
    context = mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=False)
    deadline = time.monotonic() + TIMEOUT_S
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            raise AssertionError(f"ranks did not finish within {TIMEOUT_S} s")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for name in FAMILIES:
        (start, a), (_, b) = ranks[0][name], ranks[1][name]
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}: {key} differs between ranks"
        moved = [k for k in a if a[k].is_floating_point() and not torch.equal(a[k], start[k])]
        assert "encoder.weight" in moved, f"{name}: training did not move the encoder"
        if name in ("ibq", "multiscale"):
            assert any(k.startswith("quantizer.") for k in moved), f"{name}: the codebook never learned"
