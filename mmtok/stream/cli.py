"""Command-line tools for streams: `mmtok video-tokens` and `mmtok qwen-vl-tokens` (see `register`).

Both write JSON Lines, one sample per line ({"id", "ids", "vocab_hash", ...}), and the vocabulary as
`vocab.json` next to the output, so the ids can be decoded later with the layout that made them.
"""
from __future__ import annotations

import argparse
import json
import pathlib


def _add_tokenizer_options(parser: argparse.ArgumentParser, *, audio: bool, video: bool = False) -> None:
    parser.add_argument("--image-tokenizer", required=not video, type=pathlib.Path,
                        help="an image tokenizer: anything mmtok.load reads (docs/tokenizer-zoo.md)")
    if video:
        parser.add_argument("--video-tokenizer", type=pathlib.Path,
                            help="a spatio-temporal video tokenizer (codes (t, h, w), e.g. Emu3), anything mmtok.load "
                                 "reads, instead of per-frame image codes")
    if audio:
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--audio-tokenizer", type=pathlib.Path, help="AudioTokenizer directory (BEST-RQ)")
        group.add_argument("--best-rq", action="store_true", help="the default AudioTokenizer() (seed 0)")
        group.add_argument("--audio-codec", type=pathlib.Path,
                           help="an audio codec: anything mmtok.load reads (docs/audio_codec.md)")
    parser.add_argument("--max-grid", type=int, default=64, help="largest grid side a resolution token holds")
    parser.add_argument("--no-end-of-row", action="store_true", help="images without end-of-row tokens")
    parser.add_argument("--out", required=True, type=pathlib.Path, help="output .jsonl file")


def _build_stream(args):
    from mmtok.tokenizer import load
    from mmtok.tokenizer.protocol import expect_modality

    from .token_stream import TokenStream

    def checked(path, modality, name, decodable=None):
        tokenizer = load(path)
        expect_modality(tokenizer, modality, f"{name} {path}", decodable=decodable)
        return tokenizer

    if args.image_tokenizer is None and getattr(args, "video_tokenizer", None) is None:
        raise ValueError("give --image-tokenizer or --video-tokenizer")
    image = checked(args.image_tokenizer, "image", "--image-tokenizer") if args.image_tokenizer else None
    video = None
    if getattr(args, "video_tokenizer", None) is not None:
        video = checked(args.video_tokenizer, "video", "--video-tokenizer")
    audio = codec = None
    if getattr(args, "audio_tokenizer", None) is not None or getattr(args, "best_rq", False):
        from mmtok.audio import AudioTokenizer

        audio = (checked(args.audio_tokenizer, "audio", "--audio-tokenizer", decodable=False)
                 if args.audio_tokenizer else AudioTokenizer())
    elif getattr(args, "audio_codec", None) is not None:
        codec = checked(args.audio_codec, "audio", "--audio-codec", decodable=True)
    stream = TokenStream.from_tokenizers(image_tokenizer=image, audio_tokenizer=audio, audio_codec=codec,
                                         video_tokenizer=video, max_grid=args.max_grid,
                                         end_of_row=not args.no_end_of_row)
    return stream, audio or codec


def _write(out: pathlib.Path, rows, stream) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    stream.vocab.save(out.parent / "vocab.json")
    print(f"wrote {out} and {out.parent / 'vocab.json'} (vocabulary {stream.vocab_hash[:12]}, {len(stream.vocab)} ids)")


def _video_tokens(args) -> int:
    from mmtok.video import VideoTokenizer

    from .segments import Video

    stream, audio = _build_stream(args)
    frames_tokenizer = stream.video_tokenizer if stream.video_tokenizer is not None else stream.image_tokenizer
    video = VideoTokenizer(frames_tokenizer, audio, fps=None if args.every_frame else args.fps,
                           max_frames=args.max_frames, num_frames=args.num_frames, keyframes=args.keyframes,
                           size=args.size, batch_size=args.batch_size)
    rows = []
    for path in args.videos:
        tokens = video.encode(path)
        ids = stream.encode([Video.from_tokens(tokens)])
        rows.append({"id": str(path), "ids": list(ids), "vocab_hash": ids.vocab_hash,
                     "timestamps": tokens.timestamps.tolist()})
        print(f"{path}: {len(tokens)} frames, {len(ids)} ids")
    _write(args.out, rows, stream)
    return 0


def _qwen_vl_tokens(args) -> int:
    stream, _ = _build_stream(args)
    rows = [{"id": sample_id, "ids": list(ids), "vocab_hash": ids.vocab_hash}
            for sample_id, ids in stream.encode_qwen_vl(args.conversations, image_size=args.size)]
    _write(args.out, rows, stream)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("video-tokens", help="videos -> interleaved token streams (frames + audio track)")
    p.add_argument("videos", nargs="+", type=pathlib.Path)
    _add_tokenizer_options(p, audio=True, video=True)
    p.add_argument("--fps", type=float, default=1.0, help="frames sampled per second (default 1)")
    p.add_argument("--every-frame", action="store_true", help="sample every frame (full frame rate)")
    p.add_argument("--num-frames", type=int, help="this many frames spread uniformly instead of --fps")
    p.add_argument("--keyframes", action="store_true", help="key frames only")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.add_argument("--size", type=int, help="frame size for the image tokenizer (default: its image_size)")
    p.add_argument("--batch-size", type=int, default=8)
    p.set_defaults(func=_video_tokens)

    p = subparsers.add_parser("qwen-vl-tokens", help="a Qwen-VL conversation JSON file -> token streams")
    p.add_argument("conversations", type=pathlib.Path)
    _add_tokenizer_options(p, audio=False)
    p.add_argument("--size", type=int, help="image size for the image tokenizer (default: its image_size)")
    p.set_defaults(func=_qwen_vl_tokens)
