from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TEST_VOCAB, small_model
from toystory_gpt import weights
from toystory_gpt.decoding import Recompute, new_decoder
from toystory_gpt.milestones import LADDER
from toystory_gpt.onnx_decode import OnnxDecoder, OnnxDecoding
from toystory_gpt.sampler import generate, pick
from toystory_gpt.tokenizer import CharTokenizer

TOK = CharTokenizer(TEST_VOCAB)


def model_for(milestone):
    return small_model(milestone, spread=0.5)  # spread weights: samples then differ from seed to seed


@pytest.mark.parametrize("milestone", LADDER.milestones, ids=lambda m: m.folder)
@torch.inference_mode()
def test_cached_logits_equal_full_recompute_past_the_window(milestone, quick_weights):
    saved = weights.load(quick_weights / milestone.folder, milestone)  # trained: realistic logits
    block = saved.model.config.block_size
    cached, naive = new_decoder(saved.model, exported=saved.exported), Recompute(saved.model)
    assert isinstance(cached, OnnxDecoder) == (milestone.number >= 3)  # the ONNX Runtime path is what is compared
    prompt = saved.tokenizer.encode("WOODY: ").ids
    a, b = cached.start(prompt), naive.start(prompt)
    rng = np.random.default_rng(0)
    for _ in range(3 * block):  # well past the window: exercises the refill
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
        token = pick(a, 1.0, 0, rng)
        a, b = cached.push(token), naive.push(token)
        assert len(cached.window) <= block


@pytest.mark.parametrize("milestone", LADDER.milestones[::3], ids=lambda m: m.folder)
def test_same_seed_same_text_with_and_without_cache(milestone):
    model = model_for(milestone)
    args = (model, TOK, "BUZZ: ", 60, 0.9, 0)
    a = "".join(generate(*args, seed=3))  # the KV cache in PyTorch
    assert a == "".join(generate(*args, seed=3))
    assert a == "".join(generate(*args, seed=3, use_cache=False))
    if milestone.model_config(TOK.vocab).has_attention:
        assert a == "".join(generate(*args, seed=3, exported=OnnxDecoding(model)))  # the cache in ONNX Runtime
    assert a != "".join(generate(*args, seed=4))
    assert len(a) == 60 and set(a) <= set(TOK.vocab)


def test_greedy_is_the_argmax_and_top_k_limits_choices():
    logits = np.array([0.1, 3.0, 2.9, -1.0], dtype=np.float32)
    g = np.random.default_rng(0)
    assert pick(logits, 0.0, 0, g) == 1
    assert {pick(logits, 5.0, 2, g) for _ in range(200)} == {1, 2}
    assert len({pick(logits, 5.0, 0, g) for _ in range(200)}) == 4


def test_samples_follow_the_softmax():
    logits = np.array([2.0, 1.0, 0.0, -1.0, -np.inf], dtype=np.float32)
    temperature = 0.7
    expected = np.exp(logits / temperature) / np.exp(logits / temperature).sum()
    g = np.random.default_rng(0)
    counts = np.bincount([pick(logits, temperature, 0, g) for _ in range(20_000)], minlength=5)
    np.testing.assert_allclose(counts / counts.sum(), expected, atol=0.01)  # ~4 standard errors
    assert counts[4] == 0


@pytest.mark.parametrize("temperature", [1e-30, 1e-6, 5e-324])
def test_tiny_temperatures_are_greedy_not_nan(temperature):
    logits = np.array([30.0, 31.0, -5.0, 29.9], dtype=np.float32)
    g = np.random.default_rng(0)
    assert {pick(logits, temperature, 0, g) for _ in range(20)} == {1}


def test_empty_prompt_and_unknown_characters():
    model = model_for(LADDER.milestones[7])
    assert len("".join(generate(model, TOK, "", 20, seed=0))) == 20
    assert "".join(generate(model, TOK, "é🚀", 20, seed=0)) == "".join(generate(model, TOK, "", 20, seed=0))
    assert "".join(generate(model, TOK, "x", 0)) == ""


def test_committed_samples_are_what_generate_gives_for_their_seed():
    """Every committed weights/*/*.txt ends with the sample train.py wrote for seed 1337, and the sampler still gives it
    (float rounding could in principle flip a character on another CPU; on these machines it never has)."""
    import train

    committed = Path(__file__).resolve().parent.parent / "weights"
    for milestone in LADDER.models:
        saved = weights.load(committed / milestone.folder, milestone)
        prompt = saved.record.corpus.presentation.sample_prompt
        text = "".join(generate(saved.model, saved.tokenizer, prompt, train.SAMPLE_LENGTH,
                                train.SAMPLE_TEMPERATURE, seed=saved.record.seed, exported=saved.exported))
        sample = (committed / milestone.folder / f"{milestone.folder}.txt").read_text(encoding="utf-8")
        assert sample.endswith(prompt + text + "\n"), milestone.folder


def test_decoder_works_outside_no_grad():
    model = model_for(LADDER.milestones[7])  # parameters that require grad, and no inference_mode around the calls
    decoder = new_decoder(model)
    logits = decoder.start(TOK.encode("WOODY: ").ids)
    assert logits.shape == (len(TOK.vocab),) and np.isfinite(logits).all()
    assert decoder.push(3).shape == logits.shape
