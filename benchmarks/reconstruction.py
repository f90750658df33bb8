"""Held-out reconstruction quality of an image tokenizer: PSNR, SSIM and codebook usage at 256x256.

Held-out photos: the repository's fixture photos (tests/data/images: scikit-image's astronaut, chelsea,
coffee, rocket, hubble_deep_field) plus, when present, the held-out list written by
scripts/fetch_training_photos.sh (mate-backgrounds' nature photos; no photo of that package is trained on).
Each photo is centre-cropped to 256x256 (the tokenizer's preprocessing), encoded, decoded and compared in
8-bit pixels. Baselines for the ratios: bicubic down/up-sampling by the same factor f as the tokenizer
(a codec-free reference with as many pixels as the latent grid has positions), and the mean-colour image.

    python benchmarks/reconstruction.py [--model DIR] [--heldout /tmp/vqgan_data/heldout.txt] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from mmtok.train.metrics import code_usage, psnr, ssim  # noqa: E402

FIXTURES = os.path.join(ROOT, "tests", "data", "images")
DEFAULT_HELDOUT = "/tmp/vqgan_data/heldout.txt"


def heldout_paths(extra_list: str | None, quick: bool) -> list[str]:
    paths = sorted(os.path.join(FIXTURES, f) for f in os.listdir(FIXTURES) if f.lower().endswith((".png", ".jpg")))
    if extra_list and os.path.isfile(extra_list):
        with open(extra_list, encoding="utf-8") as f:
            paths += [line.strip() for line in f if line.strip() and os.path.isfile(line.strip())]
    return paths[:3] if quick else paths


def load_tokenizer(model_dir: str | None):
    if model_dir:
        from mmtok.image import ImageTokenizer

        return ImageTokenizer.from_pretrained(model_dir)
    from mmtok.train.default_model import load_default_image_tokenizer

    return load_default_image_tokenizer()


def bicubic_baseline(images: torch.Tensor, factor: int) -> torch.Tensor:
    small = F.interpolate(images, scale_factor=1 / factor, mode="bicubic", antialias=True, align_corners=False)
    return F.interpolate(small, size=images.shape[-2:], mode="bicubic", align_corners=False).clamp(-1, 1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="tokenizer directory (default: the shipped default tokenizer)")
    parser.add_argument("--heldout", default=DEFAULT_HELDOUT, help="text file of extra held-out photo paths")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats (median reported)")
    parser.add_argument("--quick", action="store_true", help="3 photos, 1 repeat")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "reconstruction.json"))
    args = parser.parse_args(argv)

    tok = load_tokenizer(args.model)
    paths = heldout_paths(args.heldout, args.quick)
    images = tok.prepare_images(paths, size=args.size, mode="center_crop")
    times, codes, recon = [], None, None
    for _ in range(1 if args.quick else args.repeats):
        start = time.perf_counter()
        codes = tok.encode(images)
        recon = tok.decode(codes)
        times.append(time.perf_counter() - start)
    f = tok.downsample_factor
    rows = {
        "tokenizer": (psnr(images, recon), ssim(images, recon)),
        f"bicubic x1/{f}": (psnr(images, bicubic_baseline(images, f)), ssim(images, bicubic_baseline(images, f))),
        "mean colour": (psnr(images, images.mean((2, 3), keepdim=True).expand_as(images)),
                        ssim(images, images.mean((2, 3), keepdim=True).expand_as(images))),
    }
    usage = code_usage(codes, tok.num_codes)
    names = [os.path.basename(p) for p in paths]
    print(f"model: {args.model or 'default'} | f{f}, {tok.num_codes} codes | {len(paths)} held-out photos at "
          f"{args.size}x{args.size} | {codes.shape[1] * codes.shape[2]} tokens/image")
    print(f"{'photo':28s} {'PSNR dB':>8s} {'SSIM':>6s} {'bicubic PSNR':>13s}")
    tp, ts = rows["tokenizer"]
    bp = rows[f"bicubic x1/{f}"][0]
    for i, name in enumerate(names):
        print(f"{name:28s} {float(tp[i]):8.2f} {float(ts[i]):6.3f} {float(bp[i]):13.2f}")
    print(f"\n{'method':20s} {'mean PSNR':>10s} {'mean SSIM':>10s} {'PSNR vs tokenizer':>18s}")
    summary = {}
    for method, (p, s) in rows.items():
        summary[method] = {"psnr": float(p.mean()), "ssim": float(s.mean())}
        print(f"{method:20s} {float(p.mean()):10.2f} {float(s.mean()):10.3f} {float(p.mean()) - float(tp.mean()):+17.2f} dB")
    print(f"\ncodebook: usage {usage['usage']:.1%} ({usage['codes_used']}/{tok.num_codes} codes over "
          f"{usage['tokens']} tokens), perplexity {usage['perplexity']:.1f}")
    print(f"encode+decode: {statistics.median(times) * 1000 / len(paths):.1f} ms/image (median of {len(times)})")
    result = {"model": args.model or "default", "size": args.size, "photos": names,
              "psnr": {n: float(v) for n, v in zip(names, tp)}, "ssim": {n: float(v) for n, v in zip(names, ts)},
              "summary": summary, "codebook": usage, "ms_per_image": statistics.median(times) * 1000 / len(paths)}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
