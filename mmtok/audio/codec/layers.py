"""Building layers of the DAC architecture: weight-normalised convolutions and the Snake activation.

The parameters keep the names of the legacy `torch.nn.utils.weight_norm` (`weight_g`, `weight_v`) so DAC's
weight files load key for key. Training recomputes w = g * v / ||v|| on every call (gradients flow to g and v);
inference folds it once and reuses the folded weight until g or v change, which is the main thing DAC's eager
modules pay for on every forward.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SNAKE_EPS = 1e-9  # DAC adds this to alpha before taking its reciprocal


def _weight_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """g * v / ||v||, the norm taken over every dim except dim 0 (legacy weight_norm with dim=0)."""
    norm = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))
    return v * (g / norm)


def _inference_mode_for(*tensors: torch.Tensor) -> bool:
    """True when no gradient can flow to these tensors, so cached values are safe to use."""
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


class _WeightNormed(nn.Module):
    """Holds weight_g / weight_v / bias and serves the folded weight (cached outside autograd)."""

    def _init_weight(self, shape: tuple[int, ...]) -> None:
        self.weight_v = nn.Parameter(torch.empty(shape))
        nn.init.kaiming_uniform_(self.weight_v, a=5 ** 0.5)
        with torch.no_grad():
            g = self.weight_v.flatten(1).norm(dim=1).view(-1, *([1] * (len(shape) - 1)))
        self.weight_g = nn.Parameter(g.clone())
        self._folded: torch.Tensor | None = None
        self._folded_key: tuple | None = None

    def weight(self) -> torch.Tensor:
        g, v = self.weight_g, self.weight_v
        if not _inference_mode_for(g, v):
            return _weight_norm(g, v)
        key = (g._version, v._version, g.data_ptr(), v.data_ptr(), g.dtype, v.dtype)
        if self._folded_key != key:
            with torch.no_grad():
                self._folded = _weight_norm(g, v).contiguous()
            self._folded_key = key
        return self._folded


class WNConv1d(_WeightNormed):
    """Conv1d with a weight-normalised kernel (out, in, k) and a bias."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                 dilation: int = 1, padding: int = 0):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.dilation, self.padding = stride, dilation, padding
        self._init_weight((out_channels, in_channels, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, self.padding)

    def conv(self, x: torch.Tensor, padding: int) -> torch.Tensor:
        """The convolution with `padding` zeros each side (0: the streaming runner supplies the context)."""
        if self.kernel_size == 1 and self.stride == 1 and padding == 0 and _inference_mode_for(x, self.bias):
            return self._pointwise(x)
        return F.conv1d(x, self.weight(), self.bias, self.stride, padding, self.dilation)

    def _pointwise(self, x: torch.Tensor) -> torch.Tensor:
        """A 1x1 conv as one matrix product per item: BLAS runs it about 2x faster than oneDNN's conv on CPU."""
        weight = self.weight()[:, :, 0]
        if x.shape[0] == 1 and x.is_contiguous():
            return torch.addmm(self.bias[:, None], weight, x[0]).unsqueeze(0)
        return torch.matmul(weight, x).add_(self.bias[:, None])

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"dilation={self.dilation}, padding={self.padding}")


class WNConvTranspose1d(_WeightNormed):
    """ConvTranspose1d with a weight-normalised kernel (in, out, k): g is per INPUT channel, as in DAC.

    At inference it runs polyphase: output sample o = n * stride + b (before cropping `padding`) only ever
    meets kernel taps b, b + stride, ..., so the layer is one ordinary Conv1d with `phase_taps` taps and
    stride * out channels (phase-major), followed by interleaving the phases. Same products and sums as the
    transposed conv; oneDNN runs the ordinary conv ~25 % faster on CPU.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, padding: int = 0):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.dilation, self.padding = stride, 1, padding
        self._init_weight((in_channels, out_channels, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self._phase: tuple[torch.Tensor, torch.Tensor] | None = None
        self._phase_key: tuple | None = None

    @property
    def phase_taps(self) -> int:
        return -(-self.kernel_size // self.stride)

    @property
    def phase_crop(self) -> tuple[int, int]:
        """Samples to drop at the (start, end) of the interleaved phases to get the transposed conv's output."""
        return self.padding, self.phase_taps * self.stride - self.kernel_size + self.padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _inference_mode_for(x, self.weight_g, self.weight_v, self.bias):
            return F.conv_transpose1d(x, self.weight(), self.bias, self.stride, self.padding)
        head, tail = self.phase_crop
        z = self.interleave(self.phases(x, self.phase_taps - 1))
        return z[..., head: z.shape[-1] - tail]

    def phases(self, x: torch.Tensor, padding: int) -> torch.Tensor:
        """(B, in, L) -> (B, stride * out, L + 2 * padding - phase_taps + 1), phase-major (inference only)."""
        weight, bias = self._phase_weight()
        return F.conv1d(x, weight, bias, 1, padding)

    def interleave(self, y: torch.Tensor) -> torch.Tensor:
        """Phase-major (B, stride * out, N) -> (B, out, N * stride): sample n * stride + b from phase b."""
        batch, _, n = y.shape
        s, c = self.stride, self.out_channels
        z = y.new_empty(batch, c, n * s)
        z.view(batch, c, n, s).copy_(y.view(batch, s, c, n).permute(0, 2, 3, 1))
        return z

    def _phase_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Conv1d weight (stride * out, in, taps) and bias: row b * out + c, tap u holds w[:, c, b + (taps-1-u) * s].

        Cached instead of (not beside) the folded weight, so inference holds one extra copy of the kernel.
        """
        g, v, bias = self.weight_g, self.weight_v, self.bias
        key = tuple((p._version, p.data_ptr(), p.dtype) for p in (g, v, bias))
        if self._phase_key != key:
            s, taps = self.stride, self.phase_taps
            with torch.no_grad():
                w = F.pad(_weight_norm(g, v), (0, taps * s - self.kernel_size))  # (in, out, taps * s)
                w = w.view(self.in_channels, self.out_channels, taps, s).flip(2)  # [i, c, u, b]
                weight = w.permute(3, 1, 0, 2).reshape(s * self.out_channels, self.in_channels, taps)
                self._phase = (weight.contiguous(), self.bias.detach().repeat(s))
            self._phase_key = key
        return self._phase

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}")


class Snake1d(nn.Module):
    """Snake activation x + sin(alpha * x)^2 / (alpha + 1e-9), alpha learned per channel (shape [1, C, 1]).

    At inference it runs as three passes over one new buffer instead of five fresh tensors.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha
        if not _inference_mode_for(x, alpha):
            return x + (alpha + SNAKE_EPS).reciprocal() * torch.sin(alpha * x).pow(2)
        return self.write(x, torch.empty_like(x, memory_format=torch.contiguous_format))

    @torch.no_grad()
    def write(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """snake(x) into `out` (same shape, e.g. a slice of a larger buffer): three passes, no temporaries."""
        alpha = self.alpha
        inv_alpha = (alpha + SNAKE_EPS).reciprocal()
        torch.mul(x, alpha, out=out)
        out.sin_().square_()
        return torch.addcmul(x, out, inv_alpha, out=out)
