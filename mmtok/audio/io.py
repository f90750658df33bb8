"""Audio in: read files with soundfile, turn any PCM array into mono float32 at 16 kHz.

Everything the tokenizers see passes through `prepare_waveform`, so int16/int32/uint8 PCM,
float64, multi-channel audio and other sample rates are all handled (and rejected with a
message naming the file or argument) in one place.
"""
from __future__ import annotations

import pathlib

import numpy as np
import soundfile
import torch

from ..paths import open_failure, regular_file
from .resample import resample

SAMPLE_RATE = 16000
MAX_CHANNELS = 64  # more rows than this in a 2-D waveform means it was passed as (samples, channels)

# full-scale value of each integer PCM type: float = (int - offset) / scale
_INT_SCALE = {
    torch.uint8: (128.0, 128.0),
    torch.int8: (0.0, 128.0),
    torch.int16: (0.0, 32768.0),
    torch.int32: (0.0, 2147483648.0),
    torch.int64: (0.0, 9223372036854775808.0),
}


def _as_tensor(waveform, name: str) -> torch.Tensor:
    if isinstance(waveform, torch.Tensor):
        return waveform.detach().cpu()
    if isinstance(waveform, np.ndarray):
        if waveform.dtype == np.uint16 or waveform.dtype == np.uint32:
            raise ValueError(f"{name}: unsupported PCM dtype {waveform.dtype} (use signed ints, uint8 or float)")
        return torch.from_numpy(np.ascontiguousarray(waveform))
    if isinstance(waveform, (list, tuple)):
        return torch.as_tensor(np.asarray(waveform, dtype=np.float32))
    raise TypeError(f"{name}: expected a torch.Tensor or numpy array of samples, got {type(waveform).__name__}")


def to_float(waveform: torch.Tensor, name: str = "waveform") -> torch.Tensor:
    """Integer PCM -> float32 in [-1, 1); float types -> float32 as they are."""
    if waveform.dtype in _INT_SCALE:
        offset, scale = _INT_SCALE[waveform.dtype]
        return ((waveform.to(torch.float64) - offset) / scale).to(torch.float32)
    if waveform.dtype == torch.bool or waveform.is_complex():
        raise ValueError(f"{name}: unsupported sample dtype {waveform.dtype}")
    return waveform.to(torch.float32)


def prepare_waveform(waveform, sample_rate, target_rate: int = SAMPLE_RATE, *, name: str = "waveform",
                     mono: bool = True) -> torch.Tensor:
    """Any PCM (samples,) or (channels, samples) array -> float32 (samples,) at target_rate.

    Integer PCM is scaled to [-1, 1), channels are averaged (unless mono=False, which returns
    (channels, samples)), and other sample rates are resampled with soxr. Raises ValueError
    naming `name` for empty, non-finite or wrongly shaped input.
    """
    tensor = _as_tensor(waveform, name)
    if tensor.ndim == 0 or tensor.ndim > 2:
        raise ValueError(f"{name}: expected shape (samples,) or (channels, samples), got {tuple(tensor.shape)}")
    if tensor.ndim == 2 and tensor.shape[0] > MAX_CHANNELS:
        raise ValueError(f"{name}: shape {tuple(tensor.shape)} has {tensor.shape[0]} channels; "
                         f"pass (channels, samples), e.g. waveform.T")
    if tensor.shape[-1] == 0 or tensor.numel() == 0:
        raise ValueError(f"{name}: audio is empty (0 samples)")
    tensor = to_float(tensor, name)
    if not torch.isfinite(tensor.sum()) and not torch.isfinite(tensor).all():  # the sum is the fast check
        raise ValueError(f"{name}: audio contains NaN or infinite samples")
    if tensor.ndim == 2 and mono:
        tensor = tensor.mean(dim=0)
    out = resample(tensor, sample_rate, target_rate)
    if out.shape[-1] == 0:
        raise ValueError(f"{name}: audio is too short to resample from {sample_rate} to {target_rate} Hz")
    return out.contiguous()


def _open_error(path: pathlib.Path, exc: Exception) -> Exception:
    os_reason = open_failure(path, "audio file")  # libsndfile says only "System error." for these
    if os_reason is not None:
        return PermissionError(os_reason) if "ermission" in os_reason else ValueError(os_reason)
    return ValueError(f"{path}: cannot read audio ({exc}); supported formats are those of libsndfile "
                      f"{soundfile.__libsndfile_version__}: {', '.join(sorted(soundfile.available_formats()))}")


def audio_info(path) -> soundfile._SoundFileInfo:
    """Sample rate, channels and frame count of an audio file, without reading the samples."""
    path = existing_file(path)
    try:
        return soundfile.info(str(path))
    except (RuntimeError, soundfile.LibsndfileError, TypeError) as exc:
        raise _open_error(path, exc) from None


def existing_file(path, what: str = "audio file") -> pathlib.Path:
    """path as a Path when it is a readable regular file; otherwise the error of `mmtok.paths.regular_file`
    (not found, directory, permission denied, symlink loop, device or FIFO), naming it and what was expected."""
    return regular_file(path, what)


def load_audio(path, sample_rate: int = SAMPLE_RATE, mono: bool = True) -> torch.Tensor:
    """Read wav/flac/ogg/mp3/... with soundfile -> float32 (samples,) at sample_rate (or (channels, samples))."""
    path = existing_file(path)
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, TypeError) as exc:
        raise _open_error(path, exc) from None
    if data.shape[0] == 0:
        raise ValueError(f"{path}: audio file is empty (0 samples)")
    return prepare_waveform(data.T, rate, sample_rate, name=str(path), mono=mono)
