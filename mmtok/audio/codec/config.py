"""The codec's architecture hyper-parameters, with DAC's constructor defaults for anything a file omits."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from ...paths import errors_naming

# DAC's constructor defaults (dac.model.DAC): a file saved by an older DAC lacks some of them (e.g. latent_dim).
DAC_DEFAULTS: dict[str, Any] = {
    "encoder_dim": 64,
    "encoder_rates": [2, 4, 8, 8],
    "latent_dim": None,  # None -> encoder_dim * 2 ** len(encoder_rates)
    "decoder_dim": 1536,
    "decoder_rates": [8, 8, 4, 2],
    "n_codebooks": 9,
    "codebook_size": 1024,
    "codebook_dim": 8,
    "sample_rate": 44100,
}
TRAINING_ONLY_KWARGS = ("quantizer_dropout",)
MAX_SAMPLE_RATE = 768_000  # the highest rate audio hardware records; more is a corrupt or hostile config  # recorded by DAC, meaningless at inference


@dataclasses.dataclass(frozen=True)
class CodecConfig:
    """Architecture of a DAC-style codec. `hop_length` = prod(encoder_rates) samples per code frame."""

    encoder_dim: int = 64
    encoder_rates: tuple[int, ...] = (2, 4, 5, 8)
    latent_dim: int = 1024
    decoder_dim: int = 1536
    decoder_rates: tuple[int, ...] = (8, 5, 4, 2)
    n_codebooks: int = 12
    codebook_size: int = 1024
    codebook_dim: int = 8
    sample_rate: int = 16000

    def __post_init__(self):
        for name in ("encoder_dim", "latent_dim", "decoder_dim", "n_codebooks", "codebook_size", "codebook_dim",
                     "sample_rate"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"codec config: {name} must be a positive int, got {value!r}")
        if self.sample_rate > MAX_SAMPLE_RATE:
            raise ValueError(f"codec config: sample_rate {self.sample_rate} is above {MAX_SAMPLE_RATE} Hz")
        for name in ("encoder_rates", "decoder_rates"):
            rates = tuple(getattr(self, name))
            if not rates or any(not isinstance(r, int) or r < 1 for r in rates):
                raise ValueError(f"codec config: {name} must be a non-empty list of positive ints, got {rates!r}")
            object.__setattr__(self, name, rates)
        if self.decoder_dim < 2 ** len(self.decoder_rates):  # DAC halves it (floor) per rate: it must stay >= 1
            raise ValueError(f"codec config: decoder_dim {self.decoder_dim} is below 2**len(decoder_rates) = "
                             f"{2 ** len(self.decoder_rates)}")

    @property
    def hop_length(self) -> int:
        return math.prod(self.encoder_rates)

    @classmethod
    def from_dac_kwargs(cls, kwargs: dict[str, Any], source: str = "DAC kwargs") -> "CodecConfig":
        """DAC's metadata['kwargs'] -> config; missing kwargs take DAC's defaults, unknown ones are an error."""
        unknown = sorted(set(kwargs) - set(DAC_DEFAULTS) - set(TRAINING_ONLY_KWARGS))
        if unknown:
            raise ValueError(f"{source}: unknown DAC kwargs {unknown}")
        merged = {**DAC_DEFAULTS, **{k: v for k, v in kwargs.items() if k in DAC_DEFAULTS}}
        with errors_naming(source, "DAC kwargs record"):
            if merged["latent_dim"] is None:
                merged["latent_dim"] = merged["encoder_dim"] * 2 ** len(merged["encoder_rates"])
            return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in merged.items()})

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "CodecConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"{source}: unknown codec config keys {unknown}")
        with errors_naming(source, "codec config"):
            return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()})

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in data.items()}
