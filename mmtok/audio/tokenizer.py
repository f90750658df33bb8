"""`AudioTokenizer`: BEST-RQ tokens for 16 kHz speech, 25 per second per codebook, exactly reproducible.

The recipe of Chiu et al. (2022) as NeMo and SpeechBrain configure it: 80-dim log-mel (25 ms
window, 10 ms hop) -> per-utterance mean/variance normalisation of every mel channel -> 4
consecutive frames stacked (320-dim, 40 ms) -> `mmtok.RandomProjectionQuantizer` (seeded
projection to 16 dims, nearest of 8192 unit codes by cosine). The seed, the frontend constants
and the frozen tables are all saved by `save_pretrained`, so a dataset's tokens can be reproduced.
"""
from __future__ import annotations

import inspect
import os
import pathlib
from typing import Callable, Iterable, Iterator

import soundfile
import torch

from ..quantize import RandomProjectionQuantizer
from ..tokenizer.folder import read_folder, save_folder
from ..tokenizer.protocol import AUDIO_AXES, CodeSpec
from ..tokenizer.weights import check_state_dict
from .fbank import KaldiFbank
from .features import FeatureStats, stack_frames
from .frontend import BLOCK_FRAMES, FrameFrontend
from .io import SAMPLE_RATE, audio_info, load_audio, prepare_waveform
from .relative_floor import FRONTEND_DEFAULTS, LEGACY_VARIANT, VARIANT, PeakLevel, RelativeFloor, clip_level
from .streaming import AudioTokenStream, coalesced, mono_chunks, resampled, stream_stats
from .whisper_mel import WhisperLogMel

FRONTENDS = {"kaldi": KaldiFbank, "whisper": WhisperLogMel}
VARIANTS = (VARIANT, LEGACY_VARIANT)  # the first is the default of new tokenizers
CONFIG_FILE, TABLES_FILE = "config.json", "model.safetensors"
PAD_ID = -1
FORMAT = "mmtok.audio.bestrq"  # the saved folder's marker (folders saved before it carry "tokenizer": "best-rq")


def build_frontend(name: str, options: dict | None = None) -> FrameFrontend:
    """A frontend by name; `options` may be a saved `frontend.config()` (descriptive keys are ignored)."""
    if name not in FRONTENDS:
        raise ValueError(f"frontend must be one of {sorted(FRONTENDS)}, got {name!r}")
    cls = FRONTENDS[name]
    accepted = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in (options or {}).items() if k in accepted})


class AudioTokenizer:
    """BEST-RQ audio tokenizer. `encode(waveform, sample_rate)` -> LongTensor (num_codebooks, T)."""

    def __init__(self, seed: int = 0, num_codebooks: int = 1, num_codes: int = 8192, code_dim: int = 16,
                 stack: int = 4, frontend: str = "kaldi", *, frontend_options: dict | None = None,
                 stats: FeatureStats | None = None, frontend_variant: str = VARIANT,
                 relative_floor: dict | None = None):
        if frontend_variant not in VARIANTS:
            raise ValueError(f"frontend_variant must be one of {VARIANTS}, got {frontend_variant!r}")
        self.frontend_variant = frontend_variant
        self.relative_floor = RelativeFloor.from_config(relative_floor) if frontend_variant == VARIANT else None
        if self.relative_floor is not None:  # the variant's defaults; given options (a saved config) win
            frontend_options = {**FRONTEND_DEFAULTS.get(frontend, {}), **(frontend_options or {})}
        if not isinstance(stack, int) or stack < 1 or BLOCK_FRAMES % stack:
            raise ValueError(f"stack must be a positive int dividing {BLOCK_FRAMES}, got {stack!r}")
        self.frontend = build_frontend(frontend, frontend_options)
        if self.frontend.sample_rate != SAMPLE_RATE:
            raise ValueError(f"frontend sample_rate must be {SAMPLE_RATE}, got {self.frontend.sample_rate}")
        self.frontend_name, self.stack, self.seed = frontend, stack, int(seed)
        self.quantizer = RandomProjectionQuantizer(self.frontend.num_mel_bins * stack, code_dim=code_dim,
                                                   num_codes=num_codes, num_codebooks=num_codebooks, seed=seed)
        self.stats = None
        self.stats = self._fixed_stats(stats)  # fixed (e.g. corpus) statistics; None = per utterance

    # ---- properties ---------------------------------------------------------------------------
    num_codes = property(lambda self: self.quantizer.num_codes)
    num_codebooks = property(lambda self: self.quantizer.num_codebooks)
    code_dim = property(lambda self: self.quantizer.code_dim)
    sample_rate = property(lambda self: SAMPLE_RATE)
    frame_rate = property(lambda self: SAMPLE_RATE / self.frontend.frame_shift)
    tokens_per_second = property(lambda self: self.frame_rate / self.stack)
    pad_id = PAD_ID

    @property
    def code_spec(self) -> CodeSpec:
        """The Tokenizer protocol's description: (num_codebooks, T) codes, one frame per `stack` mel frames;
        not decodable (BEST-RQ tokens are targets, not a codec)."""
        hop = int(self.frontend.frame_shift) * self.stack
        return CodeSpec("audio", AUDIO_AXES, (self.num_codes,) * self.num_codebooks, (hop,),
                        sample_rate=SAMPLE_RATE, frame_rate=self.tokens_per_second, decodable=False)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def to(self, device=None, dtype=None) -> "AudioTokenizer":
        """BEST-RQ runs on the CPU in float32 (its features are computed there); other devices are refused."""
        if device is not None and torch.device(device).type != "cpu":
            raise ValueError(f"AudioTokenizer runs on the CPU, got device={device!r}")
        if dtype is not None and dtype not in (torch.float32, "float32", "fp32"):
            raise ValueError(f"AudioTokenizer runs in float32, got dtype={dtype!r}")
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The frozen tables (projection, codebook) that decide the tokens."""
        return self.quantizer.state_dict()

    def decode(self, codes, *args, **kwargs):
        """BEST-RQ tokens cannot be turned back into audio (code_spec.decodable is False)."""
        raise TypeError("AudioTokenizer (BEST-RQ) codes cannot be decoded to audio; use an audio codec "
                        "(mmtok.AudioCodec) for decodable audio tokens")

    @property
    def config(self) -> dict:
        return {
            "tokenizer": "best-rq", "format_version": 1, "seed": self.seed, "num_codebooks": self.num_codebooks,
            "num_codes": self.num_codes, "code_dim": self.code_dim, "stack": self.stack,
            "sample_rate": SAMPLE_RATE, "frame_rate": self.frame_rate, "tokens_per_second": self.tokens_per_second,
            "frontend": self.frontend_name, "frontend_options": self.frontend.config(),
            "frontend_variant": self.frontend_variant,
            **({"relative_floor": self.relative_floor.config()} if self.relative_floor is not None else {}),
            "normalization": {"per": "mel channel", "over": "supplied statistics" if self.stats is not None else
                              "valid frames of the utterance" if self.relative_floor is None else
                              "frames of the utterance above the silence gate", "std": "unbiased", "std_epsilon": 1e-5,
                              "stats": None if self.stats is None else self.stats.to_dict()},
            "quantizer": {"projection": "xavier-uniform, no bias", "codebook": "standard normal, unit rows",
                          "metric": "cosine", "tables": TABLES_FILE},
            "pad_id": PAD_ID, "resampler": "soxr HQ",
        }

    def __repr__(self) -> str:
        return (f"AudioTokenizer(seed={self.seed}, num_codebooks={self.num_codebooks}, num_codes={self.num_codes}, "
                f"code_dim={self.code_dim}, stack={self.stack}, frontend={self.frontend_name!r}, "
                f"frontend_variant={self.frontend_variant!r})")

    # ---- the recipe ---------------------------------------------------------------------------
    def quantize_stacked(self, stacked: list[torch.Tensor]) -> torch.Tensor:
        """Stacked, normalised frames (rows, stack * mels), in order -> (num_codebooks, total rows).

        The rows are projected in blocks of exactly BLOCK_FRAMES // stack rows (the last one filled up
        with zeros), whatever the pieces: BLAS rounds tiny matrices differently. The lookup is
        row-independent, so all projected rows are looked up in one call (the codebook prepared once).
        """
        block = BLOCK_FRAMES // self.stack
        out, pending, filled = [], [], 0

        def emit(rows: int) -> None:
            part = pending[0] if len(pending) == 1 else torch.cat(pending)
            if rows < block:
                part = torch.cat([part, part.new_zeros(block - rows, part.shape[1])])
            out.append(self.quantizer.project(part)[:rows])

        for piece in stacked:
            while piece.shape[0]:
                take = min(block - filled, piece.shape[0])
                pending.append(piece[:take])
                piece, filled = piece[take:], filled + take
                if filled == block:
                    emit(block)
                    pending, filled = [], 0
        if filled:
            emit(filled)
        if not out:
            return torch.zeros(self.num_codebooks, 0, dtype=torch.int64)
        return self.quantizer.lookup(torch.cat(out)).T.contiguous()

    def _fixed_stats(self, stats) -> FeatureStats | None:
        """The statistics to use for every clip: `stats`, else the tokenizer's own, else None (per utterance)."""
        stats = stats if stats is not None else self.stats
        if stats is None or isinstance(stats, FeatureStats):
            return stats
        if isinstance(stats, dict):
            return FeatureStats.from_dict(stats)
        raise ValueError(f"stats must be None, a FeatureStats or a {{'mean', 'std'}} dict, got {type(stats).__name__}")

    # ---- features -------------------------------------------------------------------------------
    def divisor(self, level: float) -> float | None:
        """What the relative floor divides a clip's mel power by, from its level (None for v1)."""
        return None if self.relative_floor is None else self.relative_floor.divisor(self.frontend, level)

    def clip_divisor(self, wav: torch.Tensor) -> float | None:
        return None if self.relative_floor is None else self.divisor(clip_level(wav, self.frontend.frame_shift))

    def level_meter(self) -> PeakLevel | None:
        return None if self.relative_floor is None else PeakLevel(self.frontend.frame_shift)

    def blocks_of(self, clips: list[torch.Tensor], names: list[str], divisors: list | None = None):
        """Each clip's feature blocks, with the variant's floor (and silence gate) applied, and the
        per-block masks of the frames the statistics are taken over (None: all of them)."""
        if self.relative_floor is None:
            return [[(b, None) for b in blocks] for blocks in self.frontend.clip_feature_blocks(clips, names)]
        if divisors is None:
            divisors = [self.clip_divisor(c) for c in clips]
        out = self.frontend.clip_feature_blocks(clips, names, divisors, self.relative_floor.floor)
        return [[self.gated(b) for b in blocks] for blocks in out]

    def gated(self, block: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A feature block with silent frames set to the floor, and the mask of the other frames (v1: None)."""
        if self.relative_floor is None:
            return block, None
        return block, self.relative_floor.gate_rows(self.frontend, block)

    def stats_of(self, blocks, stats=None) -> FeatureStats:
        """The statistics to normalise with: fixed ones, else those of the frames the masks select
        (all frames when no frame is selected: a clip of silence)."""
        fixed = self._fixed_stats(stats)
        if fixed is not None:
            return fixed
        acc = FeatureStats(self.frontend.num_mel_bins)
        for block, mask in blocks:
            acc.update(block if mask is None else block[mask])
        if acc.count == 0:
            for block, _ in blocks:
                acc.update(block)
        return acc

    @torch.no_grad()
    def log_mel(self, waveform, sample_rate: int) -> torch.Tensor:
        """The frontend's log-mel features (frames, mels) of one clip (with the variant's floor and gate),
        before normalisation."""
        wav = prepare_waveform(waveform, sample_rate, SAMPLE_RATE)
        return torch.cat([b for b, _ in self.blocks_of([wav], ["waveform"])[0]])

    @torch.no_grad()
    def encode(self, waveform, sample_rate: int, *, stats: FeatureStats | None = None,
               name: str = "waveform") -> torch.Tensor:
        """One clip (samples,) or (channels, samples) at any rate -> LongTensor (num_codebooks, T).

        T = (number of 10 ms frames) // stack; `stats` overrides per-utterance normalisation.
        """
        wav = prepare_waveform(waveform, sample_rate, SAMPLE_RATE, name=name)
        blocks = self.blocks_of([wav], [name])[0]  # BLOCK_FRAMES rows each but the last
        stats = self.stats_of(blocks, stats)
        # the blocks are this call's own buffers: normalised in place
        return self.quantize_stacked([stack_frames(stats.normalize_(b), self.stack) for b, _ in blocks])

    @torch.no_grad()
    def encode_batch(self, waveforms, sample_rate: int, *, lengths=None, stats: FeatureStats | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Clips -> (LongTensor (B, num_codebooks, T_max) padded with -1, token lengths (B,)).

        `waveforms`: a list of clips, or a padded (B, samples) tensor with `lengths` in samples.
        Each clip is normalised over its own frames: the result equals `encode` clip by clip.
        """
        if isinstance(waveforms, torch.Tensor) and waveforms.ndim == 2 and lengths is not None:
            waveforms = [waveforms[i, : int(n)] for i, n in enumerate(lengths)]
        if len(waveforms) == 0:
            raise ValueError("encode_batch: waveforms is empty")
        names = [f"waveforms[{i}]" for i in range(len(waveforms))]
        clips = [prepare_waveform(w, sample_rate, SAMPLE_RATE, name=n) for w, n in zip(waveforms, names)]
        stacked = []
        for blocks in self.blocks_of(clips, names):
            clip_stats = self.stats_of(blocks, stats)
            stacked.append(stack_frames(clip_stats.normalize(torch.cat([b for b, _ in blocks])), self.stack))
        tokens = self.quantize_stacked(stacked)
        counts = torch.tensor([s.shape[0] for s in stacked], dtype=torch.int64)
        out = torch.full((len(clips), self.num_codebooks, int(counts.max())), PAD_ID, dtype=torch.int64)
        for i, part in enumerate(tokens.split(counts.tolist(), dim=1)):
            out[i, :, : part.shape[1]] = part
        return out, counts

    # ---- long audio ---------------------------------------------------------------------------
    def stream(self, chunks, sample_rate: int = SAMPLE_RATE, *, stats: FeatureStats | None = None,
               name: str = "stream") -> Iterator[torch.Tensor]:
        """Tokens (num_codebooks, t) as the chunks arrive, with bounded memory; together equal to `encode`.

        Linear in the samples whatever the chunk sizes (tiny chunks are joined first), memory flat.

        Statistics: `stats` (or the tokenizer's own) if given; otherwise the exact per-utterance
        statistics from a first pass. The relative-floor variant also needs the clip's level first
        (one more, cheap pass: samples only). Passes need `chunks` to be re-iterable (a list, or a
        callable returning a fresh iterator); a v1 tokenizer with `stats` needs one pass only. The
        tokens equal `encode` of the whole clip.
        """
        stats = self._fixed_stats(stats)
        passes = (self.relative_floor is not None) + (stats is None)
        source = _replayable(chunks, name) if passes else None
        divisor = None
        if self.relative_floor is not None:  # the clip's level: samples only, no spectra
            meter = self.level_meter()
            for chunk in resampled(coalesced(mono_chunks(source(), name)), sample_rate):
                meter.push(chunk)
            divisor = self.divisor(meter.value())
        if stats is None:  # the exact statistics of the whole stream
            stats = stream_stats(self, resampled(coalesced(mono_chunks(source(), name)), sample_rate), name, divisor)
        if source is not None:
            chunks = source()
        tokens = AudioTokenStream(self, stats, name, divisor)
        with torch.no_grad():
            for chunk in resampled(coalesced(mono_chunks(chunks, name)), sample_rate):
                yield tokens.push(chunk)
            yield tokens.finish()

    @torch.no_grad()
    def encode_file(self, path, chunk_seconds: float | None = None, *, stats: FeatureStats | None = None
                    ) -> torch.Tensor:
        """An audio file -> LongTensor (num_codebooks, T). With chunk_seconds, the file is read and tokenized
        in chunks (two passes unless `stats` is given): memory stays flat and the tokens equal one-shot."""
        if chunk_seconds is None:
            return self.encode(load_audio(path), SAMPLE_RATE, stats=stats, name=str(path))
        if not chunk_seconds > 0:
            raise ValueError(f"chunk_seconds must be > 0, got {chunk_seconds!r}")
        info = audio_info(path)
        path = pathlib.Path(os.fspath(path))
        if info.frames == 0:
            raise ValueError(f"{path}: audio file is empty (0 samples)")
        blocksize = max(1, int(chunk_seconds * info.samplerate))

        def read_chunks():
            try:
                with soundfile.SoundFile(str(path)) as f:
                    for block in f.blocks(blocksize=blocksize, dtype="float32", always_2d=True):
                        yield torch.from_numpy(block.T.copy())
            except (RuntimeError, soundfile.LibsndfileError) as exc:
                raise ValueError(f"{path}: cannot read audio ({exc})") from None

        parts = list(self.stream(read_chunks, info.samplerate, stats=stats, name=str(path)))
        return torch.cat(parts, dim=1)

    # ---- persistence ---------------------------------------------------------------------------
    def save_pretrained(self, directory):
        """config.json + the frozen tables (model.safetensors) through the shared save layer."""
        tables = {"projection": self.quantizer.projection, "codebook": self.quantizer.codebook}
        return save_folder(directory, FORMAT, self.config, tables, version=1)

    @classmethod
    def from_pretrained(cls, directory, *, device=None, dtype=None) -> "AudioTokenizer":
        """A saved folder (also one written before the shared save layer, whose tables may be absent: they are
        then rebuilt from the seed)."""
        saved = read_folder(directory, expected_format=FORMAT, weights_required=False, max_version=1)
        config = saved.config
        missing = [k for k in ("seed", "num_codebooks", "num_codes", "code_dim", "stack", "frontend",
                               "frontend_options") if k not in config]
        if missing:
            raise ValueError(f"{saved.config_path}: BEST-RQ config lacks {', '.join(missing)}")
        stats = (config.get("normalization") or {}).get("stats")
        tok = cls(seed=config["seed"], num_codebooks=config["num_codebooks"], num_codes=config["num_codes"],
                  code_dim=config["code_dim"], stack=config["stack"], frontend=config["frontend"],
                  frontend_options=config["frontend_options"],
                  stats=FeatureStats.from_dict(stats) if stats else None,
                  # folders saved before the variant existed (no key) used the absolute floor: keep their tokens
                  frontend_variant=config.get("frontend_variant", LEGACY_VARIANT),
                  relative_floor=config.get("relative_floor"))
        if saved.weights_path is not None:  # the saved tables win: tokens stay reproducible if torch's RNG changes
            expected = {"projection": tok.quantizer.projection, "codebook": tok.quantizer.codebook}
            check_state_dict(expected, saved.tensors, str(saved.weights_path))
            for key, table in expected.items():
                table.copy_(saved.tensors[key])
        return tok.to(device, dtype)


def _replayable(chunks, name: str) -> Callable[[], Iterable] | None:
    """A zero-argument callable giving a fresh iterator over the chunks, or an error for one-shot iterators."""
    if callable(chunks):
        return chunks
    if isinstance(chunks, (torch.Tensor,)) or iter(chunks) is chunks:
        raise ValueError(f"{name}: per-utterance statistics and the relative floor's level need passes over the "
                         f"audio before the tokens (two or three): pass a list of chunks or a callable returning a "
                         f"fresh iterator (a one-shot iterator works only for frontend_variant="
                         f"{LEGACY_VARIANT!r} with stats=)")
    return lambda: chunks
