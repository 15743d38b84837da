"""The logit lens and the gain rows, checked against direct computations: the last block is the model's own logits,
block 0 is the head on the embeddings, the change per block is what forward hooks see, a gain is the difference of
two surprise rows; and the same numbers through /logit_lens and ``inspect lens``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.test_analysis import ALL, TEXT
from toystory_gpt import __main__ as cli
from toystory_gpt import analysis, api
from toystory_gpt.milestones import ABLATION, LADDER


@pytest.fixture(scope="module")
def models(service) -> dict:
    assert ABLATION in service.models.readable
    return service.models.readable


def lens_of(service, text, milestone) -> dict:
    """The lens answer as the API sends it (a JSON object)."""
    return service.logit_lens(service.parse(api.LensRequest, text=text, milestone=milestone)).model_dump()


DEEP = [6, 7, 8, ABLATION]


def windows_of(saved, text: str):
    """Per slot, the context that scored it, ("\\n" + text)[start : slot + 1], as surprise's windows define it."""
    ids = torch.tensor(saved.tokenizer.encode("\n" + text).ids)
    block = saved.model.config.block_size
    for slot in range(len(text)):
        start = next(s for s in range(0, slot + 1, block // 2) if slot - s < block)
        yield ids[start: slot + 1][None]


@pytest.mark.parametrize("key", DEEP)
def test_last_block_is_the_models_own_logits_and_surprise(models, key):
    saved = models[key]
    read = analysis.lens(saved, TEXT)
    assert read.logits.shape == (saved.model.config.n_layer + 1, len(TEXT), saved.model.config.vocab_size)
    assert len(TEXT) > 2 * saved.model.config.block_size  # several windows
    with torch.no_grad():
        own = np.stack([saved.model(window)[0][0, -1].numpy() for window in windows_of(saved, TEXT)])
    np.testing.assert_allclose(read.logits[-1], own, atol=1e-5)
    np.testing.assert_allclose(read.bits[-1], analysis.surprise_of(saved, TEXT).bits, atol=1e-6)


@pytest.mark.parametrize("key", DEEP)
def test_block_zero_is_the_head_on_the_embeddings(models, key):
    saved = models[key]
    read = analysis.lens(saved, TEXT)
    with torch.no_grad():
        first = np.stack([saved.model.lm_head(saved.model.ln_f(
            saved.model.wte(window[0]) + saved.model.wpe(torch.arange(window.shape[1]))))[-1].numpy()
            for window in windows_of(saved, TEXT)])
    np.testing.assert_allclose(read.logits[0], first, atol=1e-5)


@pytest.mark.parametrize("key", DEEP)
def test_change_per_block_is_what_forward_hooks_see(service, models, key):
    saved = models[key]
    seen: list = []
    handles = [block.register_forward_hook(lambda module, args, output: seen.append((args[0][0, -1], output[0, -1])))
               for block in saved.model.blocks]
    try:
        with torch.no_grad():
            for window in windows_of(saved, TEXT):
                saved.model(window)
    finally:
        for handle in handles:
            handle.remove()
    n_layer = saved.model.config.n_layer
    ratios = np.array([float((out - inp).norm() / inp.norm()) for inp, out in seen]).reshape(len(TEXT), n_layer)
    read = analysis.lens(saved, TEXT)
    np.testing.assert_allclose(read.change, ratios.mean(0), rtol=1e-4)
    blocks = lens_of(service, TEXT, key)["blocks"]
    assert blocks[0]["change"] is None
    np.testing.assert_allclose([b["change"] for b in blocks[1:]], ratios.mean(0), rtol=1e-4)


def test_ranks_and_first_ranked_first(models):
    read = analysis.lens(models[8], TEXT)
    ids = np.array(models[8].tokenizer.encode(TEXT).ids)
    truth = np.take_along_axis(read.logits, np.broadcast_to(ids, read.ranks.shape)[..., None], -1)
    np.testing.assert_array_equal(read.ranks, 1 + (read.logits > truth).sum(-1))
    first = read.first_ranked_first()
    for slot in range(len(TEXT)):
        ranked_first = np.flatnonzero(read.ranks[:, slot] == 1)
        assert first[slot] == (ranked_first[0] if len(ranked_first) else len(read.ranks))


def test_the_lens_at_a_click_is_the_lens_over_the_text(models):
    saved = models[7]
    read = analysis.lens(saved, TEXT)
    for slot in (0, 50, len(TEXT) - 1):
        seen = analysis.look_at(saved, TEXT, slot)
        np.testing.assert_allclose(seen.lens, read.logits[:, slot], atol=1e-5)


def test_a_gain_is_the_difference_of_two_surprise_rows(models):
    rows = {row.milestone: row for row in analysis.surprise(models, analysis.reading(models, TEXT, ALL)).milestones}
    rows[ABLATION] = analysis.surprise_of(models[ABLATION], TEXT).row()
    for upper in [*ALL[1:], ABLATION]:
        lower = LADDER.below(LADDER.by_key(upper)).key
        gained = analysis.gain(analysis.surprise_of(models[upper], TEXT), analysis.surprise_of(models[lower], TEXT))
        assert (gained.milestone, gained.against) == (upper, lower)
        np.testing.assert_allclose(gained.bits, np.array(rows[lower].bits) - rows[upper].bits, atol=1e-6)
        assert gained.per_char == pytest.approx(rows[lower].bits_per_char - rows[upper].bits_per_char, abs=1e-6)
    # The ablation adds milestone 6's depth to milestone 5, without its residuals: its idea is measured against 5,
    # in the Inside tab's gain rows as in the results table's gain column.
    assert LADDER.below(LADDER[1]) is None and LADDER.below(LADDER.ablation).number == LADDER.ablation_of - 1


def test_logit_lens_result(service, models):
    result = lens_of(service, "WOODY: ¡Hey!", "8")
    assert (result["text"], result["dropped"], result["milestone"]) == ("WOODY: Hey!", "¡", 8)
    assert result["characters"] == list("WOODY: Hey!")
    assert [b["after"] for b in result["blocks"]] == list(range(models[8].model.config.n_layer + 1))
    surprise = analysis.surprise_of(models[8], "WOODY: Hey!")
    assert result["blocks"][-1]["bits"] == surprise.bits.tolist()
    assert result["first_ranked_first"] == analysis.lens(models[8], "WOODY: Hey!").first_ranked_first().tolist()
    for block in result["blocks"]:
        assert len(block["bits"]) == len(block["ranks"]) == len(result["characters"])
        assert block["bits_per_char"] == pytest.approx(np.mean(block["bits"]))


@pytest.mark.parametrize("milestone, message", [
    (5, "Milestone 5 · + feed-forward has only 1 block: the logit lens reads the stream between blocks, so it needs "
        "at least 2 (milestones 6, 7, 8 and the ablation)."),
    (1, "Milestone 1 · unigram has no blocks"),
    (9, 'milestone must be a milestone number 1-8 or "ablation", got 9'),
    ("abl", 'milestone must be a milestone number 1-8 or "ablation", got \'abl\''),
])
def test_a_model_without_enough_blocks_gets_a_clear_message(service, milestone, message):
    with pytest.raises(api.InvalidRequest) as error:
        lens_of(service, "hi", milestone)
    assert message in str(error.value)


def test_api_returns_the_librarys_lens(client, served):
    from gradio_client.exceptions import AppError

    for key in (8, ABLATION):
        assert client.predict(text=TEXT, milestone=key, api_name="/logit_lens") == lens_of(served, TEXT, key)
    with pytest.raises(AppError, match="has only 1 block"):
        client.predict(text=TEXT, milestone=4, api_name="/logit_lens")


def test_cli_lens(service, models, quick_weights, capsys):
    assert cli.main(["inspect", "lens", "--text", TEXT, "--milestone", "ablation", "--weights", str(quick_weights),
                     "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == lens_of(service, TEXT, ABLATION)
    assert cli.main(["inspect", "lens", "--text", TEXT, "--milestones", "7", "--weights", str(quick_weights)]) == 0
    table = capsys.readouterr().out
    lines = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
    assert lines == ["embeddings", *(f"block {i + 1}" for i in range(models[7].model.config.n_layer))]
    assert cli.main(["inspect", "lens", "--text", TEXT, "--milestone", "3", "--weights", str(quick_weights)]) == 2
    assert "has only 1 block" in capsys.readouterr().err
