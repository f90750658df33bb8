"""Builders for the dataset-tokenization tests: a folder of real and broken inputs, a tiny tokenizer."""
from __future__ import annotations

import json
import pathlib
import shutil

import av
import numpy as np

DATA = pathlib.Path(__file__).parent / "data"
LLAMAGEN = DATA / "checkpoints" / "llamagen_tiny"


def save_tiny_image_tokenizer(folder: pathlib.Path):
    """The tiny LlamaGen fixture, saved with save_pretrained (what --image-tokenizer takes)."""
    from mmtok.image import ImageTokenizer

    tok = ImageTokenizer.from_llamagen(LLAMAGEN / "model.pt", config_path=LLAMAGEN / "config.json")
    tok.save_pretrained(folder)
    return ImageTokenizer.from_pretrained(folder)


def write_video(path: pathlib.Path, rng: np.random.Generator, seconds: float = 2.0, fps: int = 10,
                size: tuple[int, int] = (96, 72), with_audio: bool = True) -> None:
    """A moving-square H.264 clip with a tone on its audio track, written with PyAV."""
    width, height = size
    background = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=16000, layout="mono") if with_audio else None
        for i in range(int(seconds * fps)):
            image = background.copy()
            x = (i * 5) % (width - 16)
            image[20:36, x: x + 16] = (255, 40, 40)
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if audio is not None:
            t = np.arange(int(seconds * 16000)) / 16000
            wave = (0.3 * np.sin(2 * np.pi * rng.uniform(150, 600) * t)).astype(np.float32)
            for start in range(0, wave.size, 1024):
                frame = av.AudioFrame.from_ndarray(wave[None, start: start + 1024], format="flt", layout="mono")
                frame.sample_rate = 16000
                for packet in audio.encode(frame):
                    container.mux(packet)
            for packet in audio.encode():
                container.mux(packet)


def build_dataset(root: pathlib.Path, rng: np.random.Generator) -> dict:
    """Real photos, speech (+ a generated clip), a video, and planted bad files; returns what is where."""
    from PIL import Image
    import soundfile

    media = root / "media"
    (media / "photos").mkdir(parents=True)
    (media / "speech").mkdir()
    (media / "video").mkdir()
    photos = sorted(p for p in (DATA / "images").iterdir() if p.suffix in (".png", ".jpg"))
    for p in photos:
        img = Image.open(p).convert("RGB")
        img.thumbnail((160, 160))  # small copies keep the test fast; still real photos
        img.save(media / "photos" / (p.stem + ".png"))
    random_image = rng.integers(0, 255, size=(48, 80, 3), dtype=np.uint8)
    Image.fromarray(random_image).save(media / "photos" / "random.png")
    shutil.copy(DATA / "audio" / "arctic_a0007.wav", media / "speech" / "arctic_a0007.wav")
    tone = (0.2 * rng.standard_normal(16000 * 2)).astype(np.float32)
    soundfile.write(media / "speech" / "noise_22k.flac",
                    np.interp(np.arange(44100) / 22050, np.arange(tone.size) / 16000, tone), 22050)
    write_video(media / "video" / "clip.mp4", rng)
    # planted bad files
    good_png = (media / "photos" / "random.png").read_bytes()
    (media / "photos" / "truncated.png").write_bytes(good_png[: len(good_png) // 2])
    (media / "speech" / "empty.wav").write_bytes(b"")
    (media / "video" / "garbage.mp4").write_bytes(rng.integers(0, 256, size=4096, dtype=np.uint8).tobytes())
    manifest = root / "extra.jsonl"
    manifest.write_text("\n".join([
        json.dumps({"path": "media/photos/chelsea.png", "key": "cat", "caption": "a cat"}),
        json.dumps({"path": "media/photos/missing.png", "key": "missing"}),
        "media/speech/arctic_a0007.wav",
        "{not json",
    ]) + "\n")
    good = {"photos": [f"photos/{p.stem}.png" for p in photos] + ["photos/random.png"],
            "audio": ["speech/arctic_a0007.wav", "speech/noise_22k.flac"], "video": ["video/clip.mp4"]}
    bad = ["photos/truncated.png", "speech/empty.wav", "video/garbage.mp4", "missing"]
    return {"media": media, "manifest": manifest, "good": good, "bad": bad}
