"""Mimi's transformers (one after the SEANet encoder, one before the decoder), with transformers' `MimiTransformerModel`
numerics and key names (`layers.L.{input_layernorm, self_attn.{q,k,v,o}_proj, self_attn_layer_scale,
post_attention_layernorm, mlp.fc1, mlp.fc2, mlp_layer_scale}`).

Each layer: x + scale1 * attn(LN1(x)), then + scale2 * fc2(act(fc1(LN2(x)))). Attention is causal over a sliding
window of `sliding_window` steps including the query's own (key j is seen from query i when i - W < j <= i, as
transformers' sliding-window mask and moshi's `context`), with grouped key / value heads, and RoPE in transformers'
half-split layout (`rotate_half`; the moshi checkpoints rotate interleaved pairs, which the conversion to the
transformers layout permutes), frequencies computed in float32 as transformers does.

Attention runs in query blocks, each against only the keys its window reaches, so memory grows with
T * window, not T^2. `TransformerState` carries the last `window - 1` keys / values of every layer and the position
for frame-by-frame streaming: feeding steps piece by piece gives the one-pass output.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"gelu": F.gelu, "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
               "gelu_new": lambda x: F.gelu(x, approximate="tanh"), "relu": F.relu, "silu": F.silu, "swish": F.silu}
QUERY_BLOCK = 256


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return self.scale * x


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, dim, bias=False)
        self.act = ACTIVATIONS[act]

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def rope_tables(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (T, head_dim) for integer positions, in float32 as transformers' default RoPE."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    freqs = positions.to(torch.float32)[:, None] * inv_freq.to(positions.device)[None]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def windowed_attention(q, k, v, window: int | None, scale: float) -> torch.Tensor:
    """q (B, H, Tq, d) for the last Tq of the Tk positions of k, v (B, H, Tk, d) -> (B, H, Tq, d); query i sees keys
    j with i - window < j <= i. Blocks of queries attend to the key span their window reaches."""
    tq, tk = q.shape[2], k.shape[2]
    first = tk - tq  # key index of the first query
    out = torch.empty_like(q)
    for s in range(0, tq, QUERY_BLOCK):
        e = min(tq, s + QUERY_BLOCK)
        q_pos = torch.arange(first + s, first + e, device=q.device)
        lo = 0 if window is None else max(0, first + s - window + 1)
        hi = first + e
        k_pos = torch.arange(lo, hi, device=q.device)
        rel = q_pos[:, None] - k_pos[None, :]
        mask = rel >= 0
        if window is not None:
            mask &= rel < window
        out[:, :, s:e] = F.scaled_dot_product_attention(q[:, :, s:e], k[:, :, lo:hi], v[:, :, lo:hi],
                                                        attn_mask=mask, scale=scale)
    return out


class Attention(nn.Module):
    def __init__(self, s: dict):
        super().__init__()
        dim, heads, kv, hd, bias = (s["hidden_size"], s["num_attention_heads"], s["num_key_value_heads"],
                                    s["head_dim"], s["attention_bias"])
        self.heads, self.kv_heads, self.head_dim = heads, kv, hd
        self.q_proj = nn.Linear(dim, heads * hd, bias=bias)
        self.k_proj = nn.Linear(dim, kv * hd, bias=bias)
        self.v_proj = nn.Linear(dim, kv * hd, bias=bias)
        self.o_proj = nn.Linear(heads * hd, dim, bias=bias)
        self.window = s["sliding_window"]

    def forward(self, x, cos, sin, past: tuple[torch.Tensor, torch.Tensor] | None = None):
        """x (B, T, dim); cos / sin (T, head_dim) of the new steps; past: this layer's cached (k, v) with rotary
        applied, (B, kv_heads, P, d). Returns (output, (k, v) of past + new)."""
        b, t, _ = x.shape
        q = _rotate(self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2), cos, sin)
        k = _rotate(self.k_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2), cos, sin)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        groups = self.heads // self.kv_heads
        kr = k.repeat_interleave(groups, dim=1) if groups > 1 else k
        vr = v.repeat_interleave(groups, dim=1) if groups > 1 else v
        out = windowed_attention(q, kr, vr, self.window, 1.0 / math.sqrt(self.head_dim))
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1)), (k, v)


class TransformerLayer(nn.Module):
    def __init__(self, s: dict):
        super().__init__()
        dim = s["hidden_size"]
        self.input_layernorm = nn.LayerNorm(dim, eps=s["norm_eps"])
        self.self_attn = Attention(s)
        self.self_attn_layer_scale = LayerScale(dim)
        self.post_attention_layernorm = nn.LayerNorm(dim, eps=s["norm_eps"])
        self.mlp = MLP(dim, s["intermediate_size"], s["hidden_act"])
        self.mlp_layer_scale = LayerScale(dim)

    def forward(self, x, cos, sin, past=None):
        h, kv = self.self_attn(self.input_layernorm(x), cos, sin, past)
        x = x + self.self_attn_layer_scale(h)
        x = x + self.mlp_layer_scale(self.mlp(self.post_attention_layernorm(x)))
        return x, kv


@dataclass
class TransformerState:
    """Streaming state of a `Transformer`: steps seen so far and each layer's last window - 1 keys / values."""

    position: int = 0
    past: list = field(default_factory=list)


class Transformer(nn.Module):
    """(B, T, dim) -> (B, T, dim); `state` (a `TransformerState`) continues a stream of steps."""

    def __init__(self, s: dict):
        super().__init__()
        self.layers = nn.ModuleList([TransformerLayer(s) for _ in range(s["num_hidden_layers"])])
        self.head_dim = s["head_dim"]
        self.theta = s["rope_parameters"]["rope_theta"]
        self.window = s["sliding_window"]

    def forward(self, x: torch.Tensor, state: TransformerState | None = None) -> torch.Tensor:
        start = state.position if state is not None else 0
        positions = torch.arange(start, start + x.shape[1], device=x.device)
        cos, sin = rope_tables(positions, self.head_dim, self.theta)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        new_past = []
        for i, layer in enumerate(self.layers):
            past = state.past[i] if state is not None and state.past else None
            x, (k, v) = layer(x, cos, sin, past)
            if state is not None:
                keep = k.shape[2] if self.window is None else min(k.shape[2], self.window - 1)
                new_past.append((k[:, :, k.shape[2] - keep:], v[:, :, v.shape[2] - keep:]))
        if state is not None:
            state.position = start + x.shape[1]
            state.past = new_past
        return x
