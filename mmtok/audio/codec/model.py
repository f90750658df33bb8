"""`AudioCodec`: DAC's encoder / residual VQ / decoder with DAC's exact numerics, for 16 kHz token streams.

Codes are (n_codebooks, frames) int64 at frame_rate = sample_rate / hop_length (50/s for the 16 kHz model).
Waveforms of any rate and channel count go through `mmtok.audio.io.prepare_waveform` (downmix, resample), are
padded with zeros to a whole number of hops as DAC's `preprocess` does, and are processed in chunks whose
results equal a one-shot pass (see `chunking.py`), so long files run in bounded memory.
"""
from __future__ import annotations

import os
import pathlib

import soundfile
import torch
import torch.nn.functional as F
from torch import nn

from ...tokenizer.fields import build_checked
from ...tokenizer.folder import read_folder, save_folder
from ...tokenizer.protocol import AUDIO_AXES, CodeSpec
from ..io import load_audio, prepare_waveform
from .blocks import Decoder, Encoder
from .checkpoint import field_checks, load_state_dict_exactly, read_dac_file
from .chunking import decode_chunked, encode_chunked, output_length
from .config import CodecConfig
from .quantizer import ResidualVectorQuantizer

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
FORMAT = "mmtok.AudioCodec"
DEFAULT_ENCODE_CHUNK_SECONDS = 6.0  # the largest activation (64 x 96k samples) stays under 32 MiB
DEFAULT_DECODE_CHUNK_SECONDS = 4.0  # likewise 96 x 64k samples


class AudioCodec(nn.Module):
    """Residual-VQ audio codec with DAC's architecture; state_dict keys equal DAC's weight-file keys."""

    def __init__(self, config: CodecConfig | None = None, **kwargs):
        super().__init__()
        if config is None:
            config = CodecConfig(**kwargs)
        elif kwargs:
            raise TypeError("pass either a CodecConfig or keyword arguments, not both")
        self._config = config
        self.encoder = Encoder(config.encoder_dim, list(config.encoder_rates), config.latent_dim)
        self.quantizer = ResidualVectorQuantizer(config.latent_dim, config.n_codebooks, config.codebook_size,
                                                 config.codebook_dim)
        self.decoder = Decoder(config.latent_dim, config.decoder_dim, list(config.decoder_rates))
        self.eval()

    # -- properties -----------------------------------------------------------------------------------------
    @property
    def code_spec(self) -> CodeSpec:
        """The Tokenizer protocol's description: (n_codebooks, frames) codes, hop_length samples per frame.
        (decode also takes a prefix of the codebooks: a lower bitrate.)"""
        return CodeSpec("audio", AUDIO_AXES, (self.codebook_size,) * self.n_codebooks, (self.hop_length,),
                        sample_rate=self.sample_rate, frame_rate=self.frame_rate)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def n_codebooks(self) -> int:
        return self._config.n_codebooks

    @property
    def codebook_size(self) -> int:
        return self._config.codebook_size

    @property
    def sample_rate(self) -> int:
        return self._config.sample_rate

    @property
    def hop_length(self) -> int:
        return self._config.hop_length

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def config(self) -> dict:
        return {"format": FORMAT, **self._config.to_dict()}

    # -- loading and saving -----------------------------------------------------------------------------------
    @classmethod
    def from_dac(cls, path) -> "AudioCodec":
        """Load DAC's own weight file (e.g. the user-downloaded weights_16khz.pth); strict on keys and shapes."""
        config, state_dict = read_dac_file(path)
        codec = cls._checked(config, state_dict, str(path))
        load_state_dict_exactly(codec, state_dict, str(path))
        return codec.eval()

    @classmethod
    def from_state_dict(cls, config: CodecConfig, state_dict: dict, source: str) -> "AudioCodec":
        """The codec of `config` with DAC-named weights (weight_g / weight_v), strict on keys and shapes."""
        codec = cls._checked(config, state_dict, source)
        load_state_dict_exactly(codec, state_dict, source)
        return codec.eval()

    @classmethod
    def _checked(cls, config: CodecConfig, state_dict: dict, source: str) -> "AudioCodec":
        """The codec of `config`, built only once the weights are known to fit it (see tokenizer.fields)."""
        return build_checked(lambda: cls(config), field_checks(config, state_dict), source)

    def save_pretrained(self, directory) -> pathlib.Path:
        """Write config.json + model.safetensors (DAC's key names) through the shared save layer."""
        return save_folder(directory, FORMAT, self._config.to_dict(), self.state_dict(), version=1)

    @classmethod
    def from_pretrained(cls, directory, *, device=None, dtype=None) -> "AudioCodec":
        if dtype is not None and dtype not in (torch.float32, "float32", "fp32"):
            raise ValueError(f"{directory}: the codec runs in float32; dtype={dtype!r} is not supported")
        saved = read_folder(directory, expected_format=FORMAT, max_version=1)
        config = CodecConfig.from_dict(saved.config, source=str(saved.config_path))
        codec = cls._checked(config, saved.tensors, str(saved.weights_path))
        load_state_dict_exactly(codec, saved.tensors, str(saved.weights_path))
        codec.eval()
        return codec.to(device) if device is not None else codec

    # -- encode / decode ----------------------------------------------------------------------------------------
    def _chunk_frames(self, seconds: float | None, default: float, name: str) -> int:
        seconds = default if seconds is None else seconds
        if not seconds > 0:
            raise ValueError(f"{name} must be > 0 seconds, got {seconds}")
        return max(1, round(seconds * self.frame_rate))

    def preprocess(self, waveform, sample_rate: int) -> torch.Tensor:
        """Any PCM (samples,) / (channels, samples) -> float (1, 1, frames * hop) at self.sample_rate, zero-padded."""
        audio = prepare_waveform(waveform, sample_rate, self.sample_rate)
        pad = -audio.shape[-1] % self.hop_length
        return F.pad(audio, (0, pad)).view(1, 1, -1)

    @torch.no_grad()
    def encode(self, waveform, sample_rate: int, *, chunk_seconds: float | None = None) -> torch.Tensor:
        """Waveform -> codes int64 (n_codebooks, ceil(samples / hop_length)) (samples after resampling)."""
        chunk = self._chunk_frames(chunk_seconds, DEFAULT_ENCODE_CHUNK_SECONDS, "chunk_seconds")
        param = next(self.parameters())
        audio = self.preprocess(waveform, sample_rate).to(param.device, param.dtype)
        codes = encode_chunked(self.encoder, self.quantizer.encode, audio, self.hop_length, chunk)
        return codes[0]

    def _check_codes(self, codes) -> torch.Tensor:
        codes = torch.as_tensor(codes)
        if codes.ndim != 2:
            raise ValueError(f"codes: expected shape (n_codebooks, frames), got {tuple(codes.shape)}")
        if codes.dtype.is_floating_point or codes.dtype == torch.bool or codes.is_complex():
            raise ValueError(f"codes: expected an integer tensor, got {codes.dtype}")
        n, frames = codes.shape
        if not 1 <= n <= self.n_codebooks:
            raise ValueError(f"codes: expected 1..{self.n_codebooks} codebooks (a prefix), got {n}")
        if frames == 0:
            raise ValueError("codes: 0 frames")
        low, high = int(codes.min()), int(codes.max())
        if low < 0 or high >= self.codebook_size:
            raise ValueError(f"codes: values must lie in [0, {self.codebook_size}), got min {low}, max {high}")
        return codes.long()

    @torch.no_grad()
    def decode(self, codes, *, chunk_seconds: float | None = None) -> torch.Tensor:
        """Codes (n, frames), n <= n_codebooks (the first n: lower bitrate) -> float waveform (samples,).

        samples = decoded_length(frames): 320 * frames - 8 for the 16 kHz rates, as DAC's decoder gives.
        """
        chunk = self._chunk_frames(chunk_seconds, DEFAULT_DECODE_CHUNK_SECONDS, "chunk_seconds")
        codes = self._check_codes(codes).to(next(self.parameters()).device)

        def dequantize(lo: int, hi: int) -> torch.Tensor:
            return self.quantizer.decode(codes[None, :, lo:hi])

        wave = decode_chunked(self.decoder, dequantize, codes.shape[1], chunk)
        return wave[0, 0]

    def decoded_length(self, frames: int) -> int:
        """Samples that `decode` returns for `frames` code frames."""
        return output_length(self.decoder, frames)

    def encode_file(self, path, *, chunk_seconds: float | None = None) -> torch.Tensor:
        """Read an audio file (any rate / channels soundfile reads) -> codes (n_codebooks, frames)."""
        return self.encode(load_audio(path, self.sample_rate), self.sample_rate, chunk_seconds=chunk_seconds)

    def decode_to_file(self, codes, path, *, chunk_seconds: float | None = None, subtype: str | None = None):
        """Decode codes and write the waveform at self.sample_rate (format from the file extension)."""
        path = pathlib.Path(os.fspath(path))
        if not path.parent.is_dir():
            raise FileNotFoundError(f"output directory does not exist: {path.parent}")
        wave = self.decode(codes, chunk_seconds=chunk_seconds).cpu().numpy()
        soundfile.write(str(path), wave, self.sample_rate, subtype=subtype)
        return path

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """Alias of decode (codes -> waveform), so the codec can sit in an nn.Sequential after a generator."""
        return self.decode(codes)
