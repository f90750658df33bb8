"""The architecture of a `diffusers` `VQModel` (aMUSEd, VQ-Diffusion, Kandinsky MoVQ), read from its config.json.

The fields and their defaults are diffusers' own (`VQModel.__init__`); `image_size` is mmtok's addition (the
default preprocessing size; diffusers' `sample_size` is not reliably a pixel size). Reading is strict: an
unknown field, a block type VQModel's encoder / decoder cannot take, or widths the GroupNorms cannot split is
a ValueError naming the file, before any weight is read.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

CLASS_NAME = "VQModel"
CONFIG_FORMAT = "mmtok.image.diffusers_vq"
DOWN_BLOCKS = ("DownEncoderBlock2D", "AttnDownEncoderBlock2D")
UP_BLOCKS = ("UpDecoderBlock2D", "AttnUpDecoderBlock2D")
NORM_TYPES = ("group", "spatial")
ACTIVATIONS = ("silu", "swish")  # the same function in diffusers
SPATIAL_NORM_GROUPS = 32  # SpatialNorm's GroupNorm ignores norm_num_groups


@dataclass
class DiffusersVQConfig:
    in_channels: int = 3
    out_channels: int = 3
    down_block_types: list[str] = field(default_factory=lambda: ["DownEncoderBlock2D"])
    up_block_types: list[str] = field(default_factory=lambda: ["UpDecoderBlock2D"])
    block_out_channels: list[int] = field(default_factory=lambda: [64])
    layers_per_block: int = 1
    act_fn: str = "silu"
    latent_channels: int = 3
    sample_size: int = 32
    num_vq_embeddings: int = 256
    norm_num_groups: int = 32
    vq_embed_dim: int | None = None
    scaling_factor: float = 0.18215
    norm_type: str = "group"
    mid_block_add_attention: bool = True
    lookup_from_codebook: bool = False
    force_upcast: bool = False
    image_size: int = 256  # mmtok: default preprocessing size

    def __post_init__(self):
        self.down_block_types = [str(t) for t in self.down_block_types]
        self.up_block_types = [str(t) for t in self.up_block_types]
        self.block_out_channels = list(self.block_out_channels)
        for name in ("in_channels", "out_channels", "layers_per_block", "latent_channels", "num_vq_embeddings",
                     "norm_num_groups", "image_size", "sample_size"):
            _positive(name, getattr(self, name))
        for c in self.block_out_channels:
            _positive("block_out_channels", c)
        if self.vq_embed_dim is not None:
            _positive("vq_embed_dim", self.vq_embed_dim)
        if not self.block_out_channels:
            raise ValueError("VQModel config: block_out_channels is empty")
        levels = len(self.block_out_channels)
        if len(self.down_block_types) != levels or len(self.up_block_types) != levels:
            raise ValueError(f"VQModel config: {len(self.down_block_types)} down_block_types and "
                             f"{len(self.up_block_types)} up_block_types for {levels} block_out_channels")
        bad = sorted({t for t in self.down_block_types if t not in DOWN_BLOCKS}
                     | {t for t in self.up_block_types if t not in UP_BLOCKS})
        if bad:
            raise ValueError(f"VQModel config: block types {bad} are not supported (VQModel's encoder takes "
                             f"{DOWN_BLOCKS}, its decoder {UP_BLOCKS})")
        if self.norm_type not in NORM_TYPES:
            raise ValueError(f"VQModel config: norm_type must be one of {NORM_TYPES}, got {self.norm_type!r}")
        if self.act_fn not in ACTIVATIONS:
            raise ValueError(f"VQModel config: act_fn {self.act_fn!r} is not supported (only {ACTIVATIONS})")
        odd = sorted({c for c in self.block_out_channels if c % self.norm_num_groups})
        if odd:
            raise ValueError(f"VQModel config: block_out_channels {odd} are not divisible by norm_num_groups "
                             f"{self.norm_num_groups}")
        if self.norm_type == "spatial":
            odd = sorted({c for c in self.block_out_channels if c % SPATIAL_NORM_GROUPS})
            if odd:
                raise ValueError(f"VQModel config: with norm_type 'spatial' the decoder widths {odd} must be "
                                 f"divisible by SpatialNorm's {SPATIAL_NORM_GROUPS} groups")
            if self.code_dim != self.latent_channels:
                raise ValueError(f"VQModel config: norm_type 'spatial' conditions on the codebook rows, so "
                                 f"vq_embed_dim ({self.code_dim}) must equal latent_channels "
                                 f"({self.latent_channels}) (diffusers fails on this config too)")
        self.scaling_factor = float(self.scaling_factor)
        if not self.scaling_factor > 0:
            raise ValueError(f"VQModel config: scaling_factor must be positive, got {self.scaling_factor}")
        for name in ("mid_block_add_attention", "lookup_from_codebook", "force_upcast"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"VQModel config: {name} must be true or false, got {getattr(self, name)!r}")

    # ----------------------------------------------------------------------------- derived sizes
    @property
    def code_dim(self) -> int:
        """Channels of a codebook row (vq_embed_dim, defaulting to latent_channels as diffusers does)."""
        return self.vq_embed_dim if self.vq_embed_dim is not None else self.latent_channels

    @property
    def num_codes(self) -> int:
        return self.num_vq_embeddings

    @property
    def num_levels(self) -> int:
        return len(self.block_out_channels)

    @property
    def downsample_factor(self) -> int:
        return 2 ** (self.num_levels - 1)

    @property
    def source(self) -> str:
        return "diffusers"

    # ------------------------------------------------------------------------------- (de)serialise
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def diffusers_dict(self) -> dict:
        """The config as diffusers writes it (without mmtok's image_size)."""
        data = {"_class_name": CLASS_NAME, **self.to_dict()}
        data.pop("image_size")
        return data

    @classmethod
    def from_dict(cls, data: dict, *, origin: str = "config", image_size: int | None = None) -> "DiffusersVQConfig":
        """From a diffusers config.json body (keys starting with '_' are metadata and skipped) or mmtok's own."""
        if not isinstance(data, dict):
            raise ValueError(f"{origin}: expected a JSON object, got {type(data).__name__}")
        body = {k: v for k, v in data.items() if not k.startswith("_")}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(body) - names)
        if unknown:
            raise ValueError(f"{origin}: unknown VQModel config keys {unknown} (known: {sorted(names)})")
        if image_size is not None:
            body["image_size"] = image_size
        try:
            return cls(**body)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{origin}: {exc}") from None


def _positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"VQModel config: {name} must be a positive int, got {value!r}")
