"""`mmtok train-vqgan`: train a VQ-GAN on a folder of photos (single process, or DDP under torchrun)."""
from __future__ import annotations

import json
import os
import sys

# flags that map one to one onto TrainConfig fields: (name, type, help)
_FIELDS = [
    ("steps", int, "optimisation steps"), ("batch_size", int, "crops per rank per micro-batch"),
    ("grad_accum", int, "micro-batches per step"), ("crop", int, "crop size in pixels"),
    ("min_side", int, "smallest short side photos are rescaled to before cropping"),
    ("max_side", int, "short side photos are stored at"),
    ("color_augment", float, "probability of a colour augmentation (RGB permutation, saturation) per crop"), ("lr", float, "peak learning rate"),
    ("warmup_steps", int, "linear warm-up steps"), ("l1_weight", float, "L1 reconstruction weight"),
    ("l2_weight", float, "L2 reconstruction weight"),
    ("lowpass_weight", float, "L2 weight on f x f average-pooled images (patch mean colours)"), ("disc_start", int, "step the discriminator switches on (<0: never)"),
    ("disc_weight", float, "GAN loss weight (times the adaptive weight)"),
    ("perceptual_weight", float, "LPIPS weight (needs --lpips-weights)"),
    ("lpips_weights", str, "local LPIPS weights file (VGG16 features + linear heads); nothing is downloaded"),
    ("dead_code_threshold", float, "re-seed codes whose EMA usage falls below this"),
    ("ema_decay", float, "EMA decay of the codebook"), ("seed", int, "random seed"),
    ("log_every", int, "steps between log lines"), ("ckpt_every", int, "steps between checkpoints"),
    ("ckpt_minutes", float, "minutes between checkpoints"), ("grid_every", int, "steps between preview grids"),
]


def register(subparsers) -> None:
    p = subparsers.add_parser("train-vqgan", help="train a VQ-GAN image tokenizer on photos",
                              description="Train a VQ-GAN (taming-transformers objective) on random crops of photos.")
    p.add_argument("images", nargs="+", help="image files, directories, or .txt lists of paths")
    p.add_argument("--out-dir", default="runs/vqgan", help="checkpoints, log, preview grids and the exported model")
    p.add_argument("--config", help="JSON file with TrainConfig fields (flags override it)")
    p.add_argument("--model", help="JSON object of VQGANConfig fields, e.g. '{\"ch\": 64, \"num_codes\": 4096}'")
    for name, kind, text in _FIELDS:
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=text)
    p.add_argument("--no-bf16", action="store_true", help="train in fp32 instead of bf16 autocast")
    p.add_argument("--resume", help="checkpoint file or checkpoint directory (latest.safetensors) to continue from")
    p.add_argument("--init", help="start from these weights (a training checkpoint or a tokenizer directory) with "
                                  "fresh optimisers at step 0: fine-tuning")
    p.add_argument("--stop-at", type=int, help="stop after this step (the learning-rate schedule still spans "
                                               "--steps): a run cut short on purpose, reproducibly")
    p.add_argument("--export", help="directory for the final tokenizer (default OUT_DIR/final)")
    p.add_argument("--export-fp16", action="store_true", help="store the exported weights in fp16 (half the size)")
    p.add_argument("--device", default=None, help="cpu (default) or cuda[:N]")
    p.set_defaults(func=run)


def build_config(args) -> "TrainConfig":
    from .config import TrainConfig

    data = {}
    if args.config:
        if not os.path.isfile(args.config):
            raise FileNotFoundError(f"--config: {args.config} not found")
        with open(args.config, encoding="utf-8") as f:
            data = json.load(f)
    if args.model:
        try:
            override = json.loads(args.model)
            base = dict(data.get("model", TrainConfig().model))
            if "ch_mult" in override and "decoder_ch_mult" not in override:
                base.pop("decoder_ch_mult", None)  # a new depth: the decoder follows ch_mult
            data["model"] = {**base, **override}
        except json.JSONDecodeError as exc:
            raise ValueError(f"--model: not a JSON object ({exc})") from exc
    for name, _, _ in _FIELDS:
        value = getattr(args, name)
        if value is not None:
            data[name] = value
    data["out_dir"] = args.out_dir
    if args.no_bf16:
        data["bf16"] = False
    return TrainConfig.from_dict(data)


def run(args) -> int:
    import torch

    from . import checkpoint as ckpt
    from .trainer import VQGANTrainer

    cfg = build_config(args)
    if args.resume and args.init:
        raise SystemExit("train-vqgan: give --resume (continue a run) or --init (start from weights), not both")
    start = None  # the checkpoint to start from, read (and refused, exit 2) before any work
    source = args.resume or args.init
    if source and not (args.init and os.path.isdir(source) and not ckpt.is_checkpoint_dir(source)):
        try:
            start = ckpt.load_checkpoint(source)
        except (ValueError, OSError) as exc:
            print(f"train-vqgan: {'--resume' if args.resume else '--init'}: {exc}", file=sys.stderr)
            return 2
    device = args.device or ("cuda" if torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1 else "cpu")
    if device.startswith("cuda") and "LOCAL_RANK" in os.environ:
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    perceptual = None
    if cfg.perceptual_weight > 0:
        from .perceptual import LPIPS

        perceptual = LPIPS.from_file(cfg.lpips_weights)
    trainer = VQGANTrainer(cfg, args.images, device=device, perceptual=perceptual)
    if args.resume:
        trainer.load_state_dict(start)
    elif start is not None:
        trainer.init_from_state(start)
    elif args.init:
        trainer.init_weights(args.init)  # a tokenizer directory
    if trainer.rank == 0:
        os.makedirs(cfg.out_dir, exist_ok=True)
        with open(os.path.join(cfg.out_dir, "train_config.json"), "w", encoding="utf-8") as f:
            json.dump(cfg.to_dict(), f, indent=2)
    trainer.fit(args.stop_at)
    out = trainer.export(args.export or os.path.join(cfg.out_dir, "final"),
                         dtype=torch.float16 if args.export_fp16 else torch.float32)
    if out:
        print(f"saved tokenizer to {out}")
    return 0
