"""The code-probability sums behind LFQ's entropy loss, from two half-width tables, with a hand-written backward.

LFQ's entropy loss needs, for N rows and all 2^bits sign-pattern codes, the mean probability of each code over the
rows (and, for the `vqtorch` formula, a per-row sum over the codes in the row's own sign frame). Both
implementations it follows build the N x 2^bits probability matrix; the first version here produced it one block of
codes at a time (N x 2^bits float64 products and exponentials, seconds per step at 18 bits). Neither is needed:

The softmax over sign patterns factorises over channels. With cost[n, c] = sum_i w[n, i] [bit_i(c) != neg[n, i]]
and p[n, c] = exp(-cost[n, c] - log_z[n]), split the channels into a low half (bits 0 .. h-1) and a high half and
write c = hi * 2^h + lo:

    p[n, c] = A[n, lo] * B[n, hi],    A[n, lo] = exp(-cost_lo[n, lo] - lam[n]),
                                      B[n, hi] = exp(-cost_hi[n, hi] - (log_z[n] - lam[n]))

(lam[n] = the low channels' share of log_z, so both tables hold probabilities <= 1; it cancels in p and in every
gradient). Then

    avg[hi * 2^h + lo] = mean_n p[n, c] = (B^T A)[hi, lo] / N          one (2^(bits-h) x N) @ (N x 2^h) product,

N x 2^(bits/2) memory and N x 2^bits multiply-adds in a GEMM instead of exponentials. The `vqtorch` per-sample term,
sample[n] = sum_b exp(own[n, b]) * max(own[n, b], log eps) with own[n, b] = log p of the code b bits away from the
row's own code, is own = oA[lo] + oB[hi] in the same way, and

    sum_{lo, hi} eA eB max(oA + oB, le) = sum_lo eA[lo] (oA[lo] SB + TB + R(le - oA[lo])),
    SB = sum eB, TB = sum eB oB, R(t) = sum_{hi: oB[hi] < t} eB[hi] (t - oB[hi]),

where R comes from prefix sums over the sorted oB (a searchsorted per threshold): N x 2^h log 2^h work, exact (the
clamp is applied code by code, not approximated). The backward is the chain rule through the same tables. Cost
and log-tables are float64 (the two terms of the cost cancel for the likely codes); the tables A, B and the mean
are in the weight's dtype, as the blockwise form had them.
"""
from __future__ import annotations

import math

import torch

ENTROPY_EPS = 1e-5  # the clamp / offset inside the logs of both entropy formulas


def _bit_table(width: int, device) -> torch.Tensor:
    """(2^width, width) float64 0/1 table: row c holds the bits of c (column i = bit i)."""
    codes = torch.arange(2**width, device=device)
    return ((codes.unsqueeze(-1) >> torch.arange(width, device=device)) & 1).double()


class _Halves:
    """The two half-width log-probability tables of every row (float64), for the mean and the own frame."""

    def __init__(self, weight: torch.Tensor, log_z: torch.Tensor, negative: torch.Tensor, num_bits: int):
        self.low = num_bits // 2
        h = self.low
        wide, neg = weight.double(), negative.double()
        self.flip = 1.0 - 2.0 * neg
        self.neg = neg
        self.bits_lo = _bit_table(h, weight.device)
        self.bits_hi = _bit_table(num_bits - h, weight.device)
        lam = torch.nn.functional.softplus(-wide[:, :h]).sum(-1, keepdim=True)
        rest = log_z.double().unsqueeze(-1) - lam
        self.wide = wide
        self.lam, self.rest = lam, rest

    def cost_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(log A, log B): log p split into the low and high channels' factors."""
        h, w, flip, neg = self.low, self.wide, self.flip, self.neg
        log_a = -((w[:, :h] * flip[:, :h]) @ self.bits_lo.t() + (neg[:, :h] * w[:, :h]).sum(-1, keepdim=True)) - self.lam
        log_b = -((w[:, h:] * flip[:, h:]) @ self.bits_hi.t() + (neg[:, h:] * w[:, h:]).sum(-1, keepdim=True)) - self.rest
        return log_a, log_b

    def own_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(oA, oB): log p of the code b bits away from the row's own code, split the same way."""
        h, w = self.low, self.wide
        return -(w[:, :h] @ self.bits_lo.t()) - self.lam, -(w[:, h:] @ self.bits_hi.t()) - self.rest

    def weight_grad(self, d_lo: torch.Tensor, d_hi: torch.Tensor, cost: bool) -> torch.Tensor:
        """d loss / d weight (float64) from d loss / d (log-table entries) of both halves; `cost` tables depend
        on w through flip * bits + neg, own tables through bits alone."""
        h = self.low
        g_lo, g_hi = d_lo @ self.bits_lo, d_hi @ self.bits_hi
        if cost:
            g_lo = self.flip[:, :h] * g_lo + self.neg[:, :h] * d_lo.sum(-1, keepdim=True)
            g_hi = self.flip[:, h:] * g_hi + self.neg[:, h:] * d_hi.sum(-1, keepdim=True)
        return -torch.cat([g_lo, g_hi], dim=-1)


def _clamped_pair_sums(o_a: torch.Tensor, o_b: torch.Tensor, e_b: torch.Tensor, log_eps: float
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """For every row n and low index l: (sum_hi e_b max(o_a[l] + o_b, le), sum_hi e_b [o_a[l] + o_b >= le])."""
    order = o_b.argsort(dim=-1)
    o_sorted = o_b.gather(-1, order)
    e_sorted = e_b.gather(-1, order)
    zero = o_b.new_zeros(o_b.shape[0], 1)
    mass = torch.cat([zero, e_sorted.cumsum(-1)], dim=-1)  # mass[k] = sum of the k smallest o_b's weights
    moment = torch.cat([zero, (e_sorted * o_sorted).cumsum(-1)], dim=-1)
    thresholds = log_eps - o_a  # o_a + o_b < le  <=>  o_b < le - o_a
    below = torch.searchsorted(o_sorted.contiguous(), thresholds.contiguous(), side="left")
    mass_below, moment_below = mass.gather(-1, below), moment.gather(-1, below)
    total, total_moment = mass[:, -1:], moment[:, -1:]
    clamped = o_a * total + total_moment + thresholds * mass_below - moment_below
    return clamped, total - mass_below


class FactorizedCodeEntropy(torch.autograd.Function):
    """(weight, log_z, negative) -> (sample (N,), avg (2^bits,)); see the module docs. `sample` is zeros unless
    own_frame (the vqtorch formula's per-sample term) is asked for."""

    @staticmethod
    def forward(ctx, weight, log_z, negative, num_bits: int, own_frame: bool):
        halves = _Halves(weight, log_z, negative, num_bits)
        log_a, log_b = halves.cost_tables()
        table_a, table_b = log_a.exp(), log_b.exp()
        avg = (table_b.t() @ table_a).reshape(-1).div_(weight.shape[0]).to(weight.dtype)
        if own_frame:
            o_a, o_b = halves.own_tables()
            clamped, _ = _clamped_pair_sums(o_a, o_b, o_b.exp(), math.log(ENTROPY_EPS))
            sample = (o_a.exp() * clamped).sum(-1).to(weight.dtype)
        else:
            sample = weight.new_zeros(weight.shape[0])
        ctx.save_for_backward(weight, log_z, negative)
        ctx.num_bits, ctx.own_frame = num_bits, own_frame
        return sample, avg

    @staticmethod
    def backward(ctx, grad_sample, grad_avg):
        weight, log_z, negative = ctx.saved_tensors
        num_bits, own_frame, rows = ctx.num_bits, ctx.own_frame, weight.shape[0]
        halves = _Halves(weight, log_z, negative, num_bits)
        log_a, log_b = halves.cost_tables()
        # float64 here: d loss / d w is a difference of probability-weighted sums of the code gradients (it
        # cancels), and the fp32 products lost ~1e-7 against upstream's float64 run
        table_a, table_b = log_a.exp(), log_b.exp()
        g = (grad_avg.double() / rows).reshape(table_b.shape[1], table_a.shape[1])  # [hi, lo]
        d_log_a = (table_b @ g) * table_a  # d loss / d log A = (d loss / d A) * A
        d_log_b = (table_a @ g.t()) * table_b
        grad_weight = halves.weight_grad(d_log_a, d_log_b, cost=True)
        grad_log_z = -d_log_b.sum(-1)
        if own_frame:
            o_a, o_b = halves.own_tables()
            e_a, e_b = o_a.exp(), o_b.exp()
            log_eps = math.log(ENTROPY_EPS)
            # d/du of e^u max(u, le) is e^u (max(u, le) + [u >= le]), summed over the other half
            clamped_a, kept_a = _clamped_pair_sums(o_a, o_b, e_b, log_eps)
            clamped_b, kept_b = _clamped_pair_sums(o_b, o_a, e_a, log_eps)
            scale = grad_sample.double().unsqueeze(-1)
            d_o_a = e_a * (clamped_a + kept_a) * scale
            d_o_b = e_b * (clamped_b + kept_b) * scale
            grad_weight = grad_weight + halves.weight_grad(d_o_a, d_o_b, cost=False)
            grad_log_z = grad_log_z - d_o_b.sum(-1)
        return grad_weight.to(weight.dtype), grad_log_z.to(log_z.dtype), None, None, None


def code_entropy_terms(weight: torch.Tensor, log_z: torch.Tensor, negative: torch.Tensor, num_bits: int,
                       own_frame: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-row own-frame sums, mean probability of every code); differentiable in weight and log_z."""
    return FactorizedCodeEntropy.apply(weight, log_z, negative, num_bits, own_frame)
