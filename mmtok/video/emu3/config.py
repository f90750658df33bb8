"""The architecture of an Emu3 VQ-VAE as one JSON-serialisable record, read from a `transformers` config.json.

Field names are those of `transformers`' `Emu3VQVAEConfig` (model_type "emu3_vqgan"), so a downloaded config maps
one to one; `image_size` (the default preprocessing size) is ours. `attn_resolutions` are level indices (level 0
is full resolution), not pixel sizes. Every check that the published code would only fail deep inside a forward
pass (widths not divisible by the 32 GroupNorm groups, attention levels whose width is not `hidden_size`, an
embedding dimension the decoder cannot concatenate with the latent) is a ValueError naming the file here.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

CONFIG_FORMAT = "mmtok.video.emu3"
MODEL_TYPE = "emu3_vqgan"


@dataclass
class Emu3Config:
    codebook_size: int = 32768
    embed_dim: int = 4
    latent_channels: int = 4
    in_channels: int = 3
    out_channels: int = 3
    temporal_downsample_factor: int = 4
    base_channels: int = 256
    channel_multiplier: list[int] = field(default_factory=lambda: [1, 2, 2, 4])
    num_res_blocks: int = 2
    attn_resolutions: list[int] = field(default_factory=lambda: [3])
    hidden_size: int = 1024
    num_attention_heads: int = 1
    image_size: int = 512  # default preprocessing size
    double_latent: bool = False
    # per-channel normalisation of [0, 1] pixels that PIL / path inputs get (a downloaded folder's
    # preprocessor_config.json image_mean / image_std); None: the plain [-1, 1] mapping (mean = std = 0.5)
    image_mean: list[float] | None = None
    image_std: list[float] | None = None

    def __post_init__(self):
        self.channel_multiplier = [int(m) for m in self.channel_multiplier]
        for name in ("image_mean", "image_std"):
            value = getattr(self, name)
            if value is not None:
                value = [float(v) for v in value]
                if len(value) != self.in_channels or (name == "image_std" and min(value) <= 0):
                    raise ValueError(f"Emu3Config: {name} must hold {self.in_channels} values (std > 0), got {value}")
                setattr(self, name, value)
        if (self.image_mean is None) != (self.image_std is None):
            raise ValueError("Emu3Config: give both image_mean and image_std, or neither")
        self.attn_resolutions = sorted(int(level) for level in (self.attn_resolutions or []))
        positive = ("codebook_size", "embed_dim", "latent_channels", "in_channels", "out_channels",
                    "temporal_downsample_factor", "base_channels", "num_res_blocks", "hidden_size",
                    "num_attention_heads", "image_size")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Emu3Config: {name} must be a positive int, got {value!r}")
        if self.double_latent:
            raise ValueError("Emu3Config: double_latent=True is not supported (the published quant_conv reads "
                             "latent_channels channels, so such a model cannot run)")
        factor = self.temporal_downsample_factor
        if factor & (factor - 1):
            raise ValueError(f"Emu3Config: temporal_downsample_factor must be a power of two, got {factor}")
        if self.embed_dim != self.latent_channels:
            raise ValueError(f"Emu3Config: embed_dim ({self.embed_dim}) must equal latent_channels "
                             f"({self.latent_channels}): the decoder runs both through one temporal stack")
        if not self.channel_multiplier or min(self.channel_multiplier) < 1:
            raise ValueError(f"Emu3Config: channel_multiplier must be positive ints, got {self.channel_multiplier}")
        widths = sorted({w for w in self.widths + [self.base_channels] if w % 32})
        if widths:
            raise ValueError(f"Emu3Config: channel widths {widths} are not divisible by the 32 GroupNorm groups")
        if self.hidden_size != self.widths[-1]:
            raise ValueError(f"Emu3Config: hidden_size ({self.hidden_size}) must equal base_channels * "
                             f"channel_multiplier[-1] ({self.widths[-1]}), the width of the middle attention")
        bad = [lv for lv in self.attn_resolutions if not 0 <= lv < self.num_levels or self.widths[lv] != self.hidden_size]
        if bad:
            raise ValueError(f"Emu3Config: attention levels {bad} must lie in 0..{self.num_levels - 1} and have "
                             f"width hidden_size ({self.hidden_size}); level widths are {self.widths}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"Emu3Config: hidden_size {self.hidden_size} does not split into "
                             f"{self.num_attention_heads} heads")

    @property
    def widths(self) -> list[int]:
        """Channels of each level, level 0 (full resolution) first."""
        return [self.base_channels * m for m in self.channel_multiplier]

    @property
    def num_levels(self) -> int:
        return len(self.channel_multiplier)

    @property
    def spatial_factor(self) -> int:
        return 2 ** (self.num_levels - 1)

    @property
    def temporal_blocks(self) -> int:
        return int(math.log2(self.temporal_downsample_factor))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, *, origin: str = "config") -> "Emu3Config":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{origin}: unknown Emu3 VQ-VAE config keys {unknown}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{origin}: {exc}") from None

    @classmethod
    def from_transformers(cls, data: dict, *, origin: str = "config.json") -> "Emu3Config":
        """From a `transformers` Emu3VQVAEConfig dict. Missing keys take transformers' defaults (which are this
        class's); keys that do not describe the network (architectures, dtype, transformers_version, dropout,
        the generic PreTrainedConfig fields) are ignored, as transformers itself does."""
        if data.get("model_type") != MODEL_TYPE:
            raise ValueError(f"{origin}: model_type is {data.get('model_type')!r}, expected {MODEL_TYPE!r}")
        names = {f.name for f in dataclasses.fields(cls)} - {"image_size", "image_mean", "image_std"}
        return cls.from_dict({k: v for k, v in data.items() if k in names}, origin=origin)
