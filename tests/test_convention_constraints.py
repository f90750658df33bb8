"""Constrained image generation in released models' layouts: every walk through the masks (and every sample
of a tiny random Llama under the processor) decodes strictly to an image of the requested grid."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmtok.stream import Image, Text, Vocabulary
from mmtok.stream.constraints import ConstraintError
from mmtok.stream.convention_constraints import ImageConstraint, convention_logits_processor

tokenizers = pytest.importorskip("tokenizers", reason="the synthetic model tokenizers load with `tokenizers`")


def load(data_dir, name, model, **options):
    tok = tokenizers.Tokenizer.from_file(str(data_dir / "conventions" / name / "tokenizer.json"))
    return Vocabulary.from_convention(model, text_tokenizer=tok, **options)


def cases(data_dir):
    emu3 = load(data_dir, "emu3", "emu3")
    chameleon = load(data_dir, "chameleon", "chameleon", grid=(4, 4))
    lumina = load(data_dir, "chameleon", "lumina_mgpt")
    prompt = [Text("draw a cat")]
    return [
        (emu3, (3, 5), emu3.encode(prompt) + emu3.image_prompt(3, 5)),
        (chameleon, (4, 4), chameleon.encode(prompt) + [chameleon.begin]),
        (lumina, (4, 6), lumina.encode(prompt) + [lumina.begin]),
    ]


def test_walks_decode_and_references_are_allowed(data_dir, seed):
    rng = np.random.default_rng(seed)
    for conv, grid, prompt in cases(data_dir):
        constraint = ImageConstraint(conv, grid)
        for _ in range(10):
            ids = list(prompt)
            for i in range(constraint.length):
                ids.append(int(rng.choice(np.flatnonzero(constraint.allowed(i)))))
            image = conv.decode(ids)[-1]
            assert isinstance(image, Image) and image.grid == grid
            reference = conv.encode([Text("draw a cat"), Image(codes=torch.randint(0, 64, grid))], add_eos=True)
            assert reference[: len(prompt)] == prompt
            constraint.check(reference[len(prompt):])
        with pytest.raises(ConstraintError):
            constraint.check([conv.eos])


def test_random_llama_samples_decode(data_dir):
    transformers = pytest.importorskip("transformers", reason="transformers is a test-only extra")
    for conv, grid, prompt in cases(data_dir):
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            vocab_size=conv.size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)).eval()
        processor = convention_logits_processor(conv, grid)
        input_ids = torch.tensor([prompt] * 4)
        with torch.no_grad():
            out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), do_sample=True, top_k=0,
                                 max_new_tokens=processor.constraint.length, logits_processor=[processor],
                                 eos_token_id=conv.eos, pad_token_id=conv.eos)
        for row in out.tolist():
            assert conv.decode(row)[-1].grid == grid


def test_bad_grids_are_named(data_dir):
    conv, _, _ = cases(data_dir)[1]
    with pytest.raises(ValueError, match="fixed grid"):
        ImageConstraint(conv, (2, 2))
    lumina = cases(data_dir)[2][0]
    with pytest.raises(ValueError, match="even"):
        ImageConstraint(lumina, (3, 4))
