import json
import subprocess
import sys

import pytest

import train
from tests.conftest import ROOT
from toystory_gpt import __main__ as cli
from toystory_gpt.milestones import MILESTONES


def test_quick_run_builds_every_milestone(quick_weights):
    for m in MILESTONES:
        folder = quick_weights / m.folder
        assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
        sample = (folder / f"{m.folder}.txt").read_text()
        assert len(sample.split("\n\n", 1)[1]) >= 500
        history = json.loads((folder / "history.json").read_text())
        assert history["history"][0]["step"] == 0 and history["steps"] > 0
        assert {"step", "train_loss", "val_loss", "elapsed"} <= set(history["history"][-1])
    assert "top speakers by lines: WOODY" in (quick_weights / "milestone1" / "milestone1.txt").read_text()
    assert (quick_weights / "ablation-deep-no-residual" / "model.safetensors").is_file()
    rows = json.loads((quick_weights / "results.json").read_text())
    assert [r["milestone"] for r in rows] == [1, 2, 3, 4, 5, 6, 7, 8, 0]
    card = (quick_weights / "README.md").read_text()
    assert "| 8 · + dropout |" in card and "val bits/char" in card


def test_evaluate_recomputes_the_saved_numbers(quick_weights, corpus_path, capsys):
    assert cli.main(["evaluate", "--corpus", str(corpus_path), "--weights", str(quick_weights), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    saved = {r["milestone"]: r for r in json.loads((quick_weights / "results.json").read_text())}
    assert [r["milestone"] for r in rows] == list(range(1, 9))
    for r in rows:
        assert r["val_loss"] == pytest.approx(saved[r["milestone"]]["val_loss"], abs=1e-5)
        assert r["params"] == saved[r["milestone"]]["params"]


def test_training_a_subset_keeps_the_others(quick_weights, corpus_path, tmp_path):
    out = tmp_path / "w"
    assert train.main(["--quick", "--milestones", "2,3", "--out", str(out), "--corpus", str(corpus_path)]) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["milestone2", "milestone3"]
    assert train.main(["--quick", "--milestones", "1", "--max-steps", "5", "--out", str(out), "--corpus", str(corpus_path)]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert [r["milestone"] for r in rows] == [1, 2, 3] and rows[0]["steps"] == 5


def test_missing_corpus_is_a_clear_error(tmp_path, capsys):
    assert train.main(["--quick", "--corpus", str(tmp_path / "nope.txt"), "--out", str(tmp_path)]) == 2
    assert "corpus file not found" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["0", "9", "2,x", ""])
def test_bad_milestone_list_is_rejected(bad):
    proc = subprocess.run([sys.executable, "train.py", "--milestones", bad], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "--milestones" in proc.stderr
