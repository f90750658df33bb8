"""The architecture and preprocessing settings of a VQ-GAN image tokenizer, as one JSON-serialisable record.

One description covers both published families: taming-transformers (and Chameleon) VQ-GANs and LlamaGen's
VQ models differ only in where attention sits, the decoder's channel multipliers and whether the codebook
is used l2-normalised. Levels are numbered by resolution: level 0 is full resolution, level L-1 the latent.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from ..paths import errors_naming

CONFIG_FORMAT = "mmtok.image.vqgan"
MAX_IMAGE_SIZE = 1 << 16  # the default preprocessing side; anything larger is a corrupt or hostile config


@dataclass
class VQGANConfig:
    num_codes: int
    code_dim: int
    z_channels: int
    ch: int = 128
    ch_mult: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 4])
    decoder_ch_mult: list[int] | None = None  # None: the same as ch_mult
    num_res_blocks: int = 2
    attn_levels: list[int] = field(default_factory=lambda: [4])  # levels with attention, encoder and decoder
    in_channels: int = 3
    out_channels: int = 3
    l2_normalize: bool = False
    image_size: int = 256  # default preprocessing size (the training resolution)
    source: str = "mmtok"  # where the weights came from: "taming", "llamagen" or "mmtok"

    def __post_init__(self):
        self.ch_mult = [int(m) for m in self.ch_mult]
        self.decoder_ch_mult = list(self.ch_mult) if self.decoder_ch_mult is None else [int(m) for m in self.decoder_ch_mult]
        self.attn_levels = sorted(int(level) for level in self.attn_levels)
        positive = {"num_codes": self.num_codes, "code_dim": self.code_dim, "z_channels": self.z_channels,
                    "ch": self.ch, "num_res_blocks": self.num_res_blocks, "in_channels": self.in_channels,
                    "out_channels": self.out_channels, "image_size": self.image_size}
        for name, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"VQGANConfig: {name} must be a positive int, got {value!r}")
        if self.image_size > MAX_IMAGE_SIZE:
            raise ValueError(f"VQGANConfig: image_size {self.image_size} is above {MAX_IMAGE_SIZE}")
        if not self.ch_mult or any(m < 1 for m in self.ch_mult):
            raise ValueError(f"VQGANConfig: ch_mult must be a non-empty list of positive ints, got {self.ch_mult}")
        if len(self.decoder_ch_mult) != len(self.ch_mult) or any(m < 1 for m in self.decoder_ch_mult):
            raise ValueError(
                f"VQGANConfig: decoder_ch_mult {self.decoder_ch_mult} must have as many positive entries as ch_mult {self.ch_mult}"
            )
        bad = [level for level in self.attn_levels if not 0 <= level < len(self.ch_mult)]
        if bad:
            raise ValueError(f"VQGANConfig: attn_levels {bad} outside 0..{len(self.ch_mult) - 1}")
        widths = [self.ch * m for m in self.ch_mult + self.decoder_ch_mult] + [self.ch]
        odd = sorted({w for w in widths if w % 32})
        if odd:
            raise ValueError(f"VQGANConfig: channel widths {odd} are not divisible by the 32 GroupNorm groups")

    @property
    def num_levels(self) -> int:
        return len(self.ch_mult)

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    def to_dict(self) -> dict:
        return {"format": CONFIG_FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict, *, origin: str = "config") -> "VQGANConfig":
        data = dict(data)
        fmt = data.pop("format", CONFIG_FORMAT)
        if fmt != CONFIG_FORMAT:
            raise ValueError(f"{origin}: format is {fmt!r}, expected {CONFIG_FORMAT!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{origin}: unknown VQ-GAN config keys {unknown}")
        missing = sorted(f.name for f in dataclasses.fields(cls) if f.name not in data and f.default is dataclasses.MISSING
                         and f.default_factory is dataclasses.MISSING)
        if missing:
            raise ValueError(f"{origin}: missing VQ-GAN config keys {missing}")
        with errors_naming(origin, "VQ-GAN config"):
            return cls(**data)


def read_config_file(path, parse, error_types, kind: str, what: str):
    """Parsed content of a config file: FileNotFoundError naming `what` when missing, ValueError naming the
    file when `parse` raises one of `error_types` (so every config loader reports the same way)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            return parse(f)
        except error_types as exc:
            raise ValueError(f"{path}: not valid {kind} ({exc})") from exc
