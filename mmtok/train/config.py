"""Every setting of a VQ-GAN training run, as one JSON-serialisable record (saved in each checkpoint)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


def _small_model() -> dict:
    """The default architecture: an f8 VQ-GAN small enough to train on a CPU (see docs/training.md).

    The decoder's full-resolution stage is 64 channels wide although the encoder's is 32: with 32 channels
    the 32-group GroupNorm before the output convolution is a per-channel instance norm, which erases each
    channel's spatial mean, and the decoder then cannot reproduce an image's mean colour (grey outputs)."""
    return {"num_codes": 1024, "code_dim": 8, "z_channels": 64, "ch": 32, "ch_mult": [1, 2, 2, 4],
            "decoder_ch_mult": [2, 2, 2, 4], "num_res_blocks": 1, "attn_levels": [], "l2_normalize": True,
            "image_size": 256}


@dataclass
class TrainConfig:
    # model (a VQGANConfig dict) and quantizer training options
    model: dict = field(default_factory=_small_model)
    ema_decay: float | None = 0.95  # None: codebook learned by gradient (codebook + commitment loss)
    beta: float = 0.25  # commitment weight
    kmeans_init: bool = True
    dead_code_threshold: float = 0.1
    # data
    crop: int = 64
    min_side: int = 256  # crops come from photos rescaled to a short side in [min_side, max_side]
    max_side: int = 640
    color_augment: float = 0.0  # probability of a random RGB permutation + saturation change per crop
    batch_size: int = 6  # per rank, per micro-batch
    grad_accum: int = 1
    # objective
    l1_weight: float = 1.0
    l2_weight: float = 1.0
    lowpass_weight: float = 0.0  # extra L2 on f x f average-pooled images (mean colour of each token's patch)
    perceptual_weight: float = 0.0
    lpips_weights: str | None = None  # a local LPIPS/VGG weights file; nothing is downloaded
    disc_start: int = -1  # step at which the discriminator switches on (< 0: never)
    disc_weight: float = 0.1
    disc_ndf: int = 32
    disc_layers: int = 3
    # optimisation
    steps: int = 1000
    lr: float = 6e-4
    disc_lr: float | None = None  # None: same as lr
    betas: tuple = (0.9, 0.99)  # taming uses (0.5, 0.9); reconstruction-dominated training prefers these
    weight_decay: float = 0.0
    warmup_steps: int = 50
    min_lr_ratio: float = 0.05  # cosine decay to lr * min_lr_ratio at `steps`
    grad_clip: float = 1.0
    bf16: bool = True
    seed: int = 0
    # outputs
    out_dir: str = "runs/vqgan"
    log_every: int = 10
    ckpt_every: int = 200  # steps; also every `ckpt_minutes`
    ckpt_minutes: float = 5.0
    grid_every: int = 200
    keep_checkpoints: int = 3

    def __post_init__(self):
        self.betas = tuple(float(b) for b in self.betas)
        for name in ("crop", "batch_size", "grad_accum", "steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TrainConfig: {name} must be a positive int, got {value!r}")
        if self.perceptual_weight > 0 and not self.lpips_weights:
            raise ValueError("TrainConfig: perceptual_weight > 0 needs lpips_weights (a local weights file)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"TrainConfig: unknown keys {unknown}")
        return cls(**data)
