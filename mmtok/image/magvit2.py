"""Open-MAGVIT2 image tokenizers (TencentARC's `lfqgan.VQModel`): lookup-free quantization, 2^18 implicit codes.

The network is MAGVIT-v2's, not taming's: bias-free ResNet convolutions, no attention, stride-2 3x3 convolutions
(symmetric padding) to downsample, a 3x3 convolution to 4x the channels and a depth-to-space (DCR order) to
upsample, and in the decoder an adaptive GroupNorm before each level whose scale and shift come from the
quantized latent's per-channel standard deviation (unbiased variance + eps, then sqrt) and mean. The encoder's
1x1 `conv_out` gives the LFQ input directly; the decoder reads the ±1 bits directly (no quant convs).

Codes: bit k of a position is (latent channel k > 0), numbered least-significant first (`mmtok.quantize.LFQ`
with bit_order="lsb"); with `token_factorization` the bits split into two sub-tokens (e.g. 18 = 9 + 9), and
codes are (B, 2, h, w) (a "codebook" axis of two codebooks of 2^bits_i codes).

Checkpoints are Lightning `.ckpt` files with the CLI yaml beside them. `weights="ema"` (the default when the
yaml says `use_ema: True`, as upstream's reconstruct / sample scripts use `ema_scope`) reads the `model_ema.*`
shadow (parameter names with the dots removed); `weights="raw"` the trained weights.

Upstream's `VQModel.decode_code` calls `LFQ.embed_code`, which does not exist: decoding generated codes fails
there. Here `decode(codes)` turns the bits back into ±1 latents and runs the decoder.
"""
from __future__ import annotations

import os
import pathlib
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..quantize import LFQ
from ..tokenizer.folder import read_folder, save_folder
from ..tokenizer.protocol import CodeSpec
from ..tokenizer.weights import load_exactly, read_torch_pickle
from .config import read_config_file
from .preprocess import image_batch

FORMAT = "mmtok.image.magvit2"
WEIGHTS = ("auto", "ema", "raw")


def _gn(channels: int, affine: bool = True) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=affine)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.norm2 = _gn(cin), _gn(cout)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (self.nin_shortcut(x) if self.nin_shortcut is not None else x)


class Level(nn.Module):
    """One resolution level: `block` ResNet blocks, then `downsample` (encoder) or `upsample` (decoder)."""

    def __init__(self, cin: int, cout: int, blocks: int, *, down: bool = False, up: bool = False):
        super().__init__()
        self.block = nn.ModuleList(ResBlock(cin if i == 0 else cout, cout) for i in range(blocks))
        if down:
            self.downsample = nn.Conv2d(cout, cout, 3, stride=2, padding=1)
        if up:
            self.upsample = Upsampler(cout)


def depth_to_space(x: torch.Tensor, block: int) -> torch.Tensor:
    """DCR depth-to-space: channel (i * block + j) * C' + c goes to output channel c at offset (i, j)."""
    b, c, h, w = x.shape
    out = c // (block * block)
    return x.view(b, block, block, out, h, w).permute(0, 3, 4, 1, 5, 2).reshape(b, out, h * block, w * block)


class Upsampler(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels * 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depth_to_space(self.conv1(x), 2)


class AdaptiveGroupNorm(nn.Module):
    """GroupNorm without affine, then scale = gamma(std of the style per channel), shift = beta(its mean)."""

    def __init__(self, style_channels: int, channels: int, eps: float = 1e-6):
        super().__init__()
        self.gn = _gn(channels, affine=False)
        self.gamma = nn.Linear(style_channels, channels)
        self.beta = nn.Linear(style_channels, channels)
        self.eps = eps

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        flat = style.flatten(2)
        scale = self.gamma((flat.var(dim=-1) + self.eps).sqrt())  # unbiased variance, as upstream
        shift = self.beta(flat.mean(dim=-1))
        return self.gn(x) * scale[..., None, None] + shift[..., None, None]


class MagvitEncoder(nn.Module):
    def __init__(self, ch: int, ch_mult: Sequence[int], blocks: int, z_channels: int, in_channels: int = 3):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1, bias=False)
        widths = [ch] + [ch * m for m in ch_mult]
        last = len(ch_mult) - 1
        self.down = nn.ModuleList(Level(widths[i], widths[i + 1], blocks, down=i < last) for i in range(len(ch_mult)))
        self.mid_block = nn.ModuleList(ResBlock(widths[-1], widths[-1]) for _ in range(blocks))
        self.norm_out = _gn(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], z_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        for block in self.mid_block:
            h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class MagvitDecoder(nn.Module):
    def __init__(self, ch: int, ch_mult: Sequence[int], blocks: int, z_channels: int, out_channels: int = 3):
        super().__init__()
        levels = len(ch_mult)
        block_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid_block = nn.ModuleList(ResBlock(block_in, block_in) for _ in range(blocks))
        up: list[Level | None] = [None] * levels
        adaptive: list[AdaptiveGroupNorm | None] = [None] * levels
        for level in reversed(range(levels)):
            block_out = ch * ch_mult[level]
            adaptive[level] = AdaptiveGroupNorm(z_channels, block_in)
            up[level] = Level(block_in, block_out, blocks, up=level > 0)
            block_in = block_out
        self.up = nn.ModuleList(up)
        self.adaptive = nn.ModuleList(adaptive)
        self.norm_out = _gn(block_in)
        self.conv_out = nn.Conv2d(block_in, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        style = z
        h = self.conv_in(z)
        for block in self.mid_block:
            h = block(h)
        for level in reversed(range(len(self.up))):
            h = self.adaptive[level](h, style)
            for block in self.up[level].block:
                h = block(h)
            if level > 0:
                h = self.up[level].upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Magvit2Model(nn.Module):
    def __init__(self, s: dict):
        super().__init__()
        args = (s["ch"], s["ch_mult"], s["num_res_blocks"], s["z_channels"])
        self.encoder = MagvitEncoder(*args, in_channels=s["in_channels"])
        self.decoder = MagvitDecoder(*args, out_channels=s["out_ch"])
        self.quantize = LFQ(s["bits"], bit_order="lsb", sub_tokens=s["sub_tokens"], channel_dim=1)


def settings_from_yaml(init_args: Mapping, origin: str) -> dict:
    """The architecture of an Open-MAGVIT2 VQModel from its yaml `init_args` (ValueError naming `origin`)."""
    dd = init_args.get("ddconfig")
    if not isinstance(dd, Mapping):
        raise ValueError(f"{origin}: no model.init_args.ddconfig (is this an Open-MAGVIT2 lfqgan config?)")
    s = {k: dd.get(k, d) for k, d in (("ch", None), ("ch_mult", None), ("num_res_blocks", None),
                                       ("z_channels", None), ("in_channels", 3), ("out_ch", 3))}
    for key in ("ch", "num_res_blocks", "z_channels", "in_channels", "out_ch"):
        if not isinstance(s[key], int) or isinstance(s[key], bool) or not 0 < s[key] <= 1 << 16:
            raise ValueError(f"{origin}: ddconfig.{key} must be a positive int, got {s[key]!r}")
    if not isinstance(s["ch_mult"], list) or not s["ch_mult"] or not all(isinstance(m, int) and 0 < m <= 64
                                                                          for m in s["ch_mult"]):
        raise ValueError(f"{origin}: ddconfig.ch_mult must be a list of small positive ints, got {s['ch_mult']!r}")
    n_embed, embed_dim = init_args.get("n_embed"), init_args.get("embed_dim")
    if not isinstance(n_embed, int) or n_embed < 2 or n_embed & (n_embed - 1) or n_embed.bit_length() - 1 > 32:
        raise ValueError(f"{origin}: n_embed must be a power of two (LFQ), got {n_embed!r}")
    bits = n_embed.bit_length() - 1
    if embed_dim != bits or s["z_channels"] != bits:
        raise ValueError(f"{origin}: embed_dim {embed_dim!r} and ddconfig.z_channels {s['z_channels']} must both be "
                         f"log2(n_embed) = {bits}")
    sub = None
    if init_args.get("token_factorization"):
        sub = [int(b) for b in init_args.get("factorized_bits", [9, 9])]
        if sum(sub) != bits:
            raise ValueError(f"{origin}: factorized_bits {sub} do not add up to {bits} bits")
    return {**s, "bits": bits, "sub_tokens": sub, "use_ema": bool(init_args.get("use_ema", False))}


def ours_from_lightning(state: Mapping[str, torch.Tensor], model: nn.Module, weights: str, origin: str):
    """The encoder / decoder tensors of a Lightning state dict: raw, or the `model_ema.` shadow (dotless names)."""
    wanted = [k for k in model.state_dict() if k.startswith(("encoder.", "decoder."))]
    if weights == "raw":
        return {k: state[k] for k in wanted if k in state}
    shadow = {k[len("model_ema."):]: v for k, v in state.items() if k.startswith("model_ema.")}
    if not shadow:
        raise ValueError(f"{origin}: weights='ema' but the checkpoint holds no model_ema.* tensors")
    return {k: shadow[k.replace(".", "")] for k in wanted if k.replace(".", "") in shadow}


class Magvit2Tokenizer:
    """Open-MAGVIT2 image tokenizer: `encode(images) -> (B, h, w)` or `(B, 2, h, w)` with token factorization,
    `decode(codes) -> (B, 3, H, W)` in [-1, 1]."""

    def __init__(self, model: Magvit2Model, settings: dict, *, device=None):
        self.model = model.eval().requires_grad_(False)
        self._settings = dict(settings)
        if device is not None:
            self.to(device)

    @property
    def config(self) -> dict:
        return dict(self._settings)

    @property
    def device(self) -> torch.device:
        return self.model.encoder.conv_in.weight.device

    def to(self, device) -> "Magvit2Tokenizer":
        self.model.to(torch.device(device))
        return self

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self._settings["ch_mult"]) - 1)

    @property
    def code_spec(self) -> CodeSpec:
        f, sub = self.downsample_factor, self._settings["sub_tokens"]
        if sub:
            return CodeSpec("image", ("codebook", "h", "w"), tuple(2 ** b for b in sub), (f, f),
                            image_size=self._settings.get("image_size", 256), extra={"sub_tokens": list(sub)})
        return CodeSpec("image", ("h", "w"), (2 ** self._settings["bits"],), (f, f),
                        image_size=self._settings.get("image_size", 256))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.model.state_dict().items() if k.startswith(("encoder.", "decoder."))}

    @classmethod
    def _build(cls, settings, state, origin, device) -> "Magvit2Tokenizer":
        model = Magvit2Model(settings)
        buffers = [k for k in model.state_dict() if not k.startswith(("encoder.", "decoder."))]
        load_exactly(model, state, origin, optional=buffers)
        return cls(model, settings, device=device)

    @classmethod
    def from_checkpoint(cls, ckpt_path, config_path, *, weights: str = "auto", image_size: int | None = None,
                        device=None, dtype=None) -> "Magvit2Tokenizer":
        """A Lightning `.ckpt` + its CLI yaml. weights: "auto" (EMA when the yaml has use_ema), "ema" or "raw"."""
        import yaml

        if weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
        config = read_config_file(config_path, yaml.safe_load, yaml.YAMLError, "YAML", "Open-MAGVIT2 config")
        model_cfg = (config or {}).get("model", {}) if isinstance(config, dict) else {}
        init_args = model_cfg.get("init_args", model_cfg.get("params")) if isinstance(model_cfg, dict) else None
        if not isinstance(init_args, Mapping):
            raise ValueError(f"{config_path}: no model.init_args (is this an Open-MAGVIT2 lfqgan config?)")
        settings = settings_from_yaml(init_args, os.fspath(config_path))
        size = image_size or (init_args.get("ddconfig", {}).get("resolution") or 256)
        settings["image_size"] = int(size)
        payload = read_torch_pickle(ckpt_path)
        state = payload.get("state_dict") if isinstance(payload, dict) else None
        if not isinstance(state, Mapping):
            raise ValueError(f"{ckpt_path}: not a Lightning checkpoint (no 'state_dict')")
        chosen = ("ema" if settings["use_ema"] else "raw") if weights == "auto" else weights
        settings["weights"] = chosen
        model = Magvit2Model(settings)
        ours = ours_from_lightning(state, model, chosen, os.fspath(ckpt_path))
        return cls._build(settings, ours, os.fspath(ckpt_path), device)

    def save_pretrained(self, directory):
        return save_folder(directory, FORMAT, self.config, self.state_dict())

    @classmethod
    def from_pretrained(cls, directory, *, device=None, dtype=None) -> "Magvit2Tokenizer":
        saved = read_folder(directory, expected_format=FORMAT)
        return cls._build(saved.config, saved.tensors, str(saved.weights_path), device)

    # ----------------------------------------------------------------------------------------- inference
    def _images(self, images, size, mode) -> torch.Tensor:
        return image_batch(images, factor=self.downsample_factor, size=size or self.code_spec.image_size, mode=mode,
                           channels=self._settings["in_channels"]).to(self.device)

    @torch.inference_mode()
    def encode(self, images, *, size: int | None = None, mode: str = "center_crop") -> torch.Tensor:
        latents = self.model.encoder(self._images(images, size, mode))
        codes = self.model.quantize.lookup(latents.float())
        return codes.movedim(-1, 1) if self._settings["sub_tokens"] else codes

    @torch.inference_mode()
    def decode(self, codes, *, clamp: bool = True) -> torch.Tensor:
        codes = self.code_spec.check_codes(codes, "codes").to(self.device)
        if self._settings["sub_tokens"]:
            codes = codes.movedim(1, -1)
        latents = self.model.quantize.decode(codes)
        out = self.model.decoder(latents)
        return out.clamp_(-1.0, 1.0) if clamp else out

    def __repr__(self) -> str:
        return (f"Magvit2Tokenizer(bits={self._settings['bits']}, sub_tokens={self._settings['sub_tokens']}, "
                f"f={self.downsample_factor}, weights={self._settings.get('weights')!r})")


def is_magvit2_config(path: pathlib.Path) -> bool:
    """A yaml beside the checkpoint that names Open-MAGVIT2's lfqgan model."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")[:65536]
    except OSError:
        return False
    return "lfqgan" in text or "open_magvit2" in text


def load_magvit2(path, *, device=None, dtype=None, config_path=None, **options) -> Magvit2Tokenizer:
    """`mmtok.load` entry: the `.ckpt` and its yaml (config_path=, or the one yaml beside it)."""
    path = pathlib.Path(path)
    if config_path is None:
        yamls = sorted(path.parent.glob("*.yaml"))
        if len(yamls) != 1:
            raise ValueError(f"{path}: an Open-MAGVIT2 checkpoint needs its yaml config (config_path=...; found "
                             f"{len(yamls)} .yaml files beside it)")
        config_path = yamls[0]
    return Magvit2Tokenizer.from_checkpoint(path, config_path, device=device, dtype=dtype, **options)
