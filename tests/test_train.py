import json
import re

import pytest

import train
from tests.conftest import LADDER_TEXT, SCREENPLAY_SAMPLE
from toystory_gpt import __main__ as cli
from toystory_gpt import corpus, report, weights
from toystory_gpt.milestones import LADDER


def test_quick_run_builds_every_milestone(quick_weights):
    for m in LADDER.milestones:
        folder = quick_weights / m.folder
        assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
        sample = (folder / f"{m.folder}.txt").read_text()
        assert len(sample.split("\n\n", 1)[1]) >= 500
        record = weights.read_record(folder)
        assert record.milestone == m.number and record.history[0].step == 0 and record.steps > 0
        assert record.history[0].train_loss is None and record.history[-1].train_loss > 0
    assert (quick_weights / "ablation-deep-no-residual" / "model.safetensors").is_file()
    summary = report.read_summary(quick_weights)
    assert summary.corpus.to_text() in (quick_weights / "milestone1" / "milestone1.txt").read_text()
    assert [r.milestone for r in summary.rows] == [1, 2, 3, 4, 5, 6, 7, 8, None]
    assert summary.corpus.vocabulary == 62 and summary.command.startswith("python train.py --quick")
    assert summary.corpus.name == LADDER_TEXT.name and summary.corpus.sha256 == corpus.sha256_of(LADDER_TEXT)
    card = (quick_weights / "README.md").read_text()
    assert re.search(r"\| 8 · \+ dropout +\| +30,272 \|", card) and "val bits/char" in card


def test_evaluate_recomputes_the_saved_numbers(quick_weights, capsys):
    assert cli.main(["evaluate", "--text", str(LADDER_TEXT), "--weights", str(quick_weights), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    saved = {r.milestone: r for r in report.read_summary(quick_weights).rows}
    assert [r["milestone"] for r in rows] == list(range(1, 9))
    for r in rows:
        assert r["val_loss"] == pytest.approx(saved[r["milestone"]].val_loss, abs=1e-5)
        assert r["params"] == saved[r["milestone"]].params


def test_training_a_subset_keeps_the_others(tmp_path):
    out = tmp_path / "w"
    assert train.main(["--quick", "--milestones", "2,3", "--out", str(out), "--corpus", str(SCREENPLAY_SAMPLE)]) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["milestone2", "milestone3"]
    assert train.main(["--quick", "--milestones", "1", "--max-steps", "5", "--out", str(out),
                       "--corpus", str(SCREENPLAY_SAMPLE)]) == 0
    rows = report.read_summary(out).rows
    assert [r.milestone for r in rows] == [1, 2, 3] and rows[0].steps == 5
    # A screenplay's exploration (milestone 1's sample) counts its speakers.
    assert "top speakers by lines: MARGO 10, BRASS 8" in (out / "milestone1" / "milestone1.txt").read_text()


def test_missing_corpus_is_a_clear_error(tmp_path, capsys):
    assert train.main(["--quick", "--corpus", str(tmp_path / "nope.txt"), "--out", str(tmp_path)]) == 2
    assert "corpus file not found" in capsys.readouterr().err


@pytest.mark.parametrize("bad, message", [("0", "milestones are numbered 1-8, got '0'"),
                                          ("9", "milestones are numbered 1-8, got '9'"),
                                          ("2,x", "expected milestone numbers like 2,5,8, got '2,x'"),
                                          ("", "milestones are numbered 1-8, got ''")])
@pytest.mark.parametrize("command", [train.main, lambda argv: cli.main(["generate", *argv])], ids=["train", "cli"])
def test_bad_milestone_list_is_rejected(command, bad, message, capsys):
    with pytest.raises(SystemExit) as exit:
        command(["--milestones", bad])
    assert exit.value.code == 2
    assert f"--milestones: {message}" in capsys.readouterr().err


def test_the_console_script_is_the_cli_and_trains(capsys):
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "toystory-gpt"]
    assert script.value == "toystory_gpt.__main__:main"
    with pytest.raises(SystemExit) as exit:
        script.load()(["train", "--help"])
    assert exit.value.code == 0 and "--seeds" in capsys.readouterr().out
