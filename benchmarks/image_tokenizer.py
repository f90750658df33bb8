"""Image tokenizer throughput: mmtok (fp32 / bf16) vs a plain-torch re-implementation of the upstream forward path.

Model: a taming ImageNet-f16 sized VQ-GAN (ch 128, ch_mult [1,1,2,2,4], 2 res blocks, attention at 16,
z_channels 256, embed_dim 256, 1024 or 16384 codes), random weights, 256x256 inputs. The baseline is our
own code written the way the upstream projects do it: NCHW fp32, `x * sigmoid(x)`, bmm + softmax attention,
nearest-upsample then conv, and the full (N x K) distance matrix for the codebook lookup, under no_grad.
Both run the same weights; the script checks they give the same codes before timing. "bf16 autocast everywhere"
is the encoder entirely under autocast (mmtok's bf16 path before its mixed-precision policy; its decode row is the
same code as "mmtok bf16"), to show what the policy costs.

    python benchmarks/image_tokenizer.py --quick        # 2 cores: batch 2, 3 repeats, 1024 codes
    python benchmarks/image_tokenizer.py --codes 16384 --batch 4 --repeats 5 --compile
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from mmtok.image import ImageTokenizer, VQGANConfig

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import cold_child, first_and_warm  # noqa: E402

# ------------------------------------------------------------------ baseline: upstream-style plain torch


def swish(x):
    return x * torch.sigmoid(x)


def norm(c):
    return nn.GroupNorm(32, c, eps=1e-6, affine=True)


class BaseResBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm1, self.conv1 = norm(cin), nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2, self.conv2 = norm(cout), nn.Conv2d(cout, cout, 3, 1, 1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)
        self.cin, self.cout = cin, cout

    def forward(self, x):
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))
        if self.cin != self.cout:
            x = self.nin_shortcut(x)
        return x + h


class BaseAttn(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        b, c, hh, ww = q.shape
        q = q.reshape(b, c, hh * ww).permute(0, 2, 1)
        w = torch.bmm(q, k.reshape(b, c, hh * ww)) * (int(c) ** -0.5)
        w = torch.softmax(w, dim=2)
        out = torch.bmm(v.reshape(b, c, hh * ww), w.permute(0, 2, 1)).reshape(b, c, hh, ww)
        return x + self.proj_out(out)


class BaseDown(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 2, 0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))


class BaseUp(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _mid(c):
    mid = nn.Module()
    mid.block_1, mid.attn_1, mid.block_2 = BaseResBlock(c, c), BaseAttn(c), BaseResBlock(c, c)
    return mid


class BaseEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.conv_in = nn.Conv2d(3, cfg.ch, 3, 1, 1)
        self.down, block_in, self.cfg = nn.ModuleList(), cfg.ch, cfg
        for level, mult in enumerate(cfg.ch_mult):
            stage, out = nn.Module(), cfg.ch * mult
            stage.block = nn.ModuleList(BaseResBlock(block_in if i == 0 else out, out) for i in range(cfg.num_res_blocks))
            stage.attn = nn.ModuleList(BaseAttn(out) for _ in range(cfg.num_res_blocks) if level in cfg.attn_levels)
            if level != len(cfg.ch_mult) - 1:
                stage.downsample = BaseDown(out)
            self.down.append(stage)
            block_in = out
        self.mid = _mid(block_in)
        self.norm_out, self.conv_out = norm(block_in), nn.Conv2d(block_in, cfg.z_channels, 3, 1, 1)

    def forward(self, x):
        h = self.conv_in(x)
        for level, stage in enumerate(self.down):
            for i, block in enumerate(stage.block):
                h = block(h)
                if len(stage.attn) > 0:
                    h = stage.attn[i](h)
            if level != len(self.down) - 1:
                h = stage.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(swish(self.norm_out(h)))


class BaseDecoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        block_in = cfg.ch * cfg.ch_mult[-1]
        self.conv_in, self.mid = nn.Conv2d(cfg.z_channels, block_in, 3, 1, 1), _mid(block_in)
        up = []
        for level in reversed(range(len(cfg.ch_mult))):
            stage, out = nn.Module(), cfg.ch * cfg.ch_mult[level]
            stage.block = nn.ModuleList(BaseResBlock(block_in if i == 0 else out, out) for i in range(cfg.num_res_blocks + 1))
            stage.attn = nn.ModuleList(BaseAttn(out) for _ in range(cfg.num_res_blocks + 1) if level in cfg.attn_levels)
            if level != 0:
                stage.upsample = BaseUp(out)
            up.insert(0, stage)
            block_in = out
        self.up = nn.ModuleList(up)
        self.norm_out, self.conv_out = norm(block_in), nn.Conv2d(block_in, 3, 3, 1, 1)

    def forward(self, z):
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for level in reversed(range(len(self.up))):
            stage = self.up[level]
            for i, block in enumerate(stage.block):
                h = block(h)
                if len(stage.attn) > 0:
                    h = stage.attn[i](h)
            if level != 0:
                h = stage.upsample(h)
        return self.conv_out(swish(self.norm_out(h)))


class BaseQuantize(nn.Module):
    def __init__(self, n, d):
        super().__init__()
        self.embedding = nn.Embedding(n, d)

    def forward(self, z, beta=0.25):
        """taming's VectorQuantizer2 forward: (z_q straight-through, loss, indices)."""
        z = z.permute(0, 2, 3, 1).contiguous()
        flat = z.view(-1, z.shape[-1])
        d = (flat ** 2).sum(1, keepdim=True) + (self.embedding.weight ** 2).sum(1) - 2 * flat @ self.embedding.weight.t()
        indices = torch.argmin(d, dim=1)
        z_q = self.embedding(indices).view(z.shape)
        loss = torch.mean((z_q.detach() - z) ** 2) + beta * torch.mean((z_q - z.detach()) ** 2)
        z_q = (z + (z_q - z).detach()).permute(0, 3, 1, 2).contiguous()
        return z_q, loss, indices.view(z.shape[:-1])


class BaselineVQGAN(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.encoder, self.decoder = BaseEncoder(cfg), BaseDecoder(cfg)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.code_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.code_dim, cfg.z_channels, 1)
        self.quantize = BaseQuantize(cfg.num_codes, cfg.code_dim)

    def encode(self, x):
        return self.quantize(self.quant_conv(self.encoder(x)))[2]

    def decode(self, codes):
        zq = self.quantize.embedding(codes).permute(0, 3, 1, 2)
        return self.decoder(self.post_quant_conv(zq))


# ------------------------------------------------------------------------------------------ timing


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def interleaved_medians(rows, repeats: int) -> dict:
    """Median seconds of each (name, encode, decode) row; repeats are interleaved across rows so that load from
    other processes on a shared machine falls on every variant alike. One warm-up call each first."""
    times = {name: ([], []) for name, _, _ in rows}
    for _, enc, dec in rows:
        enc(), dec()
    for _ in range(repeats):
        for name, enc, dec in rows:
            times[name][0].append(_timed(enc))
            times[name][1].append(_timed(dec))
    return {name: (statistics.median(e), statistics.median(d)) for name, (e, d) in times.items()}


def encode_with_blanket_autocast(tok: ImageTokenizer, x: torch.Tensor) -> torch.Tensor:
    """What mmtok's bf16 encode did before its mixed-precision policy: the whole encoder under autocast (trunk,
    norms and narrow layers in bf16 too), fp32 lookup. Shows what the policy costs in speed."""
    with torch.inference_mode(), torch.autocast(x.device.type, dtype=torch.bfloat16):
        latents = tok.model.encode_latents(x.contiguous(memory_format=torch.channels_last))
    return tok.model.latents_to_indices(latents.float())


def cold_encode_decode_child(kind: str, batch: int, size: int, codes: int) -> None:
    """Run in a fresh process: the first encode + decode of `batch` images (cold) and the median of the next
    two (warm). kind "default": the shipped default tokenizer; "baseline": the upstream-style model."""
    torch.manual_seed(0)
    x = torch.rand(batch, 3, size, size) * 2 - 1
    if kind == "default":
        tok = ImageTokenizer.default()
        fn = lambda: tok.decode(tok.encode(x))  # noqa: E731
    else:
        cfg = VQGANConfig(num_codes=codes, code_dim=256, z_channels=256, ch=128, ch_mult=[1, 1, 2, 2, 4],
                          num_res_blocks=2, attn_levels=[4], image_size=size)
        model = BaselineVQGAN(cfg).eval()

        def fn():
            with torch.no_grad():
                return model.decode(model.encode(x))
    print(json.dumps(first_and_warm(fn, warm_repeats=2)))


def cold_rows(batch: int, size: int, codes: int) -> dict:
    """Cold (first call in a fresh process) and warm encode+decode for the default tokenizer and the baseline."""
    rows = {}
    for kind, label in (("default", f"mmtok default tokenizer, {batch} images"),
                        ("baseline", f"upstream-style fp32, {batch} images")):
        rows[label] = cold_child(__file__, [kind, "--batch", str(batch), "--size", str(size), "--codes", str(codes)])
    print(f"\nfirst encode+decode in a fresh process (cold) vs the median of the next two (warm), {size}x{size}")
    print(f"{'variant':40s} {'cold s':>8s} {'warm s':>8s} {'cold/warm':>10s}")
    for label, r in rows.items():
        if "error" in r:
            print(f"{label:40s} error: {r['error']}")
        else:
            print(f"{label:40s} {r['cold_s']:8.2f} {r['warm_s']:8.2f} {r['cold_over_warm']:9.2f}x")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="batch 2, 3 repeats (for a 2-core machine)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--codes", type=int, default=1024, choices=(1024, 16384))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile", action="store_true", help="also time mmtok bf16 + torch.compile")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "image_tokenizer.json"))
    p.add_argument("--cold-batch", type=int, default=8, help="images in the cold / warm first-call rows")
    p.add_argument("--no-cold", action="store_true", help="skip the fresh-process (cold) rows")
    p.add_argument("--cold-child", choices=("default", "baseline"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.cold_child:
        return cold_encode_decode_child(args.cold_child, args.batch, args.size, args.codes)
    if args.quick:
        args.batch, args.repeats = 2, 3

    torch.manual_seed(0)
    cfg = VQGANConfig(num_codes=args.codes, code_dim=256, z_channels=256, ch=128, ch_mult=[1, 1, 2, 2, 4],
                      num_res_blocks=2, attn_levels=[4], image_size=args.size)
    device = torch.device(args.device)
    baseline = BaselineVQGAN(cfg).eval().to(device)
    state = {k.replace("quantize.embedding.weight", "quantize.codebook"): v for k, v in baseline.state_dict().items()}
    variants = {}
    channels_last = {"cpu": (True, False)}.get(device.type, (True,))  # channels-last is the default layout
    for dtype in (torch.float32, torch.bfloat16):
        for cl in channels_last:
            name = f"mmtok {'fp32' if dtype == torch.float32 else 'bf16'}{'' if cl else ' NCHW'}"
            tok = ImageTokenizer(cfg, dtype=dtype, device="cpu", channels_last=cl)
            tok.model.load_state_dict(state)
            variants[name] = tok.to(device)
    if args.compile:
        tok = ImageTokenizer(cfg, dtype=torch.bfloat16, device="cpu", channels_last=True)
        tok.model.load_state_dict(state)
        variants["mmtok bf16 compiled"] = tok.to(device).compile()

    x = torch.rand(args.batch, 3, args.size, args.size, device=device) * 2 - 1
    with torch.no_grad():
        base_codes = baseline.encode(x)
    ours_codes = variants["mmtok fp32"].encode(x)
    agree = (base_codes == ours_codes).float().mean().item()
    print(f"fp32 codes equal to the baseline's: {agree * 100:.2f} %")
    bf16_agree = (variants["mmtok bf16"].encode(x) == ours_codes).float().mean().item()
    blanket_agree = (encode_with_blanket_autocast(variants["mmtok bf16"], x) == ours_codes).float().mean().item()
    print(f"bf16 codes equal to fp32's (random weights, so many near-ties): {bf16_agree * 100:.2f} % "
          f"(autocast everywhere: {blanket_agree * 100:.2f} %)")

    def run_baseline_encode():
        with torch.no_grad():
            baseline.encode(x)

    def run_baseline_decode():
        with torch.no_grad():
            baseline.decode(base_codes)

    rows = [("upstream-style fp32", run_baseline_encode, run_baseline_decode)]
    for name, tok in variants.items():
        rows.append((name, (lambda t=tok: t.encode(x)), (lambda t=tok: t.decode(base_codes))))
    blanket = variants["mmtok bf16"]
    rows.append(("bf16 autocast everywhere", lambda: encode_with_blanket_autocast(blanket, x),
                 lambda: blanket.decode(base_codes)))

    results = {}
    for name, (t_enc, t_dec) in interleaved_medians(rows, args.repeats).items():
        results[name] = {"encode_images_per_s": args.batch / t_enc, "decode_images_per_s": args.batch / t_dec}
    base = results["upstream-style fp32"]
    print(f"\nimage tokenizer, {args.size}x{args.size}, batch {args.batch}, {args.codes} codes, device {device}, "
          f"threads {torch.get_num_threads()}, median of {args.repeats}")
    print(f"{'variant':28s} {'encode img/s':>13s} {'ratio':>7s} {'decode img/s':>13s} {'ratio':>7s}")
    for name, r in results.items():
        r["encode_ratio"] = r["encode_images_per_s"] / base["encode_images_per_s"]
        r["decode_ratio"] = r["decode_images_per_s"] / base["decode_images_per_s"]
        print(f"{name:28s} {r['encode_images_per_s']:13.3f} {r['encode_ratio']:6.2f}x "
              f"{r['decode_images_per_s']:13.3f} {r['decode_ratio']:6.2f}x")
    cold = {} if args.no_cold or device.type != "cpu" else cold_rows(args.cold_batch, args.size, args.codes)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"args": vars(args), "codes_agree_with_baseline": agree, "bf16_codes_agree_with_fp32": bf16_agree,
                   "blanket_bf16_codes_agree_with_fp32": blanket_agree, "platform": platform.platform(),
                   "torch": torch.__version__, "results": results, "cold_warm": cold}, f, indent=2)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
