"""The VQ-GAN training loop on tiny models and synthetic photos: learning, exact resume, discriminator
switch-on, export to an `ImageTokenizer` directory."""
from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from PIL import Image

from mmtok.image import ImageTokenizer
from mmtok.train.config import TrainConfig
from mmtok.train.trainer import VQGANTrainer

TINY = {"num_codes": 32, "code_dim": 4, "z_channels": 32, "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1,
        "attn_levels": [], "image_size": 32}


def smooth_photos(count: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Low-frequency random colour fields (photo-like smoothness) as uint8 (3, H, W)."""
    photos = []
    for _ in range(count):
        coarse = torch.rand(1, 3, 6, 7, generator=generator)
        photos.append(F.interpolate(coarse, size=(60, 70), mode="bicubic", align_corners=False)[0]
                      .clamp(0, 1).mul(255).round().to(torch.uint8))
    return photos


def tiny_config(tmp_path, **overrides) -> TrainConfig:
    base = dict(model=dict(TINY), crop=16, min_side=32, max_side=70, batch_size=4, steps=4, lr=2e-3,
                warmup_steps=1, disc_start=-1, disc_layers=1, disc_ndf=16, out_dir=str(tmp_path / "run"),
                log_every=2, grid_every=0, ckpt_every=10**6, ckpt_minutes=1e6, bf16=False)
    base.update(overrides)
    return TrainConfig(**base)


def test_a_few_steps_reduce_the_loss(tmp_path, seed):
    photos = smooth_photos(4, torch.Generator().manual_seed(seed))
    trainer = VQGANTrainer(tiny_config(tmp_path, steps=30, lr=3e-3, seed=seed % 1000, bf16=True), photos,
                           progress=False)
    fixed = trainer.data.batch(8)

    def fixed_batch_loss() -> float:
        trainer.raw.eval()
        with torch.no_grad():
            recon, _ = trainer.raw(fixed)
        return float((recon - fixed).abs().mean() + (recon - fixed).square().mean())

    before = fixed_batch_loss()
    history = trainer.fit()
    after = fixed_batch_loss()
    assert after < 0.85 * before, (before, after)
    assert sum(r["rec"] for r in history[-5:]) < sum(r["rec"] for r in history[:5])
    assert all(torch.isfinite(p).all() for p in trainer.raw.parameters())


def _weights(trainer: VQGANTrainer) -> dict:
    return {**{f"g.{k}": v.clone() for k, v in trainer.raw.state_dict().items()},
            **{f"d.{k}": v.clone() for k, v in trainer.disc.state_dict().items()}}


def test_resume_continues_identically(tmp_path, seed):
    photos = smooth_photos(3, torch.Generator().manual_seed(seed))
    cfg = tiny_config(tmp_path, steps=6, disc_start=2, grad_accum=2, seed=seed % 1000)
    straight = VQGANTrainer(cfg, photos, progress=False)
    expected = straight.fit()

    first = VQGANTrainer(cfg, photos, progress=False)
    first.fit(steps=3)
    path = str(tmp_path / "ckpt" / "step_0000003.safetensors")
    first.save(path)
    torch.manual_seed(seed + 1)  # the global RNG moves on: the checkpoint must restore it
    resumed = VQGANTrainer(cfg, photos, progress=False)
    resumed.resume(str(tmp_path / "ckpt"))  # a directory resumes from latest.safetensors
    assert resumed.step == 3
    rest = resumed.fit()
    got = first.history + rest
    keys = ("loss", "rec", "vq", "perplexity", "d_loss", "g_loss", "d_weight")
    assert [{k: r.get(k) for k in keys} for r in got] == [{k: r.get(k) for k in keys} for r in expected]
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_discriminator_switches_on_at_its_step(tmp_path, seed):
    photos = smooth_photos(2, torch.Generator().manual_seed(seed))
    trainer = VQGANTrainer(tiny_config(tmp_path, steps=5, disc_start=3, seed=seed % 1000), photos, progress=False)
    before = {k: v.clone() for k, v in trainer.disc.state_dict().items()}
    trainer.fit(steps=3)  # steps 0, 1, 2: discriminator off
    assert all("d_loss" not in r and "g_loss" not in r for r in trainer.history)
    assert all(torch.equal(before[k], v) for k, v in trainer.disc.state_dict().items())
    trainer.fit(steps=5)  # steps 3, 4: on
    assert all("d_loss" in r and r["d_weight"] > 0 for r in trainer.history[3:])
    changed = [k for k, v in trainer.disc.state_dict().items() if k.endswith("weight") and not torch.equal(before[k], v)]
    assert changed


def test_export_loads_as_image_tokenizer(tmp_path, seed):
    photos = smooth_photos(2, torch.Generator().manual_seed(seed))
    trainer = VQGANTrainer(tiny_config(tmp_path, steps=3, seed=seed % 1000), photos, progress=False)
    trainer.fit()
    out = trainer.export(str(tmp_path / "tok"), dtype=torch.float16)
    config = json.loads((tmp_path / "tok" / "config.json").read_text())
    assert config["num_codes"] == TINY["num_codes"] and config["source"] == "mmtok"
    tok = ImageTokenizer.from_pretrained(out, channels_last=False)
    x = trainer.data.batch(2)
    codes = tok.encode(x)
    trainer.raw.eval()
    with torch.no_grad():
        expected = trainer.raw.vq.latents_to_indices(trainer.raw.vq.encode_latents(x))
        recon = trainer.raw.vq.decode_latents(trainer.raw.vq.indices_to_latents(codes))
    # fp16 storage may flip near-tie codes; nearly all must agree, and decoding the same codes must match
    assert (codes == expected).float().mean() > 0.9
    torch.testing.assert_close(tok.decode(codes, clamp=False), recon, atol=2e-2, rtol=2e-2)
    preview = tmp_path / "grid.png"
    trainer.write_preview(str(preview))
    assert preview.stat().st_size > 0


def test_cli_trains_resumes_and_exports(tmp_path, seed):
    from mmtok.__main__ import main

    photos = smooth_photos(2, torch.Generator().manual_seed(seed))
    for i, photo in enumerate(photos):
        Image.fromarray(photo.permute(1, 2, 0).numpy()).save(tmp_path / f"p{i}.png")
    out = tmp_path / "run"
    common = [str(tmp_path), "--out-dir", str(out), "--model", json.dumps(TINY), "--crop", "16", "--min-side", "32",
              "--batch-size", "2", "--grid-every", "0", "--seed", str(seed % 1000), "--no-bf16"]
    assert main(["train-vqgan", *common, "--steps", "2"]) == 0
    assert main(["train-vqgan", *common, "--steps", "3", "--resume", str(out / "checkpoints"),
                 "--export", str(tmp_path / "tok"), "--export-fp16"]) == 0
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 3]
    tok = ImageTokenizer.from_pretrained(tmp_path / "tok")
    assert tok.num_codes == TINY["num_codes"] and tok.downsample_factor == 2


def test_init_weights_fine_tunes_from_a_checkpoint_or_a_tokenizer(tmp_path, seed):
    """--init: the new run starts from the given weights (step 0, fresh optimisers); a tokenizer directory of
    another architecture is refused with both architectures named."""
    photos = smooth_photos(3, torch.Generator().manual_seed(seed))
    first = VQGANTrainer(tiny_config(tmp_path, steps=3, seed=seed % 1000), photos, progress=False)
    first.fit()
    checkpoint = str(tmp_path / "first.safetensors")
    first.save(checkpoint)
    exported = first.export(str(tmp_path / "exported"))
    trained = first.raw.vq.state_dict()

    for source in (checkpoint, exported):
        second = VQGANTrainer(tiny_config(tmp_path / source[-3:], crop=32, seed=seed % 1000 + 1), photos,
                              progress=False)
        assert not torch.equal(second.raw.vq.encoder.conv_in.weight, trained["encoder.conv_in.weight"])
        second.init_weights(source)
        assert second.step == 0
        for name, value in second.raw.vq.state_dict().items():
            if name in trained and not name.startswith("quantize.ema"):
                assert torch.equal(value, trained[name]), (source, name)
        record = second.train_step()  # trains on from there (EMA statistics restarted for a directory)
        assert record["step"] == 1 and torch.isfinite(torch.tensor(record["loss"]))

    other = VQGANTrainer(tiny_config(tmp_path / "other", model=dict(TINY, num_codes=64)), photos, progress=False)
    try:
        other.init_weights(exported)
    except ValueError as exc:
        assert "architecture" in str(exc) and "64" in str(exc)
    else:
        raise AssertionError("an exported tokenizer of another architecture was accepted")
