"""The Inside tab's view-model, without Gradio: gain rows are differences of surprise rows on one signed scale, lens
rows are the lens's numbers, hovers say both models' view; and its layout, which runs no model while laid out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import ROOT, TEST_VOCAB, small_model
from toystory_gpt import analysis
from toystory_gpt.api import InsideRequest, InvalidRequest, Service
from toystory_gpt.milestones import ABLATION, LADDER
from toystory_gpt.serving import Models
from toystory_gpt.tokenizer import CharTokenizer
from toystory_gpt.ui import inside_view as view
from toystory_gpt.weights import SavedModel

TEXT = "WOODY: Hey, Buster! You're a cool toy."  # every character in TEST_VOCAB


@pytest.fixture(scope="module")
def models() -> dict:
    """Every model of the ladder at test size, with random weights spread enough to disagree."""
    return {m.key: SavedModel(m, small_model(m, spread=0.3), CharTokenizer(TEST_VOCAB), None, Path("unused"))
            for m in LADDER.models}


def service_of(models) -> Service:
    return Service(Models([models[n] for n in LADDER.numbers if n in models], {}, models.get(ABLATION)))


@pytest.fixture(scope="module")
def service(models):
    served = service_of(models)
    yield served
    served.close()


def reading(service, keys, gains=True, lens=True, text=TEXT, temperature=0.8, top_k=0) -> analysis.Reading:
    """What the tab reads: its inputs as the request the Service answers."""
    return service.inside(service.parse(InsideRequest, text=text, milestones=keys, gains=gains, lens=lens,
                                        temperature=temperature, top_k=top_k))


def test_the_view_model_needs_no_gradio():
    code = "import sys, toystory_gpt.ui.inside_view; sys.exit('gradio' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_request_in_display_order_and_its_messages(service):
    req = reading(service, [ABLATION, 8, "2"], text="WOODY: ¡Hey!", temperature=0.5, top_k=3).request
    assert (req.text, req.dropped, req.milestones, req.temperature, req.top_k) == (
        "WOODY: Hey!", "¡", (2, 8, ABLATION), 0.5, 3)
    for keys, text, message in (([], "hi", "Choose at least one milestone."), ([8], "", "Type some text"),
                                ([8], "x" * 1001, "text is 1,001 characters long; the limit is 1,000"),
                                ([10], "hi", 'milestone must be a milestone number 1-8 or "ablation", got 10')):
        with pytest.raises(InvalidRequest, match=message):
            reading(service, keys, text=text)


def test_the_gain_rows_need_the_model_below(models, service):
    assert list(reading(service, [3, 8], gains=False).surprises) == [3, 8]
    assert list(reading(service, [3, 8, ABLATION]).surprises) == [2, 3, 5, 7, 8, ABLATION]
    assert reading(service, [3, 8, ABLATION]).below == {3: 2, 8: 7, ABLATION: 5}
    assert reading(service, [1]).below == {}
    without_five = service_of({k: v for k, v in models.items() if k != 5})
    try:
        assert without_five.below(6) is None and without_five.below(ABLATION) is None
    finally:
        without_five.close()


def test_rows_in_order_under_each_model(models, service):
    read = reading(service, [1, 3, 6, ABLATION])
    assert list(read.surprises) == [1, 2, 3, 5, 6, ABLATION] and list(read.lenses) == [6, ABLATION]
    shown = view.rows(models, read)
    n_layer = models[6].model.config.n_layer
    expected = ([(1, view.Kind.SURPRISE), (3, view.Kind.SURPRISE), (3, view.Kind.GAIN), (6, view.Kind.SURPRISE),
                 (6, view.Kind.GAIN)] + [(6, view.Kind.LENS)] * n_layer
                + [(ABLATION, view.Kind.SURPRISE), (ABLATION, view.Kind.GAIN)] + [(ABLATION, view.Kind.LENS)] * n_layer)
    assert [(row.key, row.kind) for row in shown] == expected
    assert all([cell.character for cell in row.cells] == list(TEXT) for row in shown)
    assert [row.label for row in shown if row.kind is view.Kind.GAIN] == [
        "↳ saved against 2", "↳ saved against 5", "↳ saved against 5"]


def test_a_gain_row_is_the_difference_of_the_two_surprise_rows(models, service):
    read = reading(service, [4, ABLATION], lens=False)
    surprises = read.surprises
    for upper, lower in ((4, 3), (ABLATION, 5)):
        row = next(r for r in view.rows(models, read) if r.key == upper and r.kind is view.Kind.GAIN)
        values = np.array([cell.value for cell in row.cells])
        np.testing.assert_allclose(values, surprises[lower].bits - surprises[upper].bits, atol=1e-6)
        assert row.figure == f"{surprises[lower].bits_per_char - surprises[upper].bits_per_char:+.2f}"
        cell = row.cells[7]
        assert [c.colour for c in row.cells] == view.gain_colours(values)
        for saved, surprise in ((models[upper], surprises[upper]), (models[lower], surprises[lower])):
            assert f"{saved.milestone.label}: p = {2 ** -surprise.bits[7]:.4f}" in cell.title
            first_guess = saved.tokenizer.vocab[surprise.guesses[7][0]]
            assert f"{view.quoted(first_guess)} {surprise.guess_probabilities[7][0]:.2f}" in cell.title


def test_one_signed_scale_centred_on_zero():
    top = view.GAIN_BITS
    assert view.gain_colours([0.0, top, 10 * top, -top, -10 * top]) == [
        "#ffffff", "#16a34a", "#16a34a", "#9333ea", "#9333ea"]  # white at zero; saved: green; lost: purple
    half_saved, half_lost = (np.array(list(bytes.fromhex(c[1:])), float) for c in view.gain_colours([2.0, -2.0]))
    np.testing.assert_allclose(255 - half_saved, (255 - view.SAVED_RGB) / 2, atol=0.6)  # as far from white each way
    np.testing.assert_allclose(255 - half_lost, (255 - view.LOST_RGB) / 2, atol=0.6)


def test_one_legend_with_the_gain_scale_only_when_shown(models, service):
    shown = view.rows(models, reading(service, [2, 3]))
    page = view.rows_html(shown, 4, gains=True)
    assert page.count('class="ins-legend"') == 1 and "ins-gain-scale" in page
    assert page.count('data-pos="4"') == len(shown) and page.count("ins-sel") == len(shown)
    assert "ins-gain-scale" not in view.rows_html(shown, 4, gains=False)


def test_lens_rows_are_the_lens(models, service):
    read = reading(service, [7]).lenses[7]
    rows = view.lens_rows(models[7], TEXT, read)
    assert len(rows) == models[7].model.config.n_layer  # after the embeddings and each block but the last (the row)
    for block, row in enumerate(rows):
        np.testing.assert_allclose([cell.value for cell in row.cells], read.bits[block])
        assert row.figure == f"{read.bits[block].mean():.2f}"
        assert f"rank {read.ranks[block, 5]}" in row.cells[5].title
    assert rows[0].label == "↳ after the embeddings"
    assert rows[1].label == f"↳ after block 1 (changed {read.change[0]:.0%})"


def test_the_lens_at_a_slot_ranks_as_the_lens_over_the_text(models):
    read = analysis.lens(models[8], TEXT)
    for slot in (0, 11, len(TEXT) - 1):
        seen = analysis.look_at(models[8], TEXT, slot)
        steps = view.lens_steps(models[8], seen, TEXT[slot])
        assert [s.after for s in steps] == list(range(len(read.ranks)))
        for step in steps:
            assert step.truth.char == TEXT[slot]
            assert step.truth.probability == pytest.approx(2 ** -read.bits[step.after, slot], rel=1e-4)
            assert step.truth.rank == read.ranks[step.after, slot]
            probabilities = [c.probability for c in step.top]
            assert probabilities == sorted(probabilities, reverse=True)
    after_text = view.lens_steps(models[8], analysis.look_at(models[8], TEXT, len(TEXT)), None)
    assert all(step.truth is None for step in after_text)
    html = view.lens_html(models, analysis.reading(models, TEXT, [5, 8]), 11,
                          [analysis.look_at(models[k], TEXT, 11) for k in (5, 8)], LADDER)
    assert html.count('class="ins-card ins-lens-card"') == 1  # milestone 5 has one block: no lens card
    assert "6, 7, 8 or the ablation" in view.lens_html(models, analysis.reading(models, TEXT, [5]), 11,
                                                        [analysis.look_at(models[5], TEXT, 11)], LADDER)


def test_laying_out_the_tab_runs_no_model(models, monkeypatch, tmp_path):
    import gradio as gr

    from toystory_gpt.model import GPT
    from toystory_gpt.ui import inside
    from toystory_gpt.ui.page import Context

    def refuse(*args, **kwargs):
        raise AssertionError("a model ran while the page was laid out")

    service = service_of(models)
    monkeypatch.setattr(GPT, "forward", refuse)
    try:
        with torch.no_grad(), gr.Blocks():
            inside.build(Context(service, tmp_path, [], None))
    finally:
        service.close()
