"""Any plain text: refused with a message when it cannot be trained on, named downloads checked, a small text trained,
served and reported; several seeds recorded, with a mean ± sd and gains ± sd that are recomputed here."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import statistics

import pytest
import torch
from gradio_client import Client
from safetensors.torch import load_file

import app
import train
from tests.conftest import ROOT
from tests.test_corpus import http_server  # noqa: F401  (a fixture)
from toystory_gpt import __main__ as cli
from toystory_gpt import corpus, milestones, report, weights
from toystory_gpt.record import Example, Presentation
from toystory_gpt.ui.page import free_port

SHAKESPEARE = ROOT.parent / "shared" / "data" / "tiny-shakespeare.txt"
# A small play-like text with a speaker line that recurs: long enough for the quick configuration's windows (32).
PLAY = "".join(f"ALICE:\nThe {animal} sat on the mat, number {n}.\n\nBOB:\nAnd then it ran away.\n\n"
               for n, animal in enumerate(["cat", "dog", "owl", "fox", "hen"] * 8))


def run_train(tmp_path, text_arg: str, *extra: str) -> int:
    return train.main(["--quick", "--text", text_arg, "--out", str(tmp_path / "out"), *extra])


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.txt", r"text file not found: .*missing\.txt: give the path of a UTF-8 plain-text file"),
    (lambda d: d, r"is a folder, not a text file"),
    (lambda d: _write(d, b""), r"is empty: there is nothing to train on"),
    (lambda d: _write(d, b"\x7fELF\x02\x01\x01\x00\x00" + bytes(range(256)) * 8), r"holds NUL bytes \(the first at "
                                                                                   r"byte 7\): it is a binary file"),
    (lambda d: _write(d, PLAY.encode("utf-16")), r"is UTF-16 text, not UTF-8: save it as UTF-8"),
    (lambda d: _write(d, PLAY.encode("utf-16-le")), r"is UTF-16 text, not UTF-8"),  # no byte-order mark
    (lambda d: _write(d, PLAY.replace("cat", "café").encode("latin-1")),
     rf"is not UTF-8 text: byte 0xe9 at offset {PLAY.index('cat') + 3} is not valid UTF-8.*iconv"),
    (lambda d: _write(d, PLAY[:300].encode()), r"has 300 characters; training needs at least 321: 90% for training "
                                               r"and the last 10% for validation, each at least one window of the "
                                               r"32-character context"),
    (lambda d: _write(d, "".join(map(chr, range(0x4E00, 0x4E00 + 1100))).encode()),
     r"has 1,100 distinct characters; a character-level model here takes at most 1,024"),
], ids=["missing", "folder", "empty", "binary", "utf-16", "utf-16-no-bom", "latin-1", "too-short", "too-many-chars"])
def test_bad_text_is_refused_before_training_with_a_message(tmp_path, capsys, make, message):
    given = make(tmp_path)
    assert run_train(tmp_path, str(given)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()  # nothing written to --out


def _write(folder, data: bytes):
    path = folder / "input.txt"
    path.write_bytes(data)
    return path


def test_text_and_corpus_together_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(["--text", "a.txt", "--corpus", "b.txt", "--out", str(tmp_path / "out")])
    assert "--text and --corpus name two corpora" in capsys.readouterr().err


def test_a_copy_of_a_named_text_is_recognised_by_its_checksum(tmp_path):
    if not SHAKESPEARE.is_file():
        pytest.skip(f"no {SHAKESPEARE}: the whole of Tiny Shakespeare is not committed (tests/data holds an excerpt)")
    text = corpus.load_text(str(SHAKESPEARE), cache_dir=tmp_path)
    assert text.record.name == "tiny-shakespeare" and text.record.sha256 == corpus.TINY_SHAKESPEARE.sha256
    assert (text.record.vocabulary, text.record.bytes, text.record.lines) == (65, 1_115_394, 40_000)
    assert text.record.presentation == corpus.TINY_SHAKESPEARE.presentation and text.text.startswith("First Citizen:")


def named(monkeypatch, url: str, sha256: str) -> corpus.NamedText:
    text = corpus.NamedText("little-play", url, sha256, Presentation("a little play", "ALICE:\n",
                                                                      (Example("ALICE:\n", "ALICE:"),)))
    monkeypatch.setitem(corpus.NAMED_TEXTS, text.name, text)
    return text


def test_named_text_is_downloaded_checked_and_cached(http_server, tmp_path, monkeypatch):  # noqa: F811
    root, url = http_server
    (root / "play.txt").write_text(PLAY, encoding="utf-8")
    text = named(monkeypatch, f"{url}/play.txt", hashlib.sha256(PLAY.encode()).hexdigest())
    cache = tmp_path / "cache"
    loaded = corpus.load_text("little-play", cache_dir=cache)
    assert loaded.text == PLAY and loaded.record.name == "little-play" and loaded.record.presentation.described == \
        "a little play"
    assert sorted(p.name for p in cache.iterdir()) == ["little-play.txt"]
    (root / "play.txt").unlink()  # cached: not fetched again
    assert corpus.load_text(text.name, cache_dir=cache).text == PLAY


def test_named_text_with_a_wrong_checksum_saves_nothing(http_server, tmp_path, monkeypatch):  # noqa: F811
    root, url = http_server
    (root / "play.txt").write_text(PLAY, encoding="utf-8")
    named(monkeypatch, f"{url}/play.txt", "0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(corpus.CorpusError, match=r"checksum mismatch .* Pass a verified copy with --text PATH"):
        corpus.load_text("little-play", cache_dir=cache)
    assert list(cache.iterdir()) == []


def test_named_text_offline_says_what_to_do(tmp_path, monkeypatch, capsys):
    named(monkeypatch, "http://127.0.0.1:9/play.txt", "0" * 64)  # nothing listens on port 9: refused at once
    monkeypatch.setattr(corpus, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    assert run_train(tmp_path, "little-play") == 2
    err = capsys.readouterr().err
    assert "could not download little-play from http://127.0.0.1:9/play.txt" in err
    assert "Offline? Pass a local copy with --text PATH" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def play_weights(tmp_path_factory):
    """The whole ladder, quick, on PLAY written to a file of its own, with two seeds."""
    folder = tmp_path_factory.mktemp("play")
    (folder / "play.txt").write_text(PLAY, encoding="utf-8")
    assert train.main(["--quick", "--text", str(folder / "play.txt"), "--out", str(folder / "out"),
                       "--seeds", "1337,2", "--ablation"]) == 0
    return folder / "out"


def test_a_plain_text_ladder_reports_its_corpus(play_weights):
    summary = report.read_summary(play_weights)
    record = summary.corpus
    assert (record.name, record.file, record.sha256) == ("play.txt", "play.txt", hashlib.sha256(PLAY.encode())
                                                         .hexdigest())
    assert (record.characters, record.vocabulary, record.bytes) == (len(PLAY), len(set(PLAY)), len(PLAY.encode()))
    assert record.speeches is None and record.top_speakers is None
    assert record.top_characters[0] == (" ", PLAY.count(" "))
    # Its prompts follow the text: its first line, its most frequent line, and an empty one.
    assert [e.prompt for e in record.presentation.examples] == ["ALICE:", "BOB:\n", ""]
    card = (play_weights / "milestone8" / "README.md").read_text()
    assert record.sha256 in card and "`play.txt`" in card and "toy-story" not in card
    first = (play_weights / "milestone1" / "milestone1.txt").read_text()
    assert "most frequent characters: ␠ (space)" in first and "speakers" not in first
    assert weights.read_record(play_weights / "milestone3").corpus == record
    assert "Trained on <code>play.txt</code>" in (play_weights / "README.md").read_text()


def test_evaluate_recomputes_a_plain_text_ladder(play_weights, capsys):
    assert cli.main(["evaluate", "--text", str(play_weights.parent / "play.txt"), "--weights", str(play_weights),
                     "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    saved = {r.milestone: r for r in report.served_rows(report.read_summary(play_weights).rows)}
    assert [r["milestone"] for r in rows] == list(range(1, 9))
    assert all(r["val_loss"] == pytest.approx(saved[r["milestone"]].val_loss, abs=1e-5) for r in rows)


def test_seeds_give_different_weights_and_a_recomputable_mean_and_sd(play_weights, tmp_path):
    summary = report.read_summary(play_weights)
    assert summary.seeds == [1337, 2] and summary.served_seed == 1337
    rows = summary.rows
    assert {(r.folder, r.seed) for r in rows} == {(m.folder, s) for m in milestones.LADDER.models for s in (1337, 2)}
    assert all(r.served == (r.seed == 1337) for r in rows)
    by = {(r.folder, r.seed): r.val_loss for r in rows}
    assert by[("milestone8", 1337)] != by[("milestone8", 2)]
    # The table's mean ± sd and gain ± sd, recomputed from the rows.
    table = report.table(rows)
    for m in milestones.LADDER:
        losses = [by[(m.folder, s)] for s in (1337, 2)]
        line = next(line for line in table.splitlines() if line.startswith(f"| {m.label} "))
        assert f"{statistics.fmean(losses):.3f} ± {statistics.stdev(losses):.3f}" in line
        if m.number > 1:
            below = milestones.LADDER[m.number - 1].folder
            gains = [by[(below, s)] - by[(m.folder, s)] for s in (1337, 2)]
            mean, sd = statistics.fmean(gains), statistics.stdev(gains)
            assert f"{mean:+.3f} ± {sd:.3f}" + (" (within noise)" if abs(mean) < 2 * sd else "") in line
    # Seed 2 trained on its own serves weights unlike seed 1337's, and scores what the two-seed run recorded for it.
    other = tmp_path / "seed2"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of the two-seed run's two jobs had: thread count changes float summation order
    try:
        assert train.main(["--quick", "--text", str(play_weights.parent / "play.txt"), "--out", str(other),
                           "--seeds", "2", "--milestones", "8", "--no-ablation", "--jobs", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    mine, theirs = (load_file(folder / "milestone8" / "model.safetensors") for folder in (play_weights, other))
    assert any(not mine[k].equal(theirs[k]) for k in mine)
    assert weights.read_record(other / "milestone8").best_val_loss == pytest.approx(by[("milestone8", 2)], abs=1e-6)


def test_the_app_serves_a_plain_text_ladder_and_fits_it(play_weights):
    demo = app.build_app(play_weights)
    _, url, _ = app.launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        client = Client(url, verbose=False)
        answer = client.predict(milestones=[2, 8], prompt="ALICE:\n", length=30, temperature=0.8, top_k=0, seed=0,
                                api_name="/generate")
        assert [(w["milestone"], len(w["text"])) for w in answer["texts"]] == [(2, 30), (8, 30)]
        surprise = client.predict(text="BOB:\nAnd then", milestones=[2, 8], api_name="/surprise")
        assert [m["milestone"] for m in surprise["milestones"]] == [2, 8]
        prompt = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "prompt")
        assert prompt.value == "ALICE:"  # the text's first line, not "WOODY:"
        page = json.dumps(demo.config, default=str)
        assert "<code>play.txt</code>" in page and "Toy Story</i> (1995) screenplay" not in page
        assert "most frequent characters" in page and "top speakers" not in page
    finally:
        demo.close()


def test_commentary_does_not_claim_a_gain_within_noise():
    rows = [dataclasses.replace(report.row(m, None), seed=seed, val_loss=loss, still_improving=False, best_step=100,
                                steps=200, train_loss=loss - 0.1, served=seed == 1)
            for m, losses in ((milestones.LADDER[4], (2.30, 2.25, 2.28)), (milestones.LADDER[5], (2.28, 2.27, 2.24)))
            for seed, loss in zip((1, 2, 3), losses)]
    about = report.ladder_commentary(rows)
    assert "within noise of milestone 4" in about and "do not show that this idea changes the loss" in about
    assert "better than milestone 4" not in about and "A step back" not in about
