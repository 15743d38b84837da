"""Decoding one token at a time gives the logits of the full recompute, whichever decoder does it."""

import numpy as np
import pytest
import torch

from tests.conftest import TEST_VOCAB, last_logits, small_model
from toystory_gpt.decoding import Cached, KVCache, Recompute, new_decoder, prefill, refill_length, step
from toystory_gpt.milestones import LADDER
from toystory_gpt.onnx_decode import OnnxDecoder, OnnxDecoding


def tokens(n, seed=1) -> list[int]:
    return torch.randint(len(TEST_VOCAB), (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.mark.parametrize("milestone", LADDER.milestones[2:], ids=lambda m: m.folder)
def test_prefill_then_steps_equal_the_full_recompute(milestone):
    model = small_model(milestone, spread=0.1)
    ids = tokens(16)
    cache = KVCache(model.config)
    with torch.no_grad():
        logits, keys, values = prefill(model, torch.tensor([ids[:5]]))
        cache.start(keys, values)
        steps = [logits[0, -1]]
        for t in range(5, 16):
            logits, new_keys, new_values = step(model, torch.tensor([ids[t]]), torch.tensor([cache.length]),
                                                cache.mask, tuple(cache.keys), tuple(cache.values))
            cache.append(torch.stack(new_keys).numpy(), torch.stack(new_values).numpy())
            steps.append(logits[0])
    for t, got in zip(range(4, 16), steps):
        np.testing.assert_allclose(got.numpy(), last_logits(model, ids[:t + 1]), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="sequence of 17 tokens is longer than the context"):
        cache.append(torch.stack(new_keys).numpy(), torch.stack(new_values).numpy())


@pytest.mark.parametrize("kind", [Cached, Recompute, OnnxDecoding])
def test_every_decoder_refills_half_a_window_and_matches_the_full_recompute(kind):
    model = small_model(LADDER.milestones[7], spread=0.1)
    decoder = kind(model).decoder() if kind is OnnxDecoding else kind(model)
    ids = tokens(50)
    np.testing.assert_allclose(decoder.start(ids[:3]), last_logits(model, ids[:3]), rtol=0, atol=1e-5)
    window = ids[:3]
    for token in ids[3:]:  # past the 16-token window, three times
        window.append(token)
        if len(window) > 16:
            window = window[-refill_length(16):]
        np.testing.assert_allclose(decoder.push(token), last_logits(model, window), rtol=0, atol=1e-5)
        assert decoder.window == window


def test_the_factory_picks_the_decoder():
    transformer = small_model(LADDER.milestones[7])
    assert type(new_decoder(transformer)) is Cached
    assert type(new_decoder(transformer, use_cache=False)) is Recompute
    assert type(new_decoder(transformer, exported=OnnxDecoding(transformer))) is OnnxDecoder
    for contextless in LADDER.milestones[:2]:  # the unigram and the bigram need only the last character
        decoder = new_decoder(small_model(contextless))
        assert type(decoder) is Recompute and decoder.size == 1


def test_a_decoder_needs_some_context():
    with pytest.raises(ValueError, match="at least one token"):
        new_decoder(small_model(LADDER.milestones[7])).start([])
