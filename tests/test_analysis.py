"""Inside the models: surprise, next characters and attention checked against direct computations, their
messages, and the same numbers through the API and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from tests.conftest import LADDER_TEXT, TEST_VOCAB, small_model
from toystory_gpt import __main__ as cli
from toystory_gpt import analysis, api, corpus, sampler
from toystory_gpt.api import InvalidRequest
from toystory_gpt.milestones import LADDER
from toystory_gpt.tokenizer import CharTokenizer
from toystory_gpt.trainer import evaluate
from toystory_gpt.weights import SavedModel

ALL = [m.number for m in LADDER.milestones]
TEXT = "WOODY: Hey, Buzz! Where are you going? BUZZ: To infinity, and beyond! The toys all cheer as he flies.\n"


# The answers as the API sends them (JSON objects), to compare with what the API and the CLI print.
def surprise(service: api.Service, text, milestones) -> dict:
    return service.surprise(service.parse(api.TextRequest, text=text, milestones=milestones)).model_dump()


def next_chars(service: api.Service, text, milestones, temperature, top_k, k, position=None) -> dict:
    return service.next_chars(service.parse(api.NextCharsRequest, text=text, milestones=milestones,
                                            temperature=temperature, top_k=top_k, k=k, position=position)).model_dump()


def attention(service: api.Service, text, milestone, position=None) -> dict:
    return service.attention(service.parse(api.AttentionRequest, text=text, milestone=milestone,
                                           position=position)).model_dump()


def direct_nats(saved: SavedModel, text: str, slot: int, start: int) -> float:
    """Cross-entropy of text[slot] from forward's own logits, given ("\n" + text)[start : slot + 1]."""
    ids = torch.tensor(saved.tokenizer.encode("\n" + text).ids)
    with torch.no_grad():
        logits, _ = saved.model(ids[start: slot + 1][None])
    return F.cross_entropy(logits[0, -1:], ids[slot + 1: slot + 2]).item()


def test_surprise_is_forwards_cross_entropy_in_every_window(service):
    result = surprise(service, TEXT, ALL)
    assert [m["milestone"] for m in result["milestones"]] == ALL and result["text"] == TEXT
    for row in result["milestones"]:
        saved = service.models.saved[row["milestone"]]
        block = saved.model.config.block_size
        stride = block // 2
        attends = saved.model.config.has_attention
        assert len(row["bits"]) == len(TEXT) and (len(TEXT) > 3 * block or not attends)  # several windows
        for slot, bits in enumerate(row["bits"]):
            # The window that scores a slot: the first multiple of the stride leaving it inside block_size.
            start = next(s for s in range(0, slot + 1, stride) if slot - s < block)
            start = start if attends else 0
            assert bits * math.log(2) == pytest.approx(direct_nats(saved, TEXT, slot, start), abs=1e-5)
        assert row["bits_per_char"] == pytest.approx(np.mean(row["bits"]))


def test_surprise_of_a_short_text_is_forwards_loss(service):
    text = "BUZZ: Hello"
    for row in surprise(service, text, ALL)["milestones"]:
        saved = service.models.saved[row["milestone"]]
        ids = torch.tensor(saved.tokenizer.encode("\n" + text).ids)
        with torch.no_grad():
            _, loss = saved.model(ids[:-1][None], ids[1:][None])
        assert row["bits_per_char"] * math.log(2) == pytest.approx(loss.item(), abs=1e-5)


def test_mean_surprise_over_validation_text_is_evaluates_loss(service):
    text = corpus.load_text(str(LADDER_TEXT)).text  # what the quick ladder was trained on
    tokenizer = CharTokenizer.from_text(text)
    _, val = corpus.split(torch.tensor(tokenizer.encode(text).ids))
    models = service.models.saved
    block = models[8].model.config.block_size
    # A span that starts at a line break: its first character is exactly the newline the surprise starts from.
    start = next(i for i in range(len(val)) if tokenizer.vocab[val[i]] == "\n" and i > 500)
    span = val[start: start + 3 * block + block // 2 + 1]  # three and a half windows
    for number, saved in models.items():
        assert saved.tokenizer.vocab == tokenizer.vocab
        req = analysis.reading(models, tokenizer.decode(span[1:]), [number])
        (row,) = analysis.score(models, req, stride=block)  # evaluate's non-overlapping windows
        assert row.bits_per_char * math.log(2) == pytest.approx(evaluate(saved.model, span, block), abs=1e-5)


@pytest.mark.parametrize("position", [None, 0, 5, len(TEXT) - 1])
def test_attention_rows_sum_to_one_and_never_look_ahead(service, position):
    for number in ALL[2:]:
        result = attention(service, TEXT, number, position)
        config = service.models.saved[number].model.config
        weights = np.array(result["weights"])
        slot = len(TEXT) if position is None else position
        T = len(result["characters"])
        assert weights.shape == (config.n_layer, config.n_head, T, T)
        assert 1 <= T <= config.block_size
        assert "".join(result["characters"]) == ("\n" + TEXT)[result["start"]: slot + 1]
        np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
        assert not np.triu(weights, k=1).any()


def test_attention_after_the_text_reads_the_last_block_of_characters(service):
    block = service.models.saved[8].model.config.block_size
    result = attention(service, TEXT, 8)
    assert "".join(result["characters"]) == ("\n" + TEXT)[-block:]


def tied_unigram() -> dict[int, SavedModel]:
    """A unigram whose logits tie at the 2nd place, three ways: top-k 2 must keep all four."""
    model = small_model(LADDER[1])
    with torch.no_grad():
        model.logit_bias.copy_(torch.linspace(-2, 0, len(TEST_VOCAB)))
        model.logit_bias[:4] = torch.tensor([3.0, 2.0, 2.0, 2.0])
    return {1: SavedModel(LADDER[1], model, CharTokenizer(TEST_VOCAB), None, Path("unused"))}


@pytest.mark.parametrize("temperature, top_k", [(1.0, 0), (0.8, 2), (0.3, 5), (0, 0), (2.0, 100)])
def test_next_chars_are_the_samplers_distribution_including_ties(temperature, top_k):
    models = tied_unigram()
    model = models[1].model
    result = analysis.next_chars(models, analysis.reading(models, "BUZZ", [1], temperature, top_k), len(TEST_VOCAB))
    (entry,) = result.milestones
    chars = {c.char: c for c in entry.chars}
    assert set(chars) == set(TEST_VOCAB) and entry.true_next is None  # after the text: no true next character
    logits = model.logit_bias.detach().numpy()
    raw = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    drawn = sampler.distribution(logits, temperature, top_k)
    for i, c in enumerate(TEST_VOCAB):
        assert chars[c].probability == pytest.approx(raw[i], abs=1e-7)
        assert chars[c].sampled_probability == pytest.approx(drawn[i], abs=1e-12)
    assert sum(c.probability for c in entry.chars) == pytest.approx(1.0)
    assert sum(c.sampled_probability for c in entry.chars) == pytest.approx(1.0)
    if top_k == 2:
        assert sum(c.sampled_probability > 0 for c in entry.chars) == 4  # the three tied at 2nd all stay


def test_next_chars_at_a_character_agree_with_its_surprise(service):
    rows = {row["milestone"]: row for row in surprise(service, TEXT, ALL)["milestones"]}
    every = service.models.saved[8].tokenizer.vocab_size  # all of them listed: the true one among them
    for slot in (0, 40, len(TEXT) - 1):
        result = next_chars(service, TEXT, ALL, 1.0, 0, every, position=slot)
        for entry in result["milestones"]:
            true = entry["true_next"]
            assert true["char"] == TEXT[slot]
            assert true["probability"] == pytest.approx(2 ** -rows[entry["milestone"]]["bits"][slot], rel=1e-4)
            listed = [c["probability"] for c in entry["chars"]]
            assert listed == sorted(listed, reverse=True)
            assert true["rank"] == 1 + sum(p > true["probability"] for p in listed)


def test_unknown_characters_are_dropped_and_reported(service):
    result = surprise(service, "WOODY: ¡héllo <b>", [2, 8])
    assert result["dropped"] == "¡é<>"
    assert result["text"] == "WOODY: hllo b"
    assert all(len(m["bits"]) == len(result["text"]) for m in result["milestones"])


@pytest.mark.parametrize("call, message", [
    (lambda c: surprise(c, "", [8]), "Type some text"),
    (lambda c: surprise(c, "¡¡", [8]), "None of the text's characters are in the models' vocabulary."),
    (lambda c: surprise(c, "x" * 1001, [8]), "text is 1,001 characters long; the limit is 1,000"),
    (lambda c: surprise(c, 42, [8]), "text must be text, got 42"),
    (lambda c: surprise(c, "hi", []), "Choose at least one milestone"),
    (lambda c: surprise(c, "hi", [9]), "each milestone must be from 1 to 8, got 9"),
    (lambda c: next_chars(c, "hi", [8], 0.8, 0, 5, position=3), "position must be from 0 to 2, got 3"),
    (lambda c: next_chars(c, "hi", [8], 0.8, 0, 5, position=-1), "position must be from 0 to 2, got -1"),
    (lambda c: next_chars(c, "hi", [8], 0.8, 0, 5, position=0.5), "position must be a whole number"),
    (lambda c: next_chars(c, "hi", [8], 0.8, 0, 0), "k must be from 1 to"),
    (lambda c: next_chars(c, "hi", [8], 3, 0, 5), "temperature must be a number from 0 to 2"),
    (lambda c: next_chars(c, "hi", [8], 0.8, -1, 5), "top_k must be from 0 to 100, got -1"),
    (lambda c: attention(c, "hi", 1), "1 · unigram has no attention: it sees nothing"),
    (lambda c: attention(c, "hi", 2), "2 · bigram has no attention: it sees only the current character"),
    (lambda c: attention(c, "hi", 8, position=9), "position must be from 0 to 2, got 9"),
])
def test_bad_requests_get_clear_messages(service, call, message):
    with pytest.raises(InvalidRequest) as error:
        call(service)
    assert message in str(error.value)


def test_api_returns_the_librarys_numbers(client, served):
    assert client.predict(text=TEXT, milestones=ALL, api_name="/surprise") == surprise(served, TEXT, ALL)
    assert (client.predict(text=TEXT, milestones=[2, 8], temperature=0.7, top_k=4, k=6, position=12,
                           api_name="/next_chars")
            == next_chars(served, TEXT, [2, 8], 0.7, 4, 6, 12))
    assert client.predict(text=TEXT, milestone=8, api_name="/attention") == attention(served, TEXT, 8)


@pytest.mark.parametrize("api, arguments, message", [
    ("/surprise", dict(text="", milestones=[8]), "Type some text"),
    ("/attention", dict(text="hi", milestone=2), "has no attention"),
    ("/next_chars", dict(text="hi", milestones=[8], position=7), "position must be from 0 to 2, got 7"),
])
def test_api_bad_input_gets_a_clear_message(client, api, arguments, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as error:
        client.predict(**arguments, api_name=api)
    assert message in str(error.value)


def test_cli_json_is_the_librarys(service, quick_weights, capsys):
    assert cli.main(["inspect", "surprise", "--text", TEXT, "--milestones", "2,8", "--weights", str(quick_weights),
                     "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == surprise(service, TEXT, [2, 8])
    assert cli.main(["inspect", "next_chars", "--text", "WOODY", "--milestones", "8", "--position", "2",
                     "--weights", str(quick_weights)]) == 0
    assert capsys.readouterr().out.startswith("8 · + dropout: ")
    assert cli.main(["inspect", "attention", "--text", "WOODY", "--milestones", "2", "--weights",
                     str(quick_weights)]) == 2
    assert "has no attention" in capsys.readouterr().err
