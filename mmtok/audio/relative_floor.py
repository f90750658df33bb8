"""The relative-floor frontend variant: log-mel floored relative to the recording's own level.

Why: with v1's absolute floor (Kaldi's FLT_EPSILON), frames of digital silence sit on the floor, tens of
dB below anything else, and the per-utterance mean and variance are then dominated by them: a tiny change
anywhere in the silence (a resampler's ringing, int16 rounding, noise far below audibility) moves every
frame's normalised features. A fixed higher floor steadies that but makes tokens depend on the gain.

The variant, per clip:
1. The clip level L: the largest mean power over the clip's consecutive `hop`-sample pieces (10 ms),
   each piece's mean removed (its DC), computed in float64 in fixed-shape blocks of LEVEL_HOPS pieces
   aligned to the clip's first sample, so any chunking of a stream gives the same bits (a maximum does
   not depend on order). Digital silence adds nothing to it.
2. Features log(max(P / (L * s), 10^(floor_db / 10))) for mel power P, where s is the frontend's
   `power_scale` (the mel power of a frame of mean power 1): the floor sits floor_db below the loudest
   10 ms. P and L * s scale together with the gain, and a power-of-two gain scales both exactly, so those
   give bit-identical features (other gains: equal up to one rounding of the division).
3. The top mel band ends 400 Hz below Nyquist (FRONTEND_DEFAULTS): a copy resampled from another rate has
   lost the last few hundred Hz to the resampler's transition band, which v1's top channel saw.
4. Silence gate: a frame whose loudest channel is below gate_db (same reference) is set to the floor in
   every channel and left out of the normalisation statistics. Silence, however long and however it was
   made (digital zeros, dither, faint noise), then neither moves the statistics nor gets varying codes.
   A clip with no frame above the gate is normalised over all its (floor) frames.

Streaming needs the level before the first feature: a stream makes one cheap extra pass over the samples
(`PeakLevel`, no spectra), then the statistics pass and the token pass as for v1.
"""
from __future__ import annotations

import math

import torch

LEVEL_HOPS = 1024  # pieces per fixed-shape level block
VARIANT = "relative-floor"
LEGACY_VARIANT = "absolute-floor"  # v1: what a config without `frontend_variant` means
FLOOR_DB, GATE_DB = -70.0, -50.0  # chosen on the robustness set (docs/audio.md): best worst case of the bars
# frontend options the variant changes by default: the top mel band stops 400 Hz below Nyquist (kaldi-native-
# fbank's and lhotse's default high_freq), where any resampler to 16 kHz has already cut the band edge
FRONTEND_DEFAULTS = {"kaldi": {"high_freq": -400.0}, "whisper": {"fmax": 7600.0}}


class PeakLevel:
    """Push mono float32 samples; `value()` is the largest DC-removed mean power of any `hop`-sample piece."""

    def __init__(self, hop: int):
        self.hop = int(hop)
        self._block = torch.zeros(LEVEL_HOPS * self.hop, dtype=torch.float64)
        self._filled = 0
        self._peak = 0.0
        self.num_samples = 0

    def push(self, samples: torch.Tensor) -> None:
        samples = samples.reshape(-1)
        self.num_samples += samples.numel()
        while samples.numel():
            take = min(self._block.numel() - self._filled, samples.numel())
            self._block[self._filled: self._filled + take] = samples[:take]
            self._filled += take
            samples = samples[take:]
            if self._filled == self._block.numel():
                self._reduce(self._filled)

    def _reduce(self, filled: int) -> None:
        pieces = -(-filled // self.hop)
        self._block[filled:] = 0.0  # a partial last piece is completed with zeros
        hops = self._block.view(LEVEL_HOPS, self.hop)
        total = hops.sum(dim=1)
        power = (hops.square().sum(dim=1) - total.square() / self.hop).clamp_min_(0.0) / self.hop
        self._peak = max(self._peak, float(power[:pieces].max()))
        self._filled = 0

    def value(self) -> float:
        """The level so far (the last partial block included); further pushes may raise it."""
        if self._filled:
            filled, saved = self._filled, self._block.clone()
            self._reduce(filled)
            self._block, self._filled = saved, filled  # a later push continues the same block
        return self._peak


def clip_level(waveform: torch.Tensor, hop: int) -> float:
    level = PeakLevel(hop)
    level.push(waveform)
    return level.value()


class RelativeFloor:
    """The settings of the variant (see the module docstring) and the two operations that use them."""

    def __init__(self, floor_db: float = FLOOR_DB, gate_db: float = GATE_DB):
        if not (math.isfinite(floor_db) and math.isfinite(gate_db)) or not floor_db < gate_db <= 0:
            raise ValueError(f"relative floor: need floor_db < gate_db <= 0, got {floor_db}, {gate_db}")
        self.floor_db, self.gate_db = float(floor_db), float(gate_db)
        self.floor = 10.0 ** (self.floor_db / 10.0)
        self.gate = 10.0 ** (self.gate_db / 10.0)

    def divisor(self, frontend, level: float) -> float:
        """What a clip's mel power is divided by (1 for a clip without any level: all of it is on the floor)."""
        value = level * frontend.power_scale()
        return value if value > 0 and math.isfinite(value) else 1.0

    def gate_rows(self, frontend, features: torch.Tensor) -> torch.Tensor:
        """Set silent rows (loudest channel below the gate) to the floor, in place; return the mask of the others."""
        log_gate = float(frontend.log(torch.tensor([self.gate], dtype=features.dtype)))
        log_floor = float(frontend.log(torch.tensor([self.floor], dtype=features.dtype)))
        active = features.amax(dim=1) >= log_gate
        features[~active] = log_floor
        return active

    def config(self) -> dict:
        return {"floor_db": self.floor_db, "gate_db": self.gate_db,
                "level": "max over 10 ms pieces (hop samples, from the clip's first sample) of the DC-removed "
                         "mean sample power",
                "reference": "level * frontend power_scale (mel power of a frame with mean power 1)",
                "gate": "frames whose loudest channel is below gate_db are set to the floor and left out of "
                        "the statistics"}

    @classmethod
    def from_config(cls, config: dict | None) -> "RelativeFloor":
        config = config or {}
        return cls(floor_db=config.get("floor_db", FLOOR_DB), gate_db=config.get("gate_db", GATE_DB))
