"""Adding a milestone takes one `Rung` in milestones.py: train.py, the CLI, the reports and the app all follow."""

from __future__ import annotations

import json

import gradio as gr
import pytest
from gradio_client import Client

import app
import train
from tests.conftest import LADDER_TEXT
from toystory_gpt import __main__ as cli
from toystory_gpt import milestones, report, weights
from toystory_gpt.milestones import Rung

pytestmark = pytest.mark.slow  # trains a whole ladder of its own

NINTH = Rung("+ eight heads", "The same width split into eight heads instead of four.", dict(n_head=8),
             why_worse="Eight heads of half the width each see a narrower slice of every character.")


@pytest.fixture(scope="module")
def nine(tmp_path_factory):
    """A ladder with a ninth rung, trained with train.py --quick; LADDER is that ladder while the tests run."""
    patch = pytest.MonkeyPatch()
    patch.setattr(milestones, "LADDER", milestones.LADDER.extended(NINTH))
    out = tmp_path_factory.mktemp("nine")
    assert train.main(["--quick", "--out", str(out), "--text", str(LADDER_TEXT)]) == 0
    yield out
    patch.undo()


def test_train_builds_the_ninth_rung_on_top_of_the_eighth(nine):
    ninth = milestones.LADDER[9]
    assert ninth.config == {**milestones.LADDER[8].config, "n_head": 8} and ninth.folder == "milestone9"
    assert weights.read_record(nine / "milestone9").model_config["n_head"] == 8
    assert [r["milestone"] for r in report.read_summary(nine).rows] == [*range(1, 10), None]
    assert "| 9 · + eight heads " in (nine / "README.md").read_text()


def test_the_cli_generates_and_evaluates_nine(nine, capsys):
    assert cli.main(["generate", "--weights", str(nine), "--milestones", "8,9", "--length", "20", "--json"]) == 0
    texts = json.loads(capsys.readouterr().out)
    assert [t["milestone"] for t in texts] == [8, 9] and texts[1]["name"] == "+ eight heads"
    assert len(texts[1]["text"]) == 20
    assert cli.main(["evaluate", "--weights", str(nine), "--text", str(LADDER_TEXT), "--json"]) == 0
    assert [r["milestone"] for r in json.loads(capsys.readouterr().out)] == list(range(1, 10))


def test_the_app_serves_nine_and_explains_a_ninth_step_back(nine):
    demo = app.build_app(nine)
    checkboxes = next(b for b in demo.blocks.values() if isinstance(b, gr.CheckboxGroup))
    assert [value for _, value in checkboxes.choices] == list(range(1, 10))
    _, url, _ = app.launch(demo, server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    try:
        texts = Client(url, verbose=False).predict(milestones=[1, 9], prompt="WOODY:", length=10, temperature=0.8,
                                                   top_k=0, seed=0, api_name="/generate")
        assert [len(t) for t in texts] == [10, 0, 0, 0, 0, 0, 0, 0, 10]
    finally:
        demo.close()
    rows = report.collect_rows(nine)
    rows[8]["val_loss"] = rows[7]["val_loss"] + 0.1  # whatever it scored, the commentary has words for a step back
    about = report.ladder_commentary(rows)
    assert "**9 · + eight heads** — The same width split into eight heads instead of four." in about
    assert "0.100 worse than milestone 8. **A step back.** Eight heads of half the width" in about
