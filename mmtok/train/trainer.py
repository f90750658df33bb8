"""`VQGANTrainer`: the training loop (single process or DDP under torchrun) for a VQ-GAN.

One step = `grad_accum` micro-batches through the generator (encoder, codebook, decoder), then, once the
discriminator is on, the same micro-batches through the discriminator. bf16 autocast for the convolutions,
fp32 for the codebook and the losses. Checkpoints hold everything needed to continue exactly (see
`checkpoint.py`); rank 0 writes them, the log, the preview grids and the exported tokenizer.
"""
from __future__ import annotations

import json
import math
import os
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from ..image import VQGANConfig
from . import checkpoint as ckpt
from .config import TrainConfig
from .data import RandomCrops
from .discriminator import PatchDiscriminator
from .losses import adaptive_weight, disc_factor, hinge_d_loss, hinge_g_loss, reconstruction_loss
from .model import TrainableVQGAN, export_pretrained


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed_from_env(device: torch.device) -> None:
    """Join the process group torchrun describes (WORLD_SIZE > 1): gloo on CPU, nccl on CUDA."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to `min_lr_ratio` at `cfg.steps`."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class VQGANTrainer:
    """Args:
        config: a `TrainConfig`.
        images: photo paths / directories, or preloaded uint8 (3, H, W) tensors (see `RandomCrops`).
        device: where to train (default CPU; CUDA when given).
        perceptual: an optional module (x, y) -> per-image distance, e.g. `perceptual.LPIPS` built from local weights.
    """

    def __init__(self, config: TrainConfig, images, *, device=None, perceptual=None, progress: bool = True):
        self.cfg = config
        self.device = torch.device(device or "cpu")
        init_distributed_from_env(self.device)
        self.rank, self.world = _world()
        torch.manual_seed(config.seed)  # identical initial weights on every rank
        self.model_config = VQGANConfig(**{"source": "mmtok", **config.model})
        self.raw = TrainableVQGAN(self.model_config, ema_decay=config.ema_decay, beta=config.beta,
                                  kmeans_init=config.kmeans_init, dead_code_threshold=config.dead_code_threshold,
                                  bf16=config.bf16).to(self.device)
        self.disc = PatchDiscriminator(self.model_config.out_channels, config.disc_ndf, config.disc_layers).to(self.device)
        self.perceptual = perceptual.to(self.device).eval() if perceptual is not None else None
        if self.world > 1:
            self.model = DDP(self.raw)
            self.disc_ddp = DDP(self.disc)
        else:
            self.model, self.disc_ddp = self.raw, self.disc
        self.opt_g = torch.optim.Adam(self.raw.parameters(), lr=config.lr, betas=config.betas,
                                      weight_decay=config.weight_decay)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=config.disc_lr or config.lr, betas=config.betas)
        self.data = RandomCrops(images, config.crop, min_side=config.min_side, max_side=config.max_side,
                                seed=config.seed * 1000 + 17 + self.rank, color_augment=config.color_augment)
        self.preview = RandomCrops(self.data.photos, config.crop, min_side=config.min_side,
                                   seed=config.seed + 99991).batch(min(8, 4 * config.batch_size))
        self.step = 0
        self.progress = progress and self.rank == 0
        self.history: list[dict] = []
        self._window_counts = torch.zeros(self.model_config.num_codes)

    # --------------------------------------------------------------------------------------- step
    def _generator_pass(self, x: torch.Tensor, gan_on: bool, scale: float) -> tuple[dict, torch.Tensor]:
        recon, q = self.model(x)
        losses = reconstruction_loss(x, recon, self.cfg.l1_weight, self.cfg.l2_weight, self.cfg.lowpass_weight,
                                     self.model_config.downsample_factor)
        nll = losses["rec"]
        if self.perceptual is not None and self.cfg.perceptual_weight > 0:
            p_loss = self.perceptual(x, recon).mean()
            nll = nll + self.cfg.perceptual_weight * p_loss
            losses["perceptual"] = p_loss.detach()
        total = nll + q.loss
        if gan_on:
            self.disc.requires_grad_(False)
            with self.raw._autocast(x.device):
                g_loss = hinge_g_loss(self.disc(recon).float())
            self.disc.requires_grad_(True)
            d_weight = adaptive_weight(nll, g_loss, self.raw.last_layer, self.cfg.disc_weight)
            total = total + d_weight * g_loss
            losses.update(g_loss=g_loss.detach(), d_weight=d_weight)
        (total * scale).backward()
        losses.update(loss=total, vq=q.loss, perplexity=q.stats["perplexity"])
        losses = {k: v.detach() for k, v in losses.items()}
        self._window_counts += torch.bincount(q.indices.reshape(-1).cpu(), minlength=self.model_config.num_codes)
        return losses, recon.detach()

    def _disc_pass(self, x: torch.Tensor, recon: torch.Tensor, scale: float) -> torch.Tensor:
        with self.raw._autocast(x.device):
            logits = self.disc_ddp(torch.cat([x, recon]))
        real, fake = logits.float().chunk(2)
        loss = hinge_d_loss(real, fake)
        (loss * scale).backward()
        return loss.detach()

    def _broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Rank 0's BatchNorm statistics everywhere (DDP only does this at the next forward), so every rank
        holds the same discriminator after each step."""
        if self.world > 1:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    def train_step(self) -> dict:
        """One optimisation step (all micro-batches); returns the step's mean losses as floats."""
        cfg, step = self.cfg, self.step
        self.raw.train()
        self.disc.train()
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = (group.get("base_lr") or group.setdefault("base_lr", group["lr"])) * lr_factor(step, cfg)
        gan_on = disc_factor(step, cfg.disc_start) > 0
        scale = 1.0 / cfg.grad_accum
        batches, recons, records = [], [], []
        self.opt_g.zero_grad(set_to_none=True)
        for micro in range(cfg.grad_accum):
            x = self.data.batch(cfg.batch_size).to(self.device)
            sync = micro == cfg.grad_accum - 1 or self.world == 1
            with (self.model.no_sync() if not sync else _null()):
                losses, recon = self._generator_pass(x, gan_on, scale)
            batches.append(x)
            recons.append(recon)
            records.append(losses)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.raw.parameters(), cfg.grad_clip)
        self.opt_g.step()
        if gan_on:
            self.opt_d.zero_grad(set_to_none=True)
            for micro, (x, recon) in enumerate(zip(batches, recons)):
                sync = micro == cfg.grad_accum - 1 or self.world == 1
                with (self.disc_ddp.no_sync() if not sync else _null()):
                    records[micro]["d_loss"] = self._disc_pass(x, recon, scale)
            self.opt_d.step()
            self._broadcast_buffers(self.disc)
        self.step += 1
        out = {k: sum(float(r[k]) for r in records) / len(records) for k in records[0]}
        out["psnr"] = 10 * math.log10(4.0 / max(out["mse"], 1e-12))  # peak-to-peak 2 in [-1, 1]
        out["lr"] = self.opt_g.param_groups[0]["lr"]
        out["step"] = self.step
        return out

    # ------------------------------------------------------------------------------------ the loop
    def fit(self, steps: int | None = None) -> list[dict]:
        """Train until `steps` (default cfg.steps), logging, checkpointing and writing preview grids."""
        cfg = self.cfg
        end = cfg.steps if steps is None else steps
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=end, initial=self.step, desc="train-vqgan", dynamic_ncols=True)
        last_save = time.monotonic()
        log_path = os.path.join(cfg.out_dir, "train_log.jsonl")
        while self.step < end:
            record = self.train_step()
            self.history.append(record)
            if self.step % cfg.log_every == 0 or self.step == end:
                record["usage"] = float((self._window_counts > 0).float().mean())
                self._window_counts.zero_()
                if self.rank == 0:
                    os.makedirs(cfg.out_dir, exist_ok=True)
                    with open(log_path, "a", encoding="utf-8") as f:
                        f.write(json.dumps(record) + "\n")
                if bar is not None:
                    bar.set_postfix(loss=f"{record['loss']:.4f}", psnr=f"{record['psnr']:.2f}",
                                    usage=f"{record['usage']:.2f}", ppl=f"{record['perplexity']:.0f}",
                                    d=f"{record.get('d_loss', 0.0):.3f}")
            if bar is not None:
                bar.update(1)
            if cfg.grid_every and self.step % cfg.grid_every == 0 and self.rank == 0:
                self.write_preview(os.path.join(cfg.out_dir, "grids", f"step_{self.step:07d}.png"))
            due = self.step % cfg.ckpt_every == 0 or time.monotonic() - last_save > 60 * cfg.ckpt_minutes
            if due or self.step == end:
                self.save(os.path.join(cfg.out_dir, "checkpoints", f"step_{self.step:07d}{ckpt.SUFFIX}"))
                last_save = time.monotonic()
        if bar is not None:
            bar.close()
        return self.history

    # ------------------------------------------------------------------------- state and outputs
    def state_dict(self) -> dict:
        local = {"data": self.data.state_dict(), "rng": ckpt.rng_state()}
        per_rank = [None] * self.world
        if self.world > 1:
            dist.all_gather_object(per_rank, local)
        else:
            per_rank = [local]
        return {"config": self.cfg.to_dict(), "step": self.step, "model": self.raw.state_dict(),
                "disc": self.disc.state_dict(), "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "ranks": per_rank}

    def load_state_dict(self, state: dict) -> None:
        if len(state["ranks"]) != self.world:
            raise ValueError(f"checkpoint was written by {len(state['ranks'])} rank(s), this run has {self.world}")
        self.raw.load_state_dict(state["model"])
        self.disc.load_state_dict(state["disc"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step = int(state["step"])
        mine = state["ranks"][self.rank]
        self.data.load_state_dict(mine["data"])
        ckpt.set_rng_state(mine["rng"])
        self.raw.vq.quantize._needs_rank_sync = False  # the checkpoint already holds the synchronised codebook

    def save(self, path: str) -> None:
        state = self.state_dict()  # every rank joins the gather
        if self.rank == 0:
            ckpt.save_checkpoint(path, state, keep=self.cfg.keep_checkpoints)

    def resume(self, path: str) -> None:
        self.load_state_dict(ckpt.load_checkpoint(path))

    def init_weights(self, path: str) -> None:
        """Start from another run's weights (fine-tuning: new data, crop size or schedule) with fresh optimisers
        and step 0. `path`: a training checkpoint (generator, codebook statistics and discriminator) or an
        `ImageTokenizer` directory (generator and codebook; the EMA statistics restart from the codebook)."""
        if os.path.isdir(path) and not ckpt.is_checkpoint_dir(path):
            from ..image import ImageTokenizer

            source = ImageTokenizer.from_pretrained(path)
            theirs, ours = (dict(c.to_dict(), source=None) for c in (source.model.config, self.model_config))
            if theirs != ours:
                raise ValueError(f"--init {path}: its architecture {theirs} differs from this run's {ours}")
            missing, unexpected = self.raw.vq.load_state_dict(source.model.state_dict(), strict=False)
            quantizer = self.raw.vq.quantize
            if unexpected or any(not k.startswith("quantize.") for k in missing):
                raise ValueError(f"--init {path}: missing keys {missing}, unexpected keys {unexpected}")
            if hasattr(quantizer, "ema_embed_sum"):
                quantizer.ema_embed_sum.copy_(quantizer.codebook)
                quantizer.ema_cluster_size.fill_(1.0)
            if hasattr(quantizer, "initialized"):
                quantizer.initialized.fill_(True)
        else:
            self.init_from_state(ckpt.load_checkpoint(path))
            return
        self.raw.vq.quantize._needs_rank_sync = True  # rank 0's copy wins at the first update

    def init_from_state(self, state: dict) -> None:
        """`init_weights` from an already read training checkpoint (generator, codebook statistics, discriminator)."""
        self.raw.load_state_dict(state["model"])
        self.disc.load_state_dict(state["disc"])
        self.raw.vq.quantize._needs_rank_sync = True  # rank 0's copy wins at the first update

    @torch.no_grad()
    def write_preview(self, path: str) -> None:
        """Preview crops (top row) over their reconstructions (bottom row), as a PNG."""
        from .demo_grid import save_grid

        self.raw.eval()
        recon, _ = self.raw(self.preview.to(self.device))
        self.raw.train()
        save_grid([self.preview, recon.clamp(-1, 1).cpu()], path)

    def export(self, directory: str, dtype: torch.dtype = torch.float32) -> str | None:
        """The trained tokenizer as an `ImageTokenizer.from_pretrained` directory (rank 0 writes it)."""
        if self.rank != 0:
            return None
        return export_pretrained(self.raw, directory, dtype=dtype, metadata={"step": self.step})


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
