"""DDP: two gloo processes train on different crops and keep identical weights (generator, codebook,
discriminator) at every step."""
from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _worker(rank: int, world: int, init_file: str, out_dir: str, seed: int) -> None:
    sys.path.insert(0, os.path.dirname(__file__))
    from test_train_loop import smooth_photos, tiny_config

    from mmtok.train.trainer import VQGANTrainer

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        import pathlib

        photos = smooth_photos(3, torch.Generator().manual_seed(seed))
        cfg = tiny_config(pathlib.Path(out_dir), steps=3, disc_start=1, grad_accum=2, seed=seed % 1000)
        trainer = VQGANTrainer(cfg, photos, progress=False)
        initial = {k: v.clone() for k, v in trainer.raw.state_dict().items()}
        trainer.fit()
        state = {**{f"g.{k}": v for k, v in trainer.raw.state_dict().items()},
                 **{f"d.{k}": v for k, v in trainer.disc.state_dict().items()}}
        changed = sum(not torch.equal(initial[k], v) for k, v in trainer.raw.state_dict().items())
        torch.save({"state": state, "history": trainer.history, "changed": changed},
                   os.path.join(out_dir, f"rank{rank}.pt"))
        trainer.save(os.path.join(out_dir, "ckpt", "step_0000003.safetensors"))  # collective: every rank joins
    finally:
        dist.destroy_process_group()


def test_two_ranks_keep_identical_weights(tmp_path, seed):
    init_file = str(tmp_path / "pg_init")
    mp.spawn(_worker, args=(2, init_file, str(tmp_path), seed), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["changed"] > 0
    assert r0["state"].keys() == r1["state"].keys()
    for key in r0["state"]:
        assert torch.equal(r0["state"][key], r1["state"][key]), key
    # the ranks saw different crops (so the equality above is the gradient all-reduce at work)
    assert [h["rec"] for h in r0["history"]] != [h["rec"] for h in r1["history"]]
    assert all("d_loss" in h for h in r0["history"][1:])
    from mmtok.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(str(tmp_path / "ckpt"))
    assert len(ckpt["ranks"]) == 2 and ckpt["step"] == 3
