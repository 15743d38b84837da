"""Decoding many rows one token at a time gives the logits of the full recompute, whichever decoding does it."""

import numpy as np
import pytest
import torch

from tests.conftest import TEST_VOCAB, last_logits, small_model
from toystory_gpt.decoding import Contextless, KVCache, TorchDecoding, refill_length, torch_decoding
from toystory_gpt.milestones import LADDER
from toystory_gpt.onnx_decode import OnnxDecoding
from toystory_gpt.pool import Pool, Sequence
from toystory_gpt.sampler import START
from toystory_gpt.tokenizer import CharTokenizer


def tokens(n, seed=1) -> list[int]:
    return torch.randint(len(TEST_VOCAB), (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.mark.parametrize("milestone", LADDER.milestones[2:], ids=lambda m: m.folder)
def test_encode_then_batched_steps_equal_the_full_recompute(milestone):
    model = small_model(milestone, spread=0.1)
    decoding = TorchDecoding(model)
    rows = [tokens(16, seed) for seed in range(3)]
    cache = KVCache(model.config, decoding.min_rows)
    starts = [5, 2, 9]  # rows of different lengths side by side
    for row, (ids, start) in enumerate(zip(rows, starts)):
        logits, keys, values = decoding.encode(np.array([ids[:start]]))
        cache.fill(np.array([row]), keys, values)
        np.testing.assert_allclose(logits[0], last_logits(model, ids[:start]), rtol=0, atol=1e-5)
    for t in range(16 - max(starts)):
        at = [start + t for start in starts]
        idx = np.array([ids[a] for ids, a in zip(rows, at)])
        logits, new_keys, new_values = decoding.advance(cache, 3, idx, cache.lengths[:3].copy())
        cache.append(np.arange(3), new_keys, new_values)
        for row, (ids, a) in enumerate(zip(rows, at)):
            np.testing.assert_allclose(logits[row], last_logits(model, ids[:a + 1]), rtol=0, atol=1e-5)
    cache.lengths[0] = 16
    with pytest.raises(ValueError, match="sequence of 17 tokens is longer than the context"):
        cache.append(np.array([0]), new_keys[:, :1], new_values[:, :1])


def test_moving_a_row_moves_its_whole_cache():
    model = small_model(LADDER.milestones[7], spread=0.1)
    cache = KVCache(model.config, 4)
    _, keys, values = TorchDecoding(model).encode(np.array([tokens(6)]))
    cache.fill(np.array([3]), keys, values)
    cache.move(3, 0)
    for array in (cache.keys, cache.values):  # (L, rows, ...)
        np.testing.assert_array_equal(array[:, 0], array[:, 3])
    assert cache.lengths[0] == cache.lengths[3] == 6


@pytest.mark.parametrize("kind", ["torch", "onnx", "contextless"])
def test_a_pool_refills_half_a_window_and_matches_the_full_recompute(kind):
    milestone = LADDER.milestones[1] if kind == "contextless" else LADDER.milestones[7]
    model = small_model(milestone, spread=0.1)
    decoding = OnnxDecoding(model) if kind == "onnx" else torch_decoding(model)
    tokenizer = CharTokenizer(TEST_VOCAB)
    pool = Pool(decoding, capacity=3)
    # Prompts of three lengths; 50 characters each: past the 16-token window three times.
    lengths = [50, 23, 37]  # they leave at different ticks: the rows left are moved into the free ones
    sequences = [Sequence.start(tokenizer, prompt, length, 1.0, 0, seed)
                 for seed, (prompt, length) in enumerate(zip(["W", "", "BUZZ"], lengths))]
    for sequence in sequences:
        pool.join(sequence)
    contexts = [tokenizer.encode(p or START).ids for p in ["W", "", "BUZZ"]]
    window = decoding.window
    while pool.busy:
        pool.tick()
        for sequence, context in zip(sequences, contexts):
            if sequence.finished:
                continue
            context.append(tokenizer.vocab.index(sequence.text[-1]))
            if len(context) > window:  # the rule every decoding follows
                del context[:-refill_length(window)]
            assert sequence.window[-len(context):] == context
            row = pool.live.index(sequence)
            np.testing.assert_allclose(pool.logits[row], last_logits(model, context), rtol=0, atol=1e-5)
    assert [len(s.text) for s in sequences] == lengths


def test_the_factory_picks_the_decoding():
    assert type(torch_decoding(small_model(LADDER.milestones[7]))) is TorchDecoding
    for contextless in LADDER.milestones[:2]:  # the unigram and the bigram need only the last character
        decoding = torch_decoding(small_model(contextless))
        assert type(decoding) is Contextless and decoding.window == 1 and not decoding.cached
