"""Tokenizer-zoo throughput: mmtok (fp32 / bf16) against each family's upstream package, in the same run.

Every family is timed at a released configuration with random weights: the upstream model is built once with the
upstream package's own class (seeded), saved in the layout users download, and each variant then runs in a fresh
process (`--worker`) that loads that folder (upstream with its own `from_pretrained`, mmtok with `mmtok.load`),
times the first call (cold) and the best of the next `--repeats` calls (warm), and reports its peak memory
(the rise of the process's peak RSS, reset before each step, over what it held before the step) and its codes. Variants are interleaved
round by round (`--rounds`), and each ratio is taken between the best times of the same run, so load from
other processes on the machine affects both sides alike. The codes of every variant are compared with the
upstream fp32 codes (positions whose best-vs-second code margin is below 1e-4 in fp32, resp. 1e-2 for bf16,
are not counted). Prints one table per family and writes benchmarks/results/tokenizer_zoo.json.

    python benchmarks/tokenizer_zoo.py --quick                 # aMUSEd 256 + MoVQ 256, batch 1, 1 round
    python benchmarks/tokenizer_zoo.py --families amused --batch 2 --rounds 3 --threads 2

Families (add yours to FAMILIES: `build(folder)` saves the upstream model, `upstream(folder)` loads it and
returns (encode, decode) callables on float images / int codes):
    chameleon  transformers ChameleonVQVAE, Chameleon-7B config, 512 px (decode: mmtok with a taming decoder only)
    janus   transformers JanusVQVAE, Janus-Pro config, 384 px
    amused  diffusers VQModel, aMUSEd-256's VQ-GAN config (group norm, f16, 8192 codes, 64-d), 256 px
    movq    diffusers VQModel, Kandinsky 2.2's MoVQ config (spatial norm, f8, 16384 codes, 4-d), 256 px
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import machine, max_rss_mb, print_table, write_json  # noqa: E402

# ---------------------------------------------------------------------------------------- families
# Released configs (the config.json of the published VQ models, as remembered; random weights here).
AMUSED_256 = dict(
    in_channels=3, out_channels=3, block_out_channels=[128, 256, 256, 512, 768],
    down_block_types=["DownEncoderBlock2D"] * 5, up_block_types=["UpDecoderBlock2D"] * 5, layers_per_block=2,
    latent_channels=64, num_vq_embeddings=8192, norm_num_groups=32, mid_block_add_attention=False,
    lookup_from_codebook=True, force_upcast=True, scaling_factor=0.18215, sample_size=32)
MOVQ = dict(
    in_channels=3, out_channels=3, block_out_channels=[128, 256, 256, 512],
    down_block_types=["DownEncoderBlock2D"] * 3 + ["AttnDownEncoderBlock2D"],
    up_block_types=["AttnUpDecoderBlock2D"] + ["UpDecoderBlock2D"] * 3, layers_per_block=2,
    latent_channels=4, vq_embed_dim=4, num_vq_embeddings=16384, norm_num_groups=32, norm_type="spatial",
    scaling_factor=0.18215, sample_size=256)


def _diffusers_build(config):
    def build(folder: pathlib.Path) -> None:
        from diffusers import VQModel

        torch.manual_seed(0)
        model = VQModel(**config)
        with torch.no_grad():  # a spread-out codebook (diffusers' init draws it from a tiny interval)
            model.quantize.embedding.weight.normal_(0.0, 1.0)
        model.save_pretrained(folder)
    return build


def _diffusers_upstream(folder: pathlib.Path):
    from diffusers import VQModel

    model = VQModel.from_pretrained(folder).eval()
    dim = model.quantize.embedding.weight.shape[1]

    def encode(x):
        latents = model.encode(x).latents
        return model.quantize(latents)[2][2].view(x.shape[0], latents.shape[2], latents.shape[3])

    def decode(codes):
        b, h, w = codes.shape
        if model.config.lookup_from_codebook:
            return model.decode(codes.reshape(b, -1), force_not_quantize=True, shape=(b, h, w, dim)).sample
        rows = model.quantize.embedding.weight[codes].permute(0, 3, 1, 2)
        return model.decode(rows, force_not_quantize=True).sample

    return encode, decode


# transformers' released VQ configs (ChameleonVQVAEConfig defaults = facebook/chameleon-7b's vq_config; Janus-Pro:
# JanusVQVAEConfig defaults with num_patches 24, i.e. 384 px -> 24 x 24 codes)
CHAMELEON_512 = dict()
JANUS_PRO_384 = dict(num_patches=24)


def _transformers_classes(kind: str):
    from transformers import ChameleonVQVAE, ChameleonVQVAEConfig, JanusVQVAE, JanusVQVAEConfig

    return (ChameleonVQVAE, ChameleonVQVAEConfig) if kind == "chameleon" else (JanusVQVAE, JanusVQVAEConfig)


def _transformers_build(kind: str, config: dict):
    """Seeded random model; quant_conv widened (x20) and the codebook drawn like the latents (per-channel mean +
    std * N(0,1) on a small probe image), so codes are not all near-ties. Chameleon: a taming-layout decoder
    (`vqgan.ckpt`, mmtok's own random Decoder under taming's key names) for mmtok's decode; transformers has none."""
    def build(folder: pathlib.Path) -> None:
        model_cls, config_cls = _transformers_classes(kind)
        torch.manual_seed(0)
        model = model_cls(config_cls(**config)).eval()
        with torch.no_grad():
            model.quant_conv.weight.mul_(20.0)
            model.quant_conv.bias.mul_(20.0)
            probe = torch.rand((1, 3, 64, 64), generator=torch.Generator().manual_seed(2)) * 2 - 1
            rows = model.quant_conv(model.encoder(probe)).permute(0, 2, 3, 1).reshape(-1, model.config.embed_dim)
            book = model.quantize.embedding.weight
            book.copy_(rows.mean(0) + rows.std(0) * torch.randn(book.shape, generator=torch.Generator().manual_seed(3)))
        model.save_pretrained(folder)
        if kind == "chameleon":
            from mmtok.image.autoencoder import Decoder
            from mmtok.image.transformers_vq import chameleon_config

            torch.manual_seed(1)
            decoder = Decoder(chameleon_config(model.config.to_dict()))
            torch.save({"state_dict": {f"decoder.{k}": v for k, v in decoder.state_dict().items()}},
                       folder / "vqgan.ckpt")
    return build


def _transformers_upstream(kind: str):
    def upstream(folder: pathlib.Path):
        model_cls, _ = _transformers_classes(kind)
        model = model_cls.from_pretrained(folder).eval()
        f = 2 ** (len(model.config.channel_multiplier) - 1)

        def encode(x):
            return model.encode(x).image_tokens.view(x.shape[0], x.shape[2] // f, x.shape[3] // f)

        def decode(codes):
            return model.decode(codes.reshape(codes.shape[0], -1))

        return encode, (decode if kind == "janus" else None)
    return upstream


def _transformers_margins(kind: str):
    def margins(folder: pathlib.Path, batch: int, size: int) -> torch.Tensor:
        """Plain-L2 margins of transformers' fp32 latents (the lookup of ChameleonVQVAE / JanusVQVAE.encode)."""
        model_cls, _ = _transformers_classes(kind)
        model = model_cls.from_pretrained(folder).eval()
        g = torch.Generator().manual_seed(1)
        x = torch.rand((batch, 3, size, size), generator=g) * 2 - 1
        with torch.no_grad():
            z = model.quant_conv(model.encoder(x))
        rows = z.double().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        d = torch.cdist(rows, model.quantize.embedding.weight.double()).topk(2, largest=False).values
        return (d[:, 1] - d[:, 0]).view(batch, z.shape[2], z.shape[3])
    return margins


FAMILIES = {
    "amused": dict(build=_diffusers_build(AMUSED_256), upstream=_diffusers_upstream, size=256,
                   what="diffusers VQModel, aMUSEd-256 config (group norm, f16, 8192x64)"),
    "movq": dict(build=_diffusers_build(MOVQ), upstream=_diffusers_upstream, size=256,
                 what="diffusers VQModel, Kandinsky 2.2 MoVQ config (spatial norm, f8, 16384x4)"),
    # mmtok decodes Chameleon with a taming-layout decoder checkpoint (transformers has no decoder: no upstream
    # decode row); Janus is timed with lookup="transformers" so that its codes compare with JanusVQVAE.encode's
    # (the default upstream-Janus lookup costs the same: one nearest_code call on normalised copies).
    "chameleon": dict(build=_transformers_build("chameleon", CHAMELEON_512), upstream=_transformers_upstream("chameleon"),
                      margins=_transformers_margins("chameleon"), size=512,
                      mmtok_options=lambda folder: {"decoder_checkpoint": folder / "vqgan.ckpt"},
                      what="transformers ChameleonVQVAE, Chameleon-7B config (f16, 8192x256; decode: mmtok only)"),
    "janus": dict(build=_transformers_build("janus", JANUS_PRO_384), upstream=_transformers_upstream("janus"),
                  margins=_transformers_margins("janus"), size=384, mmtok_options=lambda folder: {"lookup": "transformers"},
                  what="transformers JanusVQVAE, Janus-Pro config (f16, 16384x8, 24x24 codes)"),
}
VARIANTS = ["upstream fp32", "mmtok fp32", "mmtok bf16"]


# ------------------------------------------------------------------------------------------ worker
def _peak_mb(reset: bool = False) -> float:
    """This process's peak RSS (VmHWM) in MiB; `reset` restarts the peak at the current RSS (Linux)."""
    if reset:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return max_rss_mb()


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return max_rss_mb()


def _time(fn, repeats: int) -> tuple[float, float, object]:
    t0 = time.perf_counter()
    out = fn()
    cold = time.perf_counter() - t0
    warm = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        warm = min(warm, time.perf_counter() - t0)
    return cold, warm, out


def worker(args) -> None:
    torch.set_num_threads(args.threads)
    family = FAMILIES[args.family]
    folder = pathlib.Path(args.folder)
    g = torch.Generator().manual_seed(1)
    x = torch.rand((args.batch, 3, family["size"], family["size"]), generator=g) * 2 - 1
    codes_in = torch.load(folder / "codes.pt") if (folder / "codes.pt").exists() else None
    if args.variant == "upstream fp32":
        encode, decode = family["upstream"](folder)
    else:
        import mmtok

        dtype = torch.bfloat16 if args.variant.endswith("bf16") else torch.float32
        tok = mmtok.load(folder, dtype=dtype, **family.get("mmtok_options", lambda _: {})(folder))
        encode, decode = tok.encode, (lambda c: tok.decode(c, clamp=False))
    result = {}
    with torch.inference_mode():
        base = _rss_mb()
        _peak_mb(reset=True)
        cold, warm, codes = _time(lambda: encode(x), args.repeats)
        result.update(encode_cold=cold, encode_warm=warm, encode_peak_mb=_peak_mb() - base)
        if decode is None:  # no upstream decoder (Chameleon in transformers)
            result.update(decode_cold=None, decode_warm=None, decode_peak_mb=None)
        else:
            base = _rss_mb()
            _peak_mb(reset=True)
            cold, warm, _ = _time(lambda: decode(codes_in if codes_in is not None else codes), args.repeats)
            result.update(decode_cold=cold, decode_warm=warm, decode_peak_mb=_peak_mb() - base)
    torch.save(codes.cpu(), folder / f"codes-{args.variant.replace(' ', '_')}.pt")
    print("RESULT " + json.dumps(result))


def run_worker(family: str, folder: pathlib.Path, variant: str, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--family", family, "--folder", str(folder), "--variant", variant,
           "--batch", str(args.batch), "--repeats", str(args.repeats), "--threads", str(args.threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{family} / {variant} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _margins(folder: pathlib.Path, batch: int, size: int) -> torch.Tensor:
    """fp32 upstream latents' best-vs-second codebook distance margin per position (computed once here)."""
    upstream = pathlib.Path(folder)
    from diffusers import VQModel

    model = VQModel.from_pretrained(upstream).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand((batch, 3, size, size), generator=g) * 2 - 1
    with torch.no_grad():
        z = model.encode(x).latents
    rows = z.double().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    d = torch.cdist(rows, model.quantize.embedding.weight.double()).topk(2, largest=False).values
    return (d[:, 1] - d[:, 0]).view(batch, z.shape[2], z.shape[3])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="warm calls per process (best one counts)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="1 round, 1 warm call")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--family", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    if args.quick:
        args.rounds, args.repeats = 1, 1
    report = {"settings": {k: getattr(args, k) for k in ("batch", "rounds", "repeats", "threads")}, "families": {}}
    for family in args.families:
        spec = FAMILIES[family]
        with tempfile.TemporaryDirectory(prefix=f"zoo-{family}-") as tmp:
            folder = pathlib.Path(tmp)
            spec["build"](folder)
            margin = spec.get("margins", _margins)(folder, args.batch, spec["size"])
            best: dict[str, dict] = {}
            for _ in range(args.rounds):
                for variant in VARIANTS:
                    r = run_worker(family, folder, variant, args)
                    if variant == "upstream fp32" and not (folder / "codes.pt").exists():
                        # every variant decodes upstream's codes
                        torch.save(torch.load(folder / "codes-upstream_fp32.pt"), folder / "codes.pt")
                    b = best.setdefault(variant, dict(r))
                    for key, value in r.items():
                        if value is None or b[key] is None:
                            continue
                        b[key] = min(b[key], value) if key.endswith(("warm", "cold")) else max(b[key], value)
            reference = torch.load(folder / "codes-upstream_fp32.pt")
            for variant in VARIANTS:
                codes = torch.load(folder / f"codes-{variant.replace(' ', '_')}.pt")
                sure = margin > (1e-2 if variant.endswith("bf16") else 1e-4)
                best[variant]["codes_equal_where_sure"] = bool(torch.equal(codes[sure], reference[sure]))
                best[variant]["codes_equal_all"] = float((codes == reference).double().mean())
        base = best["upstream fp32"]
        rows = []
        for variant in VARIANTS:
            r = best[variant]
            n = args.batch
            dec = r["decode_warm"]
            dec_ratio = base["decode_warm"] / dec if dec is not None and base["decode_warm"] is not None else None
            rows.append([variant, n / r["encode_warm"], base["encode_warm"] / r["encode_warm"], r["encode_cold"],
                         r["encode_peak_mb"], n / dec if dec is not None else None, dec_ratio,
                         r["decode_cold"], r["decode_peak_mb"], f"{r['codes_equal_all']:.4f}",
                         r["codes_equal_where_sure"]])
        print(f"\n{family}: {spec['what']}, {spec['size']} px, batch {args.batch}, {args.threads} thread(s)")
        print_table(["variant", "enc img/s", "enc x", "enc cold s", "enc peak MiB", "dec img/s", "dec x",
                     "dec cold s", "dec peak MiB", "codes = up", "= where sure"], rows)
        report["families"][family] = {"what": spec["what"], "size": spec["size"], "variants": best}
    write_json("tokenizer_zoo", report)


if __name__ == "__main__":
    main()
