"""Turn a training checkpoint into an `ImageTokenizer` directory (config.json + model.safetensors).

    python -m mmtok.train.export runs/vqgan/checkpoints/latest.safetensors OUT_DIR [--fp16]
"""
from __future__ import annotations

import argparse
import sys

import torch

from ..image import VQGANConfig
from .checkpoint import load_checkpoint
from .config import TrainConfig
from .model import TrainableVQGAN, export_pretrained


def model_from_checkpoint(path: str) -> TrainableVQGAN:
    state = load_checkpoint(path)
    cfg = TrainConfig.from_dict(state["config"])
    model = TrainableVQGAN(VQGANConfig(**{"source": "mmtok", **cfg.model}), ema_decay=cfg.ema_decay,
                           beta=cfg.beta, kmeans_init=cfg.kmeans_init, dead_code_threshold=cfg.dead_code_threshold)
    model.load_state_dict(state["model"])
    return model.eval()


def export_checkpoint(path: str, directory: str, *, fp16: bool = False) -> str:
    state_step = load_checkpoint(path)["step"]
    return export_pretrained(model_from_checkpoint(path), directory,
                             dtype=torch.float16 if fp16 else torch.float32, metadata={"step": state_step})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="export a VQ-GAN training checkpoint as an ImageTokenizer directory")
    parser.add_argument("checkpoint")
    parser.add_argument("out_dir")
    parser.add_argument("--fp16", action="store_true", help="store weights in fp16 (the loader upcasts)")
    args = parser.parse_args(argv)
    print(export_checkpoint(args.checkpoint, args.out_dir, fp16=args.fp16))
    return 0


if __name__ == "__main__":
    sys.exit(main())
