"""The code of each idea, as the About tab shows it: every excerpt is verbatim from model.py and mentions its switch."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from toystory_gpt import excerpts, model
from toystory_gpt.milestones import LADDER

SOURCE = Path(model.__file__).read_text(encoding="utf-8").splitlines()
SHOWN = {e.milestone.label: e for e in excerpts.read()}


def test_every_model_has_a_short_excerpt():
    assert list(SHOWN) == [m.label for m in LADDER.models]
    for excerpt in SHOWN.values():
        lines = sum(len(piece.lines) for piece in excerpt.pieces)
        assert 1 <= lines <= 14, (excerpt.milestone.label, lines)


@pytest.mark.parametrize("label", list(SHOWN))
def test_each_excerpt_is_verbatim_from_model_py_and_mentions_its_switch(label):
    excerpt = SHOWN[label]
    for piece in excerpt.pieces:
        assert list(piece.lines) == SOURCE[piece.first - 1: piece.first - 1 + len(piece.lines)]
        assert piece.scope.split(".")[0] != "GPTConfig"  # the switches' declaration is not what they turn on
    assert any(re.search(rf"\.{excerpt.switch}\b", line) for piece in excerpt.pieces for line in piece.lines)
    # what is shown is those lines, dedented, under comments saying where they are, with ... for skipped lines
    shown = [line for line in excerpt.code.splitlines() if not line.startswith("#") and line.strip() != "..."]
    assert [line.strip() for line in shown] == [line.strip() for piece in excerpt.pieces for line in piece.lines]


def test_the_switches_reach_the_lines_that_are_their_idea():
    assert "x = x + h if self.residual else h" in SHOWN[LADDER[6].label].code
    assert SHOWN[LADDER.ablation.label].switch == "residual"
    assert "if self.mlp is not None:" in SHOWN[LADDER[5].label].code  # used where the switch built it
    assert "self.token_logits = nn.Embedding(V, V)" in SHOWN[LADDER[2].label].code
    assert "self.token_logits" not in SHOWN[LADDER[1].label].code  # an if's own branch, not its else
    assert "for block in self.blocks:" in SHOWN[LADDER[3].label].code


def test_an_excerpt_follows_the_code_when_it_moves():
    source = "\n".join(SOURCE)
    moved = source.replace("class Block(nn.Module):", "# a comment\n\n\nclass Block(nn.Module):")
    before, after = (excerpts.excerpt(LADDER[6], text) for text in (source, moved))
    assert [p.lines for p in before.pieces] == [p.lines for p in after.pieces]
    assert [p.first + 3 for p in before.pieces] == [p.first for p in after.pieces]


def test_the_about_tab_shows_each_excerpt_as_python():
    import gradio as gr

    from toystory_gpt.ui import about
    from toystory_gpt.ui.page import Context

    # The About tab reads only the served ladder and what training recorded: no model runs.
    context = Context(SimpleNamespace(ladder=LADDER), Path("unused"), [], None)
    with gr.Blocks() as demo:
        about.build(context)
    codes = [block for block in demo.blocks.values() if isinstance(block, gr.Code)]
    assert [(c.label, c.value, c.language) for c in codes] == [
        (about.code_label(e), e.code, "python") for e in SHOWN.values()]
    assert codes[5].label == "6 · + residual connections · residual=True"
