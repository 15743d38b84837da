"""Adding a milestone takes one `Rung` in milestones.py: train.py, the CLI, the reports and the app all follow.

The ladder with a ninth rung is passed, as any ladder, to what serves it (train.py, the CLI, the app): nothing
else is edited, and no module global is patched."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import gradio as gr
import pytest
from gradio_client import Client

import app
import train
from tests.conftest import LADDER_TEXT
from toystory_gpt import __main__ as cli
from toystory_gpt import analysis, api, excerpts, report, training_job, weights
from toystory_gpt.milestones import ABLATION, LADDER, Rung
from toystory_gpt.ui import training
from toystory_gpt.ui.page import header_markdown

pytestmark = pytest.mark.slow  # trains a whole ladder of its own

NINTH = Rung("+ eight heads", "The same width split into eight heads instead of four.", dict(n_head=8),
             why_worse="Eight heads of half the width each see a narrower slice of every character.")
NINE = LADDER.extended(NINTH)
TEXT = "WOODY: Hey, Buzz!"


@pytest.fixture(scope="module")
def nine(tmp_path_factory):
    """A ladder with a ninth rung, trained with train.py --quick."""
    out = tmp_path_factory.mktemp("nine")
    assert train.main(["--quick", "--out", str(out), "--text", str(LADDER_TEXT)], NINE) == 0
    return out


def test_train_builds_the_ninth_rung_on_top_of_the_eighth(nine):
    ninth = NINE[9]
    assert ninth.config == {**NINE[8].config, "n_head": 8} and ninth.folder == "milestone9"
    assert weights.read_record(nine / "milestone9").model_config["n_head"] == 8
    assert [r.milestone for r in report.read_summary(nine).rows] == [*range(1, 10), None]
    assert "| 9 · + eight heads " in (nine / "README.md").read_text()


def test_the_cli_generates_inspects_and_evaluates_nine(nine, capsys):
    assert cli.main(["generate", "--weights", str(nine), "--milestones", "8,9", "--length", "20", "--json"], NINE) == 0
    texts = json.loads(capsys.readouterr().out)
    assert [t["milestone"] for t in texts] == [8, 9] and texts[1]["name"] == "+ eight heads"
    assert len(texts[1]["text"]) == 20
    assert cli.main(["evaluate", "--weights", str(nine), "--text", str(LADDER_TEXT), "--json"], NINE) == 0
    assert [r["milestone"] for r in json.loads(capsys.readouterr().out)] == list(range(1, 10))
    for view in ("surprise", "next_chars", "attention", "lens"):
        assert cli.main(["inspect", view, "--text", TEXT, "--milestones", "9", "--weights", str(nine)], NINE) == 0
        assert capsys.readouterr().out
    with pytest.raises(SystemExit):  # and the eight-rung CLI refuses it, as it should
        cli.main(["generate", "--weights", str(nine), "--milestones", "9"])
    assert "milestones are numbered 1-8" in capsys.readouterr().err


def test_every_endpoint_serves_nine(nine):
    demo = app.build_app(nine, ladder=NINE)
    checkboxes = [b for b in demo.blocks.values() if isinstance(b, gr.CheckboxGroup)]
    assert [value for _, value in checkboxes[0].choices] == list(range(1, 10))  # Compare
    assert [value for _, value in checkboxes[1].choices] == [*range(1, 10), ABLATION]  # Inside
    _, url, _ = app.launch(demo, server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    client = Client(url, verbose=False)
    try:
        answer = client.predict(milestones=[1, 9], prompt="WOODY:", length=10, temperature=0.8, top_k=0, seed=0,
                                api_name="/generate")
        assert [(w["milestone"], len(w["text"])) for w in answer["texts"]] == [(1, 10), (9, 10)]
        surprise = client.predict(text=TEXT, milestones=[9], api_name="/surprise")
        assert [row["milestone"] for row in surprise["milestones"]] == [9]
        bars = client.predict(text=TEXT, milestones=[8, 9], api_name="/next_chars")
        assert [row["milestone"] for row in bars["milestones"]] == [8, 9]
        attention = client.predict(text=TEXT, milestone=9, api_name="/attention")
        assert len(attention["weights"][0]) == 8  # eight heads
        lens = client.predict(text=TEXT, milestone=9, api_name="/logit_lens")
        blocks = weights.read_record(nine / "milestone9").model_config["n_layer"]
        assert lens["milestone"] == 9 and len(lens["blocks"]) == blocks + 1
    finally:
        client.close()
        demo.close()


def test_every_tab_shows_nine(nine):
    service = api.Service.from_folder(nine, NINE)
    try:
        read = service.inside(service.parse(api.InsideRequest, text=TEXT, milestones=[9], gains=True, lens=True))
        assert list(read.surprises) == [8, 9] and read.below == {9: 8} and list(read.lenses) == [9]
    finally:
        service.close()
    assert "<b>+ eight heads</b>" in header_markdown(ladder=NINE)  # the header's list of the ladder
    assert [line.key for line in training.training_curves(nine, NINE)["val"]] == [*map(str, range(1, 10)), "abl"]
    assert 'id="rewind-9"' in training.rewind_html(training.records(nine, NINE), 30, NINE)
    assert [e.milestone.label for e in excerpts.read(NINE)][8] == "9 · + eight heads"  # the About tab's code
    assert "6, 7, 8, 9 or the ablation" == analysis.deep_ones(NINE) and analysis.attending(NINE) == "3 and up"


def test_the_reports_explain_a_ninth_step_back(nine):
    rows = report.collect_rows(nine, ladder=NINE)
    # whatever it scored, the commentary has words for a step back
    rows[8] = dataclasses.replace(rows[8], val_loss=rows[7].val_loss + 0.1)
    about = report.ladder_commentary(rows, NINE)
    assert "**9 · + eight heads** — The same width split into eight heads instead of four." in about
    assert "0.100 worse than milestone 8. **A step back.** Eight heads of half the width" in about


def test_a_visitor_trains_a_ladder_of_nine_and_generates_with_its_ninth(nine):
    service = api.Service.from_folder(nine, NINE, trainings=training_job.Trainings(training_job.TINY_RECIPE,
                                                                                   device="cpu"))
    try:
        request = service.parse(api.TrainRequest, text=LADDER_TEXT.read_text(encoding="utf-8"), milestones=[8, 9])
        running = service.start_training(service.text_of(request), request.milestones, owner="page")
        assert [m.label for m in running.job.plan.models] == [NINE[8].label, NINE[9].label]

        async def read():
            return [update async for update in service.train(running, "page")]

        updates = asyncio.run(read())
        assert [u.milestone for u in updates if u.saved] == [8, 9]
        yours = service.on(updates[-1].ladder)
        assert yours.ladder is NINE and sorted(yours.models.saved) == [8, 9]
        answer = service.run(service.generate_request(milestones=[9], prompt="WOODY:", length=20,
                                                      ladder=updates[-1].ladder))
        assert len(answer.texts[0].text) == 20
    finally:
        service.close()
