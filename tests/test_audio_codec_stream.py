"""Audio codec codes as a token kind: a segment round-trips through TokenStream and decodes to the waveform."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch

from mmtok.audio.codec import AudioCodec
from mmtok.stream import AudioCodec as CodecSegment
from mmtok.stream import Text, TokenStream

FIXTURE = pathlib.Path(__file__).parent / "data" / "checkpoints" / "dac_tiny"


@pytest.fixture(scope="module")
def codec() -> AudioCodec:
    return AudioCodec.from_dac(FIXTURE / "model.pth")


def test_codec_segment_round_trips_and_decodes(seed, codec):
    with np.load(FIXTURE / "io.npz") as data:
        speech, want_codes, want_wave = (torch.from_numpy(data[k]) for k in ("x", "codes", "y_from_codes"))
    stream = TokenStream.from_tokenizers(audio_codec=codec)
    random_codes = torch.randint(0, codec.codebook_size, (codec.n_codebooks, 23))
    segments = [Text("say:"), CodecSegment(waveform=speech[0, 0], sample_rate=16000), Text("and"),
                CodecSegment(codes=random_codes)]
    ids = stream.encode(segments)
    assert torch.equal(segments[1].codes, want_codes[0])  # tokenized through the codec

    # frame-major interleave: frame f contributes codebook 0..n-1, each shifted by its codebook's offset
    offsets = torch.as_tensor(np.asarray(stream.vocab.offsets("audio_codec")), dtype=torch.int64)
    interleaved = (random_codes + offsets[:, None]).T.reshape(-1).tolist()
    flat = list(ids)
    assert any(flat[i: i + len(interleaved)] == interleaved for i in range(len(flat)))

    decoded = stream.decode(ids, decode_audio=True)
    clips = [s for s in decoded if isinstance(s, CodecSegment)]
    assert len(clips) == 2
    assert torch.equal(clips[0].codes, want_codes[0]) and torch.equal(clips[1].codes, random_codes)
    for clip in clips:
        assert clip.sample_rate == codec.sample_rate
        assert torch.equal(clip.waveform, codec.decode(clip.codes))
    torch.testing.assert_close(clips[0].waveform, want_wave[0, 0], atol=1e-5, rtol=0)
