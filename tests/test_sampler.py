"""Sampling: each row's draw follows its own softmax, settings and generator, whatever rows are beside it."""

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TEST_VOCAB, small_model
from toystory_gpt import ladder_run, weights
from toystory_gpt.decoding import torch_decoding
from toystory_gpt.milestones import LADDER
from toystory_gpt.onnx_decode import OnnxDecoding
from toystory_gpt.pool import generate
from toystory_gpt.sampler import Draws, Settings, distribution, pick
from toystory_gpt.tokenizer import CharTokenizer

TOK = CharTokenizer(TEST_VOCAB)


def one(logits, temperature, top_k, rng) -> int:
    """One draw, as a row of its own: a greedy row draws nothing from its generator."""
    uniform = np.array([rng.random() if temperature > 0 else 0.0])
    return int(pick(np.asarray(logits, np.float32)[None], Settings([temperature], [top_k], len(logits)), uniform)[0])


def test_greedy_is_the_argmax_and_top_k_limits_choices():
    logits = np.array([0.1, 3.0, 2.9, -1.0], dtype=np.float32)
    g = np.random.default_rng(0)
    assert one(logits, 0.0, 0, g) == 1
    assert {one(logits, 5.0, 2, g) for _ in range(200)} == {1, 2}
    assert len({one(logits, 5.0, 0, g) for _ in range(200)}) == 4


def test_samples_follow_the_softmax():
    logits = np.array([2.0, 1.0, 0.0, -1.0, -np.inf], dtype=np.float32)
    temperature = 0.7
    expected = np.exp(logits / temperature) / np.exp(logits / temperature).sum()
    g = np.random.default_rng(0)
    counts = np.bincount([one(logits, temperature, 0, g) for _ in range(20_000)], minlength=5)
    np.testing.assert_allclose(counts / counts.sum(), expected, atol=0.01)  # ~4 standard errors
    assert counts[4] == 0
    np.testing.assert_allclose(distribution(logits, temperature, 0), expected, rtol=1e-6)


@pytest.mark.parametrize("temperature", [1e-30, 1e-6, 5e-324])
def test_tiny_temperatures_are_greedy_not_nan(temperature):
    logits = np.array([30.0, 31.0, -5.0, 29.9], dtype=np.float32)
    g = np.random.default_rng(0)
    assert {one(logits, temperature, 0, g) for _ in range(20)} == {1}


def test_a_row_draws_the_same_alone_or_among_others():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(6, len(TEST_VOCAB))).astype(np.float32) * 3
    settings = [(0.8, 0), (0.0, 0), (1.5, 3), (0.3, 1), (2.0, 0), (1e-40, 0)]
    temperatures, top_ks = (np.array(column) for column in zip(*settings))
    settings = Settings(temperatures, top_ks, len(TEST_VOCAB))
    together = Draws(6)
    for row in range(6):
        together.start(row, np.random.default_rng(row))
    alone = [np.random.default_rng(seed) for seed in range(6)]
    for _ in range(2 * Draws.DRAWS + 50):  # past the draws taken ahead, twice: they are taken again, in order
        batch = pick(logits, settings, together.next(6, settings.drawn))
        for row in range(6):
            assert batch[row] == one(logits[row], temperatures[row], top_ks[row], alone[row])
    # greedy rows drew nothing: their next draw is their generator's first
    assert together.next(6, temperatures > 0)[1] == np.random.default_rng(1).random()


@pytest.mark.parametrize("milestone", LADDER.milestones[::3], ids=lambda m: m.folder)
def test_same_seed_same_text_in_pytorch_and_onnx_runtime(milestone):
    model = small_model(milestone, spread=0.5)  # spread weights: samples then differ from seed to seed
    args = (model, TOK, "BUZZ: ", 60, 0.9, 0)
    a = generate(*args, seed=3)
    assert a == generate(*args, seed=3)
    if model.config.has_attention:
        assert a == generate(*args, seed=3, decoding=OnnxDecoding(model))
    assert a != generate(*args, seed=4)
    assert len(a) == 60 and set(a) <= set(TOK.vocab)


def test_empty_prompt_and_unknown_characters():
    model = small_model(LADDER.milestones[7], spread=0.5)
    assert len(generate(model, TOK, "", 20, seed=0)) == 20
    assert generate(model, TOK, "é🚀", 20, seed=0) == generate(model, TOK, "", 20, seed=0)
    assert generate(model, TOK, "x", 0) == ""


def test_committed_samples_are_what_generate_gives_for_their_seed():
    """Every committed weights/*/*.txt ends with the sample train.py wrote for seed 1337; generate still gives it."""
    committed = Path(__file__).resolve().parent.parent / "weights"
    for milestone in LADDER.models:
        saved = weights.load(committed / milestone.folder, milestone)
        prompt = saved.record.corpus.presentation.sample_prompt
        text = generate(saved.model, saved.tokenizer, prompt, ladder_run.SAMPLE_LENGTH, ladder_run.SAMPLE_TEMPERATURE,
                        seed=saved.record.seed, decoding=torch_decoding(saved.model))
        sample = (committed / milestone.folder / f"{milestone.folder}.txt").read_text(encoding="utf-8")
        assert sample.endswith(prompt + text + "\n"), milestone.folder


def test_each_row_draws_its_own_stream_however_often_the_others_draw():
    often = np.random.default_rng(1)
    draws = Draws(5)
    for row in range(5):
        draws.start(row, np.random.default_rng(100 + row))
    alone = [np.random.default_rng(100 + row) for row in range(5)]
    for _ in range(3 * Draws.DRAWS):  # rows reach the end of their draws taken ahead at different ticks
        drawing = often.random(5) < [1.0, 0.9, 0.5, 0.1, 0.0]
        got = draws.next(5, drawing)
        for row in np.flatnonzero(drawing):
            assert got[row] == alone[row].random()
