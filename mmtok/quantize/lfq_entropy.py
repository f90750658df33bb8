"""The code-probability sums behind LFQ's entropy loss, one block of codes at a time, with its own backward.

LFQ's entropy loss needs, for N rows and all 2^bits sign-pattern codes, the mean probability of each code over the
rows (and, for the `vqtorch` formula, a per-row sum over the codes in the row's own sign frame). The N x 2^bits
probability matrix is never formed: codes are taken in blocks, and every block's temporaries live in one workspace
allocated once per call and overwritten block after block.

Why a hand-written backward instead of autograd over the blocks (with activation checkpointing, the earlier form):
the autograd form allocated fresh block-sized temporaries between small tensors that outlive them, and glibc's
heap then grew by about a block per iteration (2.4 GB of peak RSS at 512 rows x 2^18 codes, where the live memory
never exceeded ~0.2 GB). Here forward and backward both reuse the same few buffers, and the backward is the chain
rule written out (module `lfq` documents the formulas):

    log p[n, c] = -cost[n, c] - log_z[n],   cost[n, c] = sum_i w[n, i] * [bit_i(c) != neg[n, i]]
                = (w (1 - 2 neg)) . bits(c) + neg . w
    avg[c]      = mean_n p[n, c]
    own[n, b]   = -(w[n] . bits(b)) - log_z[n]                  (the row's own sign frame; vqtorch only)
    sample[n]   = sum_b exp(own[n, b]) * max(own[n, b], log eps)

The cost is accumulated in float64 (its two terms cancel for the likely codes), the probabilities are in the
weight's dtype, as before: values are unchanged.
"""
from __future__ import annotations

import math

import torch

CODE_BLOCK = 4096  # codes per block
ENTROPY_EPS = 1e-5  # the clamp / offset inside the logs of both entropy formulas


class _Workspace:
    """Block buffers of one call: reused by every block of the forward and of the backward."""

    def __init__(self, weight: torch.Tensor, num_bits: int, block: int, own_frame: bool):
        rows, device, dtype = weight.shape[0], weight.device, weight.dtype
        self.block = block
        self.codes = torch.empty(block, dtype=torch.int64, device=device)
        self.shifts = torch.arange(num_bits, device=device)
        self.bit_ints = torch.empty(block, num_bits, dtype=torch.int64, device=device)
        self.bits64 = torch.empty(block, num_bits, dtype=torch.float64, device=device)
        self.cost = torch.empty(rows, block, dtype=torch.float64, device=device)
        self.prob = torch.empty(rows, block, dtype=dtype, device=device)
        if own_frame:
            self.bits = torch.empty(block, num_bits, dtype=dtype, device=device)
            self.own = torch.empty(rows, block, dtype=dtype, device=device)
            self.own_exp = torch.empty(rows, block, dtype=dtype, device=device)

    def load_bits(self, start: int, own_frame: bool) -> None:
        """0/1 channel bits (channel i = bit i) of codes start .. start + block into bits64 (and bits)."""
        torch.arange(start, start + self.block, out=self.codes)
        torch.bitwise_right_shift(self.codes.unsqueeze(-1), self.shifts, out=self.bit_ints)
        self.bit_ints.bitwise_and_(1)
        self.bits64.copy_(self.bit_ints)
        if own_frame:
            self.bits.copy_(self.bit_ints)

    def probabilities(self, signed: torch.Tensor, neg_cost: torch.Tensor, log_z: torch.Tensor) -> torch.Tensor:
        """p[n, c] of the loaded block into `prob` (cost in float64, log p and p in the weight's dtype)."""
        torch.mm(signed, self.bits64.t(), out=self.cost)
        self.cost.add_(neg_cost)
        self.prob.copy_(self.cost).neg_().sub_(log_z.unsqueeze(-1))
        return self.prob.exp_()

    def own_frame(self, weight: torch.Tensor, log_z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(exp(own), own) of the loaded block, own[n, b] = -(w[n] . bits(b)) - log_z[n]."""
        torch.mm(weight, self.bits.t(), out=self.own)
        self.own.neg_().sub_(log_z.unsqueeze(-1))
        torch.exp(self.own, out=self.own_exp)
        return self.own_exp, self.own


class BlockwiseCodeEntropy(torch.autograd.Function):
    """(weight, log_z, negative) -> (sample (N,), avg (2^bits,)); see the module docs. `sample` is zeros unless
    own_frame (the vqtorch formula's per-sample term) is asked for."""

    @staticmethod
    def forward(ctx, weight, log_z, negative, num_bits: int, own_frame: bool):
        num_codes = 2**num_bits
        block = min(CODE_BLOCK, num_codes)
        work = _Workspace(weight, num_bits, block, own_frame)
        wide = weight.double()
        signed = wide * (1.0 - 2.0 * negative.double())
        neg_cost = (negative.double() * wide).sum(-1, keepdim=True)
        log_eps = math.log(ENTROPY_EPS)
        avg = weight.new_empty(num_codes)
        terms = weight.new_zeros(num_codes // block, weight.shape[0]) if own_frame else None
        for k, start in enumerate(range(0, num_codes, block)):
            work.load_bits(start, own_frame)
            prob = work.probabilities(signed, neg_cost, log_z)
            torch.mean(prob, 0, out=avg[start:start + block])
            if own_frame:
                own_exp, own = work.own_frame(weight, log_z)
                torch.sum(own_exp.mul_(own.clamp_min_(log_eps)), -1, out=terms[k])
        sample = terms.sum(0) if own_frame else weight.new_zeros(weight.shape[0])
        ctx.save_for_backward(weight, log_z, negative)
        ctx.num_bits, ctx.own_frame = num_bits, own_frame
        return sample, avg

    @staticmethod
    def backward(ctx, grad_sample, grad_avg):
        weight, log_z, negative = ctx.saved_tensors
        num_bits, own_frame = ctx.num_bits, ctx.own_frame
        num_codes, rows = 2**num_bits, weight.shape[0]
        block = min(CODE_BLOCK, num_codes)
        work = _Workspace(weight, num_bits, block, own_frame)
        wide = weight.double()
        flip = 1.0 - 2.0 * negative.double()
        signed = wide * flip
        neg_cost = (negative.double() * wide).sum(-1, keepdim=True)
        log_eps = math.log(ENTROPY_EPS)
        scaled_avg = grad_avg / rows  # d avg[c] / d p[n, c] = 1 / N
        grad_prob64 = torch.empty(rows, block, dtype=torch.float64, device=weight.device)
        prob_bits = torch.zeros(rows, num_bits, dtype=torch.float64, device=weight.device)  # sum_c G[n,c] bits(c)
        prob_sums = torch.zeros(rows, 1, dtype=torch.float64, device=weight.device)  # sum_c G[n, c]
        grad_weight = torch.zeros_like(weight)
        grad_log_z = torch.zeros_like(log_z)
        for start in range(0, num_codes, block):
            work.load_bits(start, own_frame)
            prob = work.probabilities(signed, neg_cost, log_z)
            prob.mul_(scaled_avg[start:start + block])  # G = dL/dcost up to sign, in the weight's dtype
            grad_log_z.sub_(prob.sum(-1))
            grad_prob64.copy_(prob)
            prob_bits.addmm_(grad_prob64, work.bits64)
            prob_sums.add_(grad_prob64.sum(-1, keepdim=True))
            if own_frame:
                own_exp, own = work.own_frame(weight, log_z)
                keep = (own >= log_eps).to(own.dtype)  # where clamp_min passes its gradient
                # d sample / d own = exp(own) * (max(own, log eps) + [own >= log eps])
                own_exp.mul_(own.clamp_min_(log_eps).add_(keep)).mul_(grad_sample.unsqueeze(-1))
                grad_log_z.sub_(own_exp.sum(-1))
                grad_weight.sub_(own_exp @ work.bits)
        grad_weight.sub_((flip * prob_bits + negative.double() * prob_sums).to(weight.dtype))
        return grad_weight, grad_log_z, None, None, None



def code_entropy_terms(weight: torch.Tensor, log_z: torch.Tensor, negative: torch.Tensor, num_bits: int,
                       own_frame: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-row own-frame sums, mean probability of every code); differentiable in weight and log_z."""
    return BlockwiseCodeEntropy.apply(weight, log_z, negative, num_bits, own_frame)
