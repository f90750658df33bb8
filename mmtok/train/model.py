"""The VQ-GAN as it is trained: the image package's `VQAutoencoder` with a trainable codebook
(EMA, k-means init, dead-code re-seeding) and one `forward` (what DDP wraps), plus export to the
`ImageTokenizer` directory format."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..image import VQAutoencoder, VQGANConfig
from ..image.config import CONFIG_FORMAT
from ..image.tokenizer import FORMAT_VERSION
from ..tokenizer.folder import save_folder
from ..quantize import VectorQuantizer


class TrainableVQGAN(nn.Module):
    """encoder -> VectorQuantizer (training mode: loss, stats, codebook updates) -> decoder."""

    def __init__(self, model_config: VQGANConfig, *, ema_decay=None, beta: float = 0.25, kmeans_init: bool = True,
                 dead_code_threshold: float = 0.0, bf16: bool = True):
        super().__init__()
        self.config = model_config
        self.vq = VQAutoencoder(model_config)
        self.vq.quantize = VectorQuantizer(model_config.num_codes, model_config.code_dim, beta=beta,
                                           ema_decay=ema_decay, kmeans_init=kmeans_init,
                                           dead_code_threshold=dead_code_threshold,
                                           l2_normalize=model_config.l2_normalize, channel_dim=1)
        self.bf16 = bool(bf16)

    @property
    def last_layer(self) -> torch.Tensor:
        """The decoder's output convolution weight (the adaptive GAN weight is measured here)."""
        return self.vq.decoder.conv_out.weight

    def _autocast(self, device: torch.device):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=torch.bfloat16)

    def forward(self, images: torch.Tensor):
        """images (B, 3, H, W) in [-1, 1] -> (reconstruction fp32, QuantizerOutput); the lookup runs in fp32."""
        with self._autocast(images.device):
            latents = self.vq.encode_latents(images)
        out = self.vq.quantize(latents.float())
        with self._autocast(images.device):
            recon = self.vq.decode_latents(out.quantized)
        return recon.float(), out


def inference_state_dict(model: TrainableVQGAN) -> dict:
    """The weights an `ImageTokenizer` loads: the plain `VQAutoencoder`'s keys (training-only buffers dropped)."""
    wanted = VQAutoencoder(model.config).state_dict().keys()
    state = model.vq.state_dict()
    return {k: state[k].detach().cpu().contiguous() for k in wanted}


def export_pretrained(model: TrainableVQGAN, directory: str, *, dtype: torch.dtype = torch.float32,
                      metadata: dict | None = None) -> str:
    """Write `config.json` + `model.safetensors` (floats stored as `dtype`; the loader upcasts to fp32)."""
    state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in inference_state_dict(model).items()}
    save_folder(directory, CONFIG_FORMAT, model.config.to_dict(), state, version=FORMAT_VERSION,
                metadata={k: str(v) for k, v in (metadata or {}).items()})
    return directory
