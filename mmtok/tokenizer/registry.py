"""`mmtok.load`: one entry point for every checkpoint layout mmtok reads, detected from the files themselves.

A `Layout` names a way checkpoints are published (mmtok's own folder, a taming `.ckpt` + yaml, a LlamaGen `.pt`,
a Hugging Face `transformers` folder of a given `model_type`, a `diffusers` folder of a given `_class_name`,
...), how to recognise it cheaply (`matches`, which reads at most a config file), and the function that loads
it (`loader`, "module:function", imported only when used, so this module imports no tokenizer family).

Every loader is called as `loader(path, device=..., dtype=..., **options)` and returns an object following the
`Tokenizer` protocol. Families add their layouts to `LAYOUTS`; the order is the detection order.
"""
from __future__ import annotations

import importlib
import os
import pathlib
import re
from dataclasses import dataclass
from typing import Callable

from ..paths import errors_naming
from .folder import CONFIG_NAME, folder_format, read_config
from .protocol import code_spec_of

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Probe:
    """What detection looks at: the path, and the parsed `config.json` of a folder (None for a file or when
    the folder has none or it is unreadable)."""

    path: pathlib.Path
    config: dict | None

    @property
    def is_dir(self) -> bool:
        return self.path.is_dir()

    @property
    def suffix(self) -> str:
        return self.path.suffix.lower()

    @property
    def model_type(self) -> str | None:
        """A `transformers` config's `model_type`."""
        return (self.config or {}).get("model_type")

    @property
    def class_name(self) -> str | None:
        """A `diffusers` config's `_class_name`."""
        return (self.config or {}).get("_class_name")

    @property
    def mmtok_format(self) -> str | None:
        return folder_format(self.config) if self.config is not None else None


@dataclass(frozen=True)
class Layout:
    """A published checkpoint layout: its name (`format=` in `load`), what it covers, how it is recognised and
    the function that loads it."""

    name: str
    description: str
    matches: Callable[[Probe], bool]
    loader: str  # "module:function"

    def load(self, path, **options):
        module, _, function = self.loader.partition(":")
        return getattr(importlib.import_module(module), function)(path, **options)


def _mmtok_folder(probe: Probe) -> bool:
    return probe.is_dir and probe.mmtok_format is not None


def _transformers_dac(probe: Probe) -> bool:
    """A transformers DacModel folder (config.json model_type 'dac')."""
    return probe.is_dir and probe.model_type == "dac"


def _encodec(probe: Probe) -> bool:
    """A transformers EncodecModel folder (config.json model_type 'encodec')."""
    return probe.is_dir and probe.model_type == "encodec"


def _mimi(probe: Probe) -> bool:
    """A transformers MimiModel folder (config.json model_type 'mimi')."""
    return probe.is_dir and probe.model_type == "mimi"


def _speechtokenizer(probe: Probe) -> bool:
    """A SpeechTokenizer release: a folder whose config.json has its model fields (n_filters, strides,
    dimension, semantic_dimension, n_q, ...), or a .pt / .pth / .bin file with such a config.json beside it."""
    from ..audio.speechtokenizer.config import is_speechtokenizer_config

    if probe.is_dir:
        return is_speechtokenizer_config(probe.config)
    if probe.suffix not in (".pt", ".pth", ".bin") or not (probe.path.parent / CONFIG_NAME).is_file():
        return False
    try:
        return is_speechtokenizer_config(read_config(probe.path.parent / CONFIG_NAME))
    except (OSError, ValueError):
        return False


def _snac(probe: Probe) -> bool:
    """A SNAC Hub folder (hubertsiuzdak/snac_24khz, ...): config.json with SNAC's fields (encoder_rates,
    decoder_rates, vq_strides, codebook_size, ...), or a .bin / .pt / .pth / .safetensors with such a config.json
    beside it."""
    from ..audio.snac.config import is_snac_config

    if probe.is_dir:
        return is_snac_config(probe.config)
    if probe.suffix not in (".bin", ".pt", ".pth", ".safetensors") or not (probe.path.parent / CONFIG_NAME).is_file():
        return False
    try:
        return is_snac_config(read_config(probe.path.parent / CONFIG_NAME))
    except (OSError, ValueError):
        return False


def _cosmos_video(probe: Probe) -> bool:
    """A Cosmos-Tokenizer video release folder: encoder.jit traced from its 3D (layers3d) network."""
    if not (probe.is_dir and (probe.path / "encoder.jit").is_file()):
        return False
    from ..video.cosmos import is_cosmos_video

    return is_cosmos_video(probe.path)


def _cosmos(probe: Probe) -> bool:
    """A Cosmos-Tokenizer release folder: encoder.jit (and decoder.jit), TorchScript read as weights."""
    return probe.is_dir and (probe.path / "encoder.jit").is_file()


def _magvit2(probe: Probe) -> bool:
    """An Open-MAGVIT2 Lightning .ckpt: the one yaml beside it names its lfqgan model."""
    if probe.is_dir or probe.suffix != ".ckpt":
        return False
    from ..image.magvit2 import is_magvit2_config

    yamls = sorted(probe.path.parent.glob("*.yaml"))
    return len(yamls) == 1 and is_magvit2_config(yamls[0])


def _taming(probe: Probe) -> bool:
    """A `.ckpt` file, or a folder without a config.json holding exactly one `.ckpt` and one `.yaml` (the
    original Chameleon release's `tokenizer/` folder: vqgan.ckpt + vqgan.yaml)."""
    if not probe.is_dir:
        return probe.suffix == ".ckpt"
    return probe.config is None and not (probe.path / CONFIG_NAME).exists() and \
        len(list(probe.path.glob("*.ckpt"))) == 1 and len(list(probe.path.glob("*.yaml"))) == 1


def _torch_payload_keys(probe: Probe) -> set[str] | None:
    """Top-level keys of a single-file torch checkpoint (read weights-only, memory-mapped where the file allows,
    so probing a large checkpoint is cheap); None when the file cannot be read as one."""
    import torch

    try:
        try:
            payload = torch.load(probe.path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
            payload = torch.load(probe.path, map_location="cpu", weights_only=True)
    except Exception:  # unreadable, truncated, needs code to unpickle: the loader reports it with the file name
        return None
    return {str(k) for k in payload} if isinstance(payload, dict) else set()


def _transformers_family(probe: Probe, family: str) -> bool:
    """A transformers folder whose config.json model_type is `family`'s VQ (e.g. chameleon_vqgan) or full model."""
    return probe.is_dir and probe.model_type in (f"{family}_vqgan", family)


def _emu3(probe: Probe) -> bool:
    """A transformers Emu3VQVAE config, alone or as the vq_config of a full Emu3 model."""
    return probe.is_dir and (probe.model_type == "emu3_vqgan" or (
        probe.model_type == "emu3" and isinstance((probe.config or {}).get("vq_config"), dict)))


def _emu35_ibq(probe: Probe) -> bool:
    """transformers' Apertus 1.5 / Emu3.5 IBQ vision tokenizer folder, or a whole Apertus 1.5 model folder."""
    return probe.is_dir and (probe.model_type == "apertus1p5_vision_tokenizer" or (
        probe.model_type == "apertus1p5" and isinstance((probe.config or {}).get("vision_config"), dict)))


def _dac(probe: Probe) -> bool:
    if probe.is_dir or probe.suffix != ".pth":
        return False
    keys = _torch_payload_keys(probe)
    return keys is not None and {"state_dict", "metadata"} <= keys


def _var(probe: Probe) -> bool:
    keys = (_torch_payload_keys(probe) or set()) if not probe.is_dir and probe.suffix in (".pth", ".pt") else set()
    return {"encoder.conv_in.weight", "quantize.embedding.weight"} <= keys and (
        "quantize.ema_vocab_hit_SV" in keys or any(k.startswith("quantize.quant_resi.") for k in keys))


def _diffusers_vq(probe: Probe) -> bool:
    """A diffusers VQModel folder (config `_class_name` "VQModel"), or a pipeline folder with one in vqvae/ / movq/."""
    if not probe.is_dir:
        return False
    if probe.config is not None:
        return probe.class_name == "VQModel"
    for sub in ("vqvae", "movq"):
        try:
            if read_config(probe.path / sub / CONFIG_NAME).get("_class_name") == "VQModel":
                return True
        except (OSError, ValueError):
            pass
    return False


def _llamagen(probe: Probe) -> bool:
    """A `.pt` / `.pth` / `.bin` file holding {'model': ...} or {'ema': ...}, or one that cannot be read at all
    (then LlamaGen's loader names the file and why it is unreadable instead of a vague 'unknown layout')."""
    if probe.is_dir or probe.suffix not in (".pt", ".pth", ".bin"):
        return False
    keys = _torch_payload_keys(probe)
    return keys is None or bool(keys & {"model", "ema"})


# Detection order: mmtok's own folders, then the Hugging Face folders by model_type / _class_name, then the
# original single-file layouts by suffix. Families add their entries here.
LAYOUTS: list[Layout] = [
    Layout("mmtok", "mmtok's own folder (config.json with format 'mmtok.*' + model.safetensors), any family",
           _mmtok_folder, "mmtok.tokenizer.loaders:load_mmtok_folder"),
    Layout("chameleon", "transformers ChameleonVQVAE folder (model_type chameleon_vqgan, or a full chameleon model): "
           "Chameleon, Anole, Lumina-mGPT; decoding needs decoder_checkpoint= (the original vqgan.ckpt)",
           lambda probe: _transformers_family(probe, "chameleon"), "mmtok.image.transformers_vq:load_chameleon"),
    Layout("janus", "transformers JanusVQVAE folder (model_type janus_vqgan, or a full janus model): Janus, Janus-Pro",
           lambda probe: _transformers_family(probe, "janus"), "mmtok.image.transformers_vq:load_janus"),
    Layout("emu3", "transformers Emu3VQVAE folder (config.json model_type 'emu3_vqgan'; or a full Emu3 model, "
           "model_type 'emu3' with vq_config): Emu3 video + image tokenizer", _emu3,
           "mmtok.video.emu3.loader:load_emu3"),
    Layout("emu35-ibq", "transformers Apertus1p5VisionTokenizerModel folder (Emu3.5's IBQ encoder; model_type "
           "'apertus1p5_vision_tokenizer', or a full Apertus 1.5 model): encode only",
           _emu35_ibq, "mmtok.image.emu35_ibq:load_emu35_ibq"),
    Layout("diffusers-vq", "diffusers VQModel folder (aMUSEd, VQ-Diffusion, Kandinsky MoVQ): config.json with "
           "_class_name 'VQModel' + diffusion_pytorch_model.safetensors / .bin / sharded index",
           _diffusers_vq, "mmtok.image.diffusers_vq.tokenizer:load_diffusers_vq"),
    Layout("dac-transformers", "transformers DacModel folder (model_type 'dac'): descript/dac_16khz, 24khz, 44khz",
           _transformers_dac, "mmtok.audio.codec.transformers_dac:load_transformers_dac"),
    Layout("encodec", "transformers EncodecModel folder (model_type 'encodec'): EnCodec 24 kHz (MusicGen, AudioGen, "
           "Bark); chunked 48 kHz configs refused for now", _encodec, "mmtok.audio.encodec.model:load_encodec"),
    Layout("mimi", "transformers MimiModel folder (model_type 'mimi', e.g. kyutai/mimi): Mimi, the codec of Moshi, "
           "Sesame CSM, Kyutai STT / TTS; option num_quantizers= (a prefix of the levels)", _mimi,
           "mmtok.audio.mimi.model:load_mimi"),
    Layout("speechtokenizer", "SpeechTokenizer release (AnyGPT): a folder with its config.json + one .pt "
           "(e.g. speechtokenizer_hubert_avg/: config.json + SpeechTokenizer.pt), or the .pt with config_path= "
           "(default: the config.json beside it)", _speechtokenizer,
           "mmtok.audio.speechtokenizer.model:load_speechtokenizer"),
    Layout("snac", "SNAC Hub folder (hubertsiuzdak/snac_24khz, snac_32khz, snac_44khz: config.json + "
           "pytorch_model.bin; Orpheus TTS, mini-omni), or the weight file with config_path= (default: the "
           "config.json beside it)", _snac, "mmtok.audio.snac.model:load_snac"),
    Layout("cosmos-video", "NVIDIA Cosmos-Tokenizer discrete video folder (DV: encoder.jit + decoder.jit of the "
           "causal 3D network, read as weights; options spatial_compression=, temporal_compression=)",
           _cosmos_video, "mmtok.video.cosmos:load_cosmos_video"),
    Layout("cosmos", "NVIDIA Cosmos-Tokenizer discrete image folder (encoder.jit + decoder.jit, read as weights)",
           _cosmos, "mmtok.image.cosmos:load_cosmos"),
    Layout("magvit2", "Open-MAGVIT2 Lightning .ckpt + its yaml (lfqgan.VQModel; options weights='ema'|'raw')",
           _magvit2, "mmtok.image.magvit2:load_magvit2"),
    Layout("taming", "taming-transformers / original Chameleon VQ-GAN: Lightning .ckpt + its yaml config",
           _taming, "mmtok.tokenizer.loaders:load_taming"),
    Layout("dac", "descript-audio-codec weight file (.pth with 'state_dict' and 'metadata')",
           _dac, "mmtok.tokenizer.loaders:load_dac"),
    Layout("var", "VAR's VQVAE state dict (.pth, e.g. vae_ch160v4096z32.pth; options scales=, phi_ratio=)",
           _var, "mmtok.image.var:load_var"),
    Layout("llamagen", "LlamaGen VQ model checkpoint (.pt / .pth / .bin holding {'model'} or {'ema'})",
           _llamagen, "mmtok.tokenizer.loaders:load_llamagen"),
]


def layout_names() -> list[str]:
    """The names `format=` takes, in detection order."""
    return [layout.name for layout in LAYOUTS]


def _probe(path: pathlib.Path) -> Probe:
    config = None
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        try:
            config = read_config(path / CONFIG_NAME)
        except ValueError:
            config = None
    return Probe(path, config)


def _describe(probe: Probe) -> str:
    if not probe.is_dir:
        return f"a file with suffix {probe.suffix or '(none)'}"
    if probe.config is None:
        entries = sorted(p.name for p in probe.path.iterdir())[:8]
        return f"a folder without a readable {CONFIG_NAME} (holding {entries})"
    keys = {k: probe.config[k] for k in ("format", "model_type", "_class_name") if k in probe.config}
    return f"a folder whose {CONFIG_NAME} has {keys or 'none of format / model_type / _class_name'}"


def _checked_path(path) -> pathlib.Path:
    """`path` as a local Path; a URL or a missing path that looks like a Hub id is refused with what to do."""
    text = os.fspath(path)
    if not isinstance(text, str):
        text = os.fsdecode(text)
    if "://" in text:
        raise ValueError(f"{text!r}: mmtok.load takes a local file or folder (nothing is downloaded)")
    p = pathlib.Path(text)
    if not p.exists():
        if _HUB_ID.match(text):
            raise ValueError(f"{text!r} is not a local path; it looks like a Hugging Face Hub id. mmtok downloads "
                             f"nothing: download the folder first (e.g. `huggingface-cli download {text} "
                             f"--local-dir DIR`) and pass DIR")
        raise FileNotFoundError(f"tokenizer not found: {text}")
    return p


def detect_layout(path) -> Layout:
    """The layout of a local file or folder; ValueError saying what was found and which layouts exist."""
    probe = _probe(_checked_path(path))
    for layout in LAYOUTS:
        if layout.matches(probe):
            return layout
    raise ValueError(f"{probe.path}: no known tokenizer layout ({_describe(probe)}); known layouts: "
                     + "; ".join(f"{layout.name} ({layout.description})" for layout in LAYOUTS))


def load(path, *, format: str | None = None, device=None, dtype=None, **options):
    """Load the tokenizer at `path` (a file or folder in any supported layout) following the `Tokenizer`
    protocol. `format` forces a layout by name (see `LAYOUTS`); `device` and `dtype` set where and in which
    precision it runs; other options go to the layout's loader. Nothing is fetched from a network."""
    p = _checked_path(path)
    if format is None:
        layout = detect_layout(p)
    else:
        named = {layout.name: layout for layout in LAYOUTS}
        if format not in named:
            raise ValueError(f"format={format!r} is not a known layout; known: {', '.join(named)}")
        layout = named[format]
    with errors_naming(p, f"{layout.name} tokenizer"):  # one exception type, naming the path, for every layout
        tokenizer = layout.load(p, device=device, dtype=dtype, **options)
    code_spec_of(tokenizer, f"{p} ({layout.name} layout)")
    return tokenizer
