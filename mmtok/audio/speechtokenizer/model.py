"""`SpeechTokenizerCodec`: SpeechTokenizer (ZhangXInFD/SpeechTokenizer; AnyGPT, USLM, SpeechGPT-Gen) from its
release files, `config.json` + a `.pt` state dict, with the `speechtokenizer` package's numerics.

The network is EnCodec's non-causal SEANet (`mmtok.audio.encodec`'s encoder / decoder, reflect padding, weight
norm folded at load time), with SpeechTokenizer's options: a bidirectional LSTM at the end of the encoder (the
release has one), ELU / CELU / Snake activations, no LSTM when `lstm_layers` is 0. The latent (`dimension`
channels, one frame per `prod(strides)` samples, ceil(samples / hop) frames) goes through a residual VQ of `n_q`
plain-L2 codebooks (`mmtok.nearest_code`); level 1 (RVQ-1) was distilled from HuBERT and carries the content,
the others the acoustics. `transform` (a Linear to `semantic_dimension`) is the distillation head; it is kept
for `semantic_features`, and is not used by encode / decode.

Codes are (levels, frames) int64 for one clip (upstream returns (n_q, B, T), quantizer axis first; here the
batch axis comes first). Decoded audio has frames * hop samples, as upstream (no trim to the input length).
Upstream quirks kept, as options: `encode(..., n_q=, start=)` quantizes levels start..n_q-1 of the RVQ starting
from the *raw* latent (upstream's `st`; not the residual left by the first levels), and `decode(codes, start=)`
adds the levels start.. (decode of `codes[1:]` with start=1 is the acoustic-only reconstruction).
"""
from __future__ import annotations

import math
import os
import pathlib
import re
from typing import Mapping, Sequence

import torch
from torch import nn

from ...ops import nearest_code
from ...tokenizer.folder import read_config, read_folder, save_folder
from ...tokenizer.protocol import AUDIO_AXES, CodeSpec
from ...tokenizer.weights import TORCH_SUFFIXES, load_exactly, read_state_dict
from ..codec.layers import Snake1d
from ..encodec.layers import elu
from ..encodec.model import SEANetDecoder, SEANetEncoder, fold_weight_norm
from ..io import prepare_waveform
from .config import seanet_settings, settings_from_config

FORMAT = "mmtok.audio.speechtokenizer"
EMA_EPSILON = 1e-5  # upstream EuclideanCodebook's epsilon in its Laplace-smoothed cluster sizes
# training-state buffers of upstream's EMA codebooks
_TRAINING_BUFFERS = ("inited", "cluster_size", "embed_avg")


def _celu(channels: int) -> nn.Module:
    del channels
    return nn.CELU(alpha=1.0)


ACTIVATION_FACTORIES = {"ELU": elu, "CELU": _celu, "Snake": Snake1d}


def _rename(key: str) -> str:
    """Upstream module names -> ours: `encoder.model.N` -> `encoder.layers.N`, the NormConv wrappers dropped."""
    key = re.sub(r"^(encoder|decoder)\.model\.", r"\1.layers.", key)
    return key.replace(".conv.conv.", ".conv.").replace(".convtr.convtr.", ".conv.")


def _codebook(state: Mapping[str, torch.Tensor], level: int, origin: str) -> torch.Tensor:
    """Level `level`'s code vectors: `embed`, or (when only the EMA sums are stored) embed_avg over upstream's
    smoothed cluster sizes, (n + eps) / (sum n + K eps) * sum n."""
    prefix = f"quantizer.vq.layers.{level}._codebook."
    if prefix + "embed" in state:
        book = state[prefix + "embed"].float()
    elif prefix + "embed_avg" in state and prefix + "cluster_size" in state:
        total, size = state[prefix + "embed_avg"].double(), state[prefix + "cluster_size"].double()
        n = size.sum()
        book = (total / ((size + EMA_EPSILON) / (n + size.numel() * EMA_EPSILON) * n).unsqueeze(1)).float()
    else:
        raise ValueError(f"{origin}: missing {prefix}embed (or {prefix}embed_avg with {prefix}cluster_size)")
    if book.dim() == 2 and not bool(book.any()):
        raise ValueError(f"{origin}: codebook {prefix}embed is all zeros (an untrained k-means-initialised codebook; "
                         f"inited={state.get(prefix + 'inited')!r})")
    return book


def to_ours(state: Mapping[str, torch.Tensor], n_q: int, origin: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Upstream tensors -> (our tensors, ignored training-state keys). Unknown quantizer keys are left in the
    result so that the strict load lists them."""
    folded = fold_weight_norm(state)
    levels = sorted({int(m.group(1)) for k in folded if (m := re.match(r"^quantizer\.vq\.layers\.(\d+)\.", k))})
    if levels != list(range(n_q)):
        raise ValueError(f"{origin}: the weights have {len(levels)} RVQ levels {levels[:12]}, the config says "
                         f"n_q={n_q}")
    ours, ignored = {}, []
    known = {f"quantizer.vq.layers.{q}._codebook.{b}" for q in range(n_q) for b in ("embed",) + _TRAINING_BUFFERS}
    for key, value in folded.items():
        if key in known:
            if not key.endswith(".embed"):
                ignored.append(key)
            continue
        ours[_rename(key)] = value
    books = [_codebook(folded, q, origin) for q in range(n_q)]
    if len({tuple(b.shape) for b in books}) != 1:
        raise ValueError(f"{origin}: the RVQ codebooks have different shapes {[list(b.shape) for b in books]}")
    ours["codebooks"] = torch.stack(books)
    return ours, ignored


def checkpoint_in(directory: pathlib.Path) -> pathlib.Path:
    """The one torch checkpoint of a release folder (SpeechTokenizer.pt in the release)."""
    found = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in TORCH_SUFFIXES)
    if len(found) != 1:
        raise ValueError(f"{directory}: a SpeechTokenizer folder holds config.json and one checkpoint "
                         f"({', '.join(TORCH_SUFFIXES)}), found {[p.name for p in found]}")
    return found[0]


class SpeechTokenizerCodec(nn.Module):
    """SpeechTokenizer: `encode(waveform, sample_rate) -> (n_q, frames)`, `decode(codes) -> (frames * hop,)`."""

    def __init__(self, settings: dict):
        super().__init__()
        self._settings = dict(settings)
        act = ACTIVATION_FACTORIES[settings["activation"]]
        seanet = seanet_settings(settings)
        self.encoder = SEANetEncoder(seanet, activation=act, bidirectional=settings["bidirectional"])
        self.decoder = SEANetDecoder(seanet, activation=act)
        dim, sem = settings["dimension"], settings["semantic_dimension"]
        self.transform = nn.Linear(dim, sem) if dim != sem else None
        self.codebooks = nn.Parameter(torch.zeros(settings["n_q"], settings["codebook_size"], dim),
                                      requires_grad=False)
        self.requires_grad_(False)
        self.eval()

    # ---------------------------------------------------------------------------------------- protocol
    @property
    def config(self) -> dict:
        return dict(self._settings)

    @property
    def sample_rate(self) -> int:
        return self._settings["sample_rate"]

    @property
    def hop_length(self) -> int:
        return math.prod(self._settings["strides"])

    @property
    def num_quantizers(self) -> int:
        return self._settings["n_q"]

    @property
    def device(self) -> torch.device:
        return self.codebooks.device

    @property
    def code_spec(self) -> CodeSpec:
        return CodeSpec("audio", AUDIO_AXES, (self._settings["codebook_size"],) * self.num_quantizers,
                        (self.hop_length,), sample_rate=self.sample_rate,
                        frame_rate=self.sample_rate / self.hop_length, extra={"semantic_codebooks": 1})

    # ------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_release(cls, config_path, checkpoint_path, *, device=None) -> "SpeechTokenizerCodec":
        """The release's two files (what `SpeechTokenizer.load_from_checkpoint(config_path, ckpt_path)` reads)."""
        config_path = pathlib.Path(os.fspath(config_path))
        checkpoint_path = pathlib.Path(os.fspath(checkpoint_path))
        settings = settings_from_config(read_config(config_path), str(config_path))
        state = read_state_dict(checkpoint_path)
        ours, ignored = to_ours(state, settings["n_q"], str(checkpoint_path))
        model = cls(settings)
        load_exactly(model, ours, str(checkpoint_path), ignored=ignored)
        return model.to(device) if device is not None else model

    def save_pretrained(self, directory):
        return save_folder(directory, FORMAT, self.config, self.state_dict())

    @classmethod
    def from_pretrained(cls, directory, *, device=None, dtype=None) -> "SpeechTokenizerCodec":
        _check_dtype(dtype, directory)
        saved = read_folder(directory, expected_format=FORMAT)
        model = cls(settings_from_config(saved.config, str(saved.config_path)))
        load_exactly(model, saved.tensors, str(saved.weights_path))
        return model.to(device) if device is not None else model

    # ------------------------------------------------------------------------------------------- checks
    def _levels(self, n_q: int | None, start: int) -> tuple[int, int]:
        total = self.num_quantizers
        n_q = total if n_q is None else n_q
        if not isinstance(start, int) or not isinstance(n_q, int) or not 0 <= start < n_q <= total:
            raise ValueError(f"levels must satisfy 0 <= start < n_q <= {total}, got start={start!r}, n_q={n_q!r}")
        return n_q, start

    def frames_for(self, samples: int) -> int:
        """Code frames of a clip of `samples` samples: ceil(samples / hop)."""
        return -(-int(samples) // self.hop_length)

    # ---------------------------------------------------------------------------------------- inference
    @torch.no_grad()
    def _encode_equal(self, audio: torch.Tensor, n_q: int, start: int) -> torch.Tensor:
        latent = self.encoder(audio).transpose(1, 2)  # (B, T, D)
        residual, codes = latent, []
        for book in self.codebooks[start:n_q]:
            idx = nearest_code(residual, book, metric="l2")[0]
            residual = residual - book[idx]
            codes.append(idx)
        return torch.stack(codes, dim=1)

    @torch.no_grad()
    def encode_batch(self, audio: torch.Tensor, lengths: Sequence[int] | None = None, *, n_q: int | None = None,
                     start: int = 0) -> torch.Tensor:
        """(B, 1, samples) float at the model's rate -> codes (B, levels, frames).

        `lengths` (samples per clip; right padding beyond them is ignored): clip b's codes are
        `codes[b, :, :frames_for(lengths[b])]`, equal to encoding it alone (clips of one length run together;
        the reflect padding and the BiLSTM see each clip's true end), and the frames past it are 0."""
        n_q, start = self._levels(n_q, start)
        if audio.dim() != 3 or audio.shape[1] != 1 or audio.shape[-1] == 0:
            raise ValueError(f"audio must be (B, 1, samples) with samples > 0, got {tuple(audio.shape)}")
        audio = audio.to(self.device, torch.float32)
        total = audio.shape[-1]
        if lengths is None:
            return self._encode_equal(audio, n_q, start)
        lengths = [int(n) for n in lengths]
        if len(lengths) != audio.shape[0] or not all(0 < n <= total for n in lengths):
            raise ValueError(f"lengths must give 1..{total} samples for each of the {audio.shape[0]} clips, "
                             f"got {lengths}")
        out = torch.zeros(audio.shape[0], n_q - start, self.frames_for(max(lengths)), dtype=torch.int64,
                          device=self.device)
        for n in sorted(set(lengths)):
            rows = [b for b, m in enumerate(lengths) if m == n]
            out[rows, :, : self.frames_for(n)] = self._encode_equal(audio[rows, :, :n], n_q, start)
        return out

    def encode(self, waveform, sample_rate: int, *, n_q: int | None = None, start: int = 0) -> torch.Tensor:
        """One clip (samples,) or (channels, samples; averaged), any rate (resampled) -> codes (levels, frames).

        `n_q` ends and `start` begins the RVQ levels used (upstream's `n_q` / `st`; see the module docstring)."""
        audio = prepare_waveform(waveform, sample_rate, self.sample_rate)
        return self.encode_batch(audio.view(1, 1, -1), n_q=n_q, start=start)[0]

    def _latent(self, codes: torch.Tensor, start: int, name: str) -> torch.Tensor:
        """codes (B, K, T) of levels start..start+K-1 -> the summed code vectors (B, D, T), checked."""
        codes = torch.as_tensor(codes)
        if codes.dtype.is_floating_point or codes.dtype == torch.bool:
            raise ValueError(f"{name}: expected integer codes, got dtype {codes.dtype}")
        total = self.num_quantizers
        if codes.dim() != 3 or codes.shape[-1] == 0:
            raise ValueError(f"{name}: expected shape (B, levels, frames) with frames > 0, got {tuple(codes.shape)}")
        if not isinstance(start, int) or not 0 <= start < total or not 1 <= codes.shape[1] <= total - start:
            raise ValueError(f"{name}: {codes.shape[1]} codebooks from level start={start!r}; this SpeechTokenizer "
                             f"has {total} (levels start..start+K-1 must lie in 0..{total - 1})")
        size = self._settings["codebook_size"]
        low, high = int(codes.min()), int(codes.max())
        if low < 0 or high >= size:
            raise ValueError(f"{name}: codes must lie in 0..{size - 1}, got {low}..{high}")
        codes = codes.to(self.device, torch.int64)
        latent = self.codebooks[start][codes[:, 0]]
        for k in range(1, codes.shape[1]):
            latent = latent + self.codebooks[start + k][codes[:, k]]
        return latent.transpose(1, 2)

    @torch.no_grad()
    def decode_batch(self, codes, frames: Sequence[int] | None = None, *, start: int = 0) -> torch.Tensor:
        """codes (B, K, frames) -> audio (B, 1, frames * hop). `frames` (per clip): clip b is decoded from its
        first frames[b] frames alone (equal to decoding it alone; samples past frames[b] * hop are 0)."""
        latent = self._latent(codes, start, "codes")
        if frames is None:
            return self.decoder(latent)
        frames = [int(n) for n in frames]
        total = latent.shape[-1]
        if len(frames) != latent.shape[0] or not all(0 < n <= total for n in frames):
            raise ValueError(f"frames must give 1..{total} frames for each of the {latent.shape[0]} clips, "
                             f"got {frames}")
        out = torch.zeros(latent.shape[0], 1, max(frames) * self.hop_length, device=self.device)
        for n in sorted(set(frames)):
            rows = [b for b, m in enumerate(frames) if m == n]
            out[rows, :, : n * self.hop_length] = self.decoder(latent[rows, :, :n])
        return out

    def decode(self, codes, *, start: int = 0) -> torch.Tensor:
        """codes (K, frames) of levels start..start+K-1 -> waveform (frames * hop,). `codes[:1]` decodes RVQ-1
        alone (content); `decode(codes[1:], start=1)` the acoustic levels alone."""
        codes = torch.as_tensor(codes)
        if codes.dim() != 2:
            raise ValueError(f"codes must be (levels, frames) for one clip, got {tuple(codes.shape)}")
        return self.decode_batch(codes.unsqueeze(0), start=start)[0, 0]

    @torch.no_grad()
    def semantic_features(self, waveform, sample_rate: int) -> torch.Tensor:
        """RVQ-1's code vectors through `transform` (the head distilled to HuBERT): (frames, semantic_dimension);
        upstream's `forward(x)[2]`."""
        codes = self.encode(waveform, sample_rate, n_q=1)
        vectors = self.codebooks[0][codes[0]]
        return self.transform(vectors) if self.transform is not None else vectors


def _check_dtype(dtype, path) -> None:
    if dtype is not None and dtype not in ("float32", "fp32", torch.float32):
        raise ValueError(f"{path}: the SpeechTokenizer codec runs in float32; dtype={dtype!r} is not supported")


def load_speechtokenizer(path, *, device=None, dtype=None, config_path=None, **options) -> SpeechTokenizerCodec:
    """`mmtok.load` entry: a release folder (config.json + one .pt), or the .pt file with `config_path=` (default:
    the config.json beside it)."""
    if options:
        raise ValueError(f"{path}: unknown options for a SpeechTokenizer checkpoint: {sorted(options)}")
    _check_dtype(dtype, path)
    path = pathlib.Path(os.fspath(path))
    if path.is_dir():
        checkpoint = checkpoint_in(path)
        config_path = path / "config.json" if config_path is None else config_path
    else:
        checkpoint = path
        config_path = path.parent / "config.json" if config_path is None else config_path
    return SpeechTokenizerCodec.from_release(config_path, checkpoint, device=device)
