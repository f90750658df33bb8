"""Constrained sampling from a tiny random-weight `transformers` Llama: every generation parses strictly and
decodes to an image / audio of the requested size; without the constraint nearly none parses."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mmtok.image.config import VQGANConfig
from mmtok.image.tokenizer import ImageTokenizer
from mmtok.stream import StreamDecodeError, Text, TokenStream
from mmtok.stream.constraints import hf_logits_processor

from conftest import DATA

transformers = pytest.importorskip("transformers", reason="transformers is a test-only extra")

GRID, FRAMES, ROWS, ROUNDS = (4, 6), 6, 5, 10  # 2 x ROWS x ROUNDS = 100 generations


@pytest.fixture(scope="module")
def setup():
    from mmtok.audio.codec import AudioCodec as Codec

    torch.manual_seed(0)
    image_tok = ImageTokenizer(VQGANConfig(num_codes=64, code_dim=8, z_channels=32, ch=32, ch_mult=[1, 2],
                                           num_res_blocks=1, attn_levels=[], image_size=16))
    codec = Codec.from_dac(DATA / "checkpoints/dac_tiny/model.pth")
    stream = TokenStream.from_tokenizers(image_tokenizer=image_tok, audio_codec=codec, max_grid=8)
    return stream


def tiny_llama(vocab_size: int, seed: int):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                      max_position_embeddings=256)
    return transformers.LlamaForCausalLM(config).eval()


def generate(model, stream, prompt, new_tokens, processor=None, seed=0):
    vocab = stream.vocab
    input_ids = torch.tensor([prompt] * ROWS)
    torch.manual_seed(seed)
    processors = transformers.LogitsProcessorList([processor] if processor is not None else [])
    with torch.no_grad():
        out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), do_sample=True,
                             temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=new_tokens,
                             logits_processor=processors, eos_token_id=vocab.special("eos"),
                             pad_token_id=vocab.special("pad"), bos_token_id=vocab.special("bos"))
    return out.tolist()


def jobs(stream):
    vocab = stream.vocab
    h, w = GRID
    image_prompt = stream.encode([Text("draw: ")], add_eos=False)
    audio_prompt = stream.encode([Text("say: ")], add_eos=False) + [vocab.special("audio_codec_begin")]
    image_options = dict(text=False, blocks=["image"], image_grid=GRID, min_blocks=1, max_blocks=1)
    audio_options = dict(text=False, codec_frames=FRAMES, max_blocks=1)
    return [("image", list(image_prompt), 3 + h * (w + 1) + 1, image_options),
            ("audio", list(audio_prompt), FRAMES * 4 + 2, audio_options)]


def test_constrained_sampling_always_decodes(setup):
    stream = setup
    vocab = stream.vocab
    model = tiny_llama(vocab.size, 1)
    parsed = 0
    for kind, prompt, new_tokens, options in jobs(stream):
        for round_ in range(ROUNDS):
            processor = hf_logits_processor(vocab, prompt_length=len(prompt), **options)
            for row in generate(model, stream, prompt, new_tokens, processor, seed=round_):
                segments = stream.decode(row, strict=True, decode_images=True, decode_audio=True)
                assert segments.repairs == []
                block = segments[-1]
                if kind == "image":
                    assert block.grid == GRID
                    f = stream.image_tokenizer.downsample_factor
                    assert block.pixels.shape == (3, GRID[0] * f, GRID[1] * f)
                    assert torch.isfinite(block.pixels).all()
                else:
                    assert block.codes.shape == (4, FRAMES)
                    # the DAC decoder's output length is that of FRAMES frames less its convolution edges
                    assert (FRAMES - 1) * stream.audio_codec.hop_length < block.waveform.numel()
                    assert torch.isfinite(block.waveform).all()
                parsed += 1
    assert parsed == 2 * ROWS * ROUNDS


def test_unconstrained_sampling_nearly_always_fails(setup):
    stream = setup
    model = tiny_llama(stream.vocab.size, 1)
    failures = total = 0
    for _, prompt, new_tokens, _ in jobs(stream):
        for round_ in range(ROUNDS):
            for row in generate(model, stream, prompt, new_tokens, seed=round_):
                total += 1
                try:
                    stream.decode(row, strict=True)
                except StreamDecodeError:
                    failures += 1
    print(f"without the constraint {failures} of {total} generations fail to parse")
    assert total == 100 and failures >= 95, f"only {failures} of {total} failed"


def test_processor_never_forbids_a_reference_sequence(setup, data_dir):
    """Teacher-forced through the processor: the next reference id is never masked (a real photo and speech)."""
    from mmtok.audio.io import load_audio
    from mmtok.stream import AudioCodec, Image

    stream = setup
    rate = 16000
    waveform = load_audio(data_dir / "audio/arctic_a0007.wav", rate)
    segments = [Text("a cat "), Image(source=data_dir / "images/chelsea.png", size=16), Text(" says "),
                AudioCodec(waveform=waveform[: rate // 2], sample_rate=rate)]
    ids = stream.encode(segments)
    n = 3
    processor = hf_logits_processor(stream.vocab, prompt_length=n)
    for t in range(n, len(ids)):
        scores = processor(torch.tensor([ids[:t]]), torch.zeros(1, stream.vocab.size))
        assert torch.isfinite(scores[0, ids[t]]), f"reference id {ids[t]} at {t} forbidden"
        assert np.isinf(scores.numpy()).any()


def test_beam_search_outputs_all_decode(setup):
    """num_beams: the rows are reordered and duplicated between steps; every returned beam parses strictly
    and its images decode at the grid, and the processor did see reordered rows (so the test exercises the
    beam path; with the states not following the beams, generations fail to parse)."""
    from mmtok.stream.hf import ConstrainedLogitsProcessor

    stream = setup
    vocab = stream.vocab
    kind, prompt, new_tokens, _ = jobs(stream)[0]
    # free text before the image: beams sit at different places of the grammar, so a beam given another
    # row's state would be masked wrongly
    options = dict(text=True, blocks=["image"], image_grid=GRID, min_blocks=1, max_blocks=1)
    new_tokens += 6
    reorders = []

    class Counting(ConstrainedLogitsProcessor):
        def _parents(self, input_ids):
            parents = super()._parents(input_ids)
            reorders.append(parents is not None and parents != list(range(len(parents))))
            return parents

    from mmtok.stream.constraints import Constraint

    decoded = 0
    for seed in range(2):
        model = tiny_llama(vocab.size, 10 + seed)
        processor = Counting(Constraint(vocab, **options), prompt_length=len(prompt))
        input_ids = torch.tensor([prompt] * 2)
        with torch.no_grad():
            out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                                 num_beams=4, num_return_sequences=4, max_new_tokens=new_tokens,
                                 logits_processor=transformers.LogitsProcessorList([processor]),
                                 eos_token_id=vocab.special("eos"), pad_token_id=vocab.special("pad"))
        for row in out.tolist():
            segments = stream.decode(row, strict=True, decode_images=True)
            assert segments.repairs == []
            for image in [s for s in segments if hasattr(s, "grid")]:  # a beam may still be in its text
                assert image.grid == GRID and torch.isfinite(image.pixels).all()
            decoded += 1
    assert decoded == 16
    assert any(reorders), "beam search never reordered the rows: the beam path was not exercised"


def test_request_processor_serves_interleaved_and_branching_sequences(setup, seed):
    """The per-request (vLLM-style) hook: several sequences of one request call it in turn, one branches
    (a beam copied midway); random logits masked by it always give sequences that parse strictly."""
    from mmtok.stream.constraints import request_logits_processor

    stream = setup
    vocab = stream.vocab
    _, prompt, new_tokens, options = jobs(stream)[0]
    processor = request_logits_processor(vocab, **options)
    gen = torch.Generator().manual_seed(seed)
    outputs = [[] for _ in range(3)]
    for step in range(new_tokens):
        if step == new_tokens // 2:
            outputs.append(list(outputs[0]))  # a branch of sequence 0
        for out in outputs:
            logits = torch.randn(vocab.size + 7, generator=gen)  # padded embedding rows too
            logits = processor(prompt, out, logits)
            assert torch.isinf(logits[vocab.size:]).all()
            probs = torch.softmax(logits, dim=0)
            out.append(int(torch.multinomial(probs, 1, generator=gen)))
    for out in outputs:
        segments = stream.decode(list(prompt) + out, strict=True)
        assert segments[-1].grid == GRID


def test_processor_follows_rows_reordered_and_duplicated_as_beam_search_does(setup, seed):
    """Rows at different places of the grammar (text, inside an image), reordered and duplicated at random
    between calls: each row's mask always equals that of a fresh state on that row's own prefix."""
    from mmtok.stream.constraints import Constraint
    from mmtok.stream.hf import ConstrainedLogitsProcessor

    stream = setup
    vocab = stream.vocab
    prompt = stream.encode([Text("draw: ")], add_eos=False)
    constraint = Constraint(vocab, text=True, blocks=["image"], image_grid=GRID, max_blocks=2)
    processor = ConstrainedLogitsProcessor(constraint, prompt_length=len(prompt))
    rng = np.random.default_rng(seed)
    rows = [list(prompt) for _ in range(4)]
    image_begin = vocab.special("image_begin")
    for step in range(40):
        scores = processor(torch.tensor(rows), torch.zeros(len(rows), vocab.size))
        for row, got in zip(rows, scores):
            want = constraint.allowed_mask(row, prompt_length=len(prompt))
            assert np.array_equal(torch.isfinite(got).numpy(), want), f"step {step}"
        nxt = []
        for i, row in enumerate(rows):
            allowed = np.flatnonzero(torch.isfinite(scores[i]).numpy())
            pick = image_begin if (i == step % 4 and image_begin in allowed) else int(rng.choice(allowed))
            nxt.append(row + [pick])
        order = rng.integers(0, len(nxt), size=len(nxt))  # beams: reordered, some duplicated, some dropped
        rows = [list(nxt[j]) for j in order]
