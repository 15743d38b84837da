"""Side-by-side generation: request validation, streaming, seeding, the CLI and where weights come from."""

from __future__ import annotations

import json
import shutil

import pytest
from hypothesis import given
from hypothesis import strategies as st
from toystory_gpt.compare import InvalidRequest, validate

from toystory_gpt import __main__ as cli
from toystory_gpt import compare, hub

GOOD = dict(milestones=[2, 5, 8], prompt="WOODY:", length=40, temperature=0.8, top_k=0, seed=3)


@pytest.fixture(scope="module")
def comparison(quick_weights) -> compare.Comparison:
    return compare.Comparison.from_folder(quick_weights)


def test_validate_normalises_what_json_and_sliders_send():
    request = validate(["8", 2.0, 5, 5], None, 300.0, 1, 0.0, 7.0)
    assert request == compare.Request(milestones=(2, 5, 8), prompt="", length=300, temperature=1.0, top_k=0, seed=7)


@pytest.mark.parametrize("change, message", [
    (dict(milestones=[]), "at least one milestone"),
    (dict(milestones=[9]), "each milestone must be from 1 to 8"),
    (dict(milestones="2,5"), "milestones must be a list"),
    (dict(prompt="x" * (compare.MAX_PROMPT + 1)), "the limit is 1,000"),
    (dict(prompt=42), "prompt must be text"),
    (dict(length=0), "length must be from 1 to 2,000"),
    (dict(length=2001), "length must be from 1 to 2,000"),
    (dict(length=2.5), "length must be a whole number"),
    (dict(temperature=-0.1), "temperature must be a number from 0 to 2"),
    (dict(temperature=float("nan")), "temperature must be a number from 0 to 2"),
    (dict(temperature="hot"), "temperature must be a number from 0 to 2"),
    (dict(top_k=-1), "top_k must be from 0 to 100"),
    (dict(seed=1.5), "seed must be a whole number"),
    (dict(seed="abc"), "seed must be a whole number"),
    (dict(seed=True), "seed must be a whole number"),
    (dict(seed=-1), "seed must be from 0 to 4,294,967,295"),
])
def test_validate_rejects_with_a_message_for_people(change, message):
    with pytest.raises(InvalidRequest, match=message):
        validate(**{**GOOD, **change})


@given(st.fixed_dictionaries({k: st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5),
                                            st.lists(st.integers(-3, 12), max_size=4))
                              for k in GOOD}))
def test_validate_never_fails_any_other_way(inputs):
    try:
        request = validate(**inputs)
    except InvalidRequest:
        return
    assert 1 <= request.length <= compare.MAX_LENGTH and request.milestones


def test_stream_grows_every_text_together_in_ladder_order(comparison):
    request = comparison.request(**{**GOOD, "milestones": [8, 2, 5]})
    updates = list(comparison.stream(request))
    turns = -(-request.length // compare.CHUNK)
    assert len(updates) == 3 * turns  # one update per milestone per turn
    for i, texts in enumerate(updates):
        lengths = [len(texts[n - 1]) for n in (2, 5, 8)]
        assert [len(texts[n - 1]) for n in (1, 3, 4, 6, 7)] == [0] * 5
        assert lengths == sorted(lengths, reverse=True)  # ladder order within a turn
        assert lengths[0] - lengths[-1] <= compare.CHUNK  # never more than a chunk apart
        if i % 3 == 2:  # the end of a turn: all level
            assert lengths == [min(request.length, (i // 3 + 1) * compare.CHUNK)] * 3


def test_each_text_depends_only_on_its_milestone_and_the_seed(comparison):
    together = comparison.run(comparison.request(**GOOD))
    alone = comparison.run(comparison.request(**{**GOOD, "milestones": [5]}))
    assert alone[4] == together[4] and alone.count("") == 7
    assert comparison.run(comparison.request(**GOOD)) == together
    assert comparison.run(comparison.request(**{**GOOD, "seed": 4})) != together


def test_unavailable_milestone_says_why(quick_weights, tmp_path):
    shutil.copytree(quick_weights, tmp_path / "w")
    (tmp_path / "w" / "milestone7" / "model.safetensors").unlink()
    shutil.rmtree(tmp_path / "w" / "milestone3")
    partial = compare.Comparison.from_folder(tmp_path / "w")
    with pytest.raises(InvalidRequest, match=r"7 · \+ layer normalization is unavailable: its weights are broken "
                                             r".*model.safetensors: missing"):
        partial.request(**{**GOOD, "milestones": [7]})
    with pytest.raises(InvalidRequest, match="3 · single-head attention is unavailable: it has not been trained"):
        partial.request(**{**GOOD, "milestones": [3]})


def test_dropped_characters_are_reported_once(comparison):
    assert comparison.dropped(comparison.request(**{**GOOD, "prompt": "WOODY: é<é>"})) == "é<>"
    assert comparison.dropped(comparison.request(**GOOD)) == ""


def test_cli_prints_the_same_texts_as_the_library(comparison, quick_weights, capsys):
    assert cli.main(["generate", "--weights", str(quick_weights), "--milestones", "2,5,8", "--prompt", "WOODY:",
                     "--length", "40", "--temperature", "0.8", "--top-k", "0", "--seed", "3", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    texts = comparison.run(comparison.request(**GOOD))
    assert [(p["milestone"], p["text"]) for p in printed] == [(n, texts[n - 1]) for n in (2, 5, 8)]


def test_cli_reports_a_bad_request_without_a_traceback(quick_weights, capsys):
    assert cli.main(["generate", "--weights", str(quick_weights), "--length", "0"]) == 2
    assert capsys.readouterr().err == "error: length must be from 1 to 2,000, got 0\n"


def test_weights_location_folder_env_or_hub(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(hub, "snapshot_download",
                        lambda repo_id, revision: calls.append((repo_id, revision)) or str(tmp_path))
    monkeypatch.delenv(hub.WEIGHTS_ENV, raising=False)
    monkeypatch.delenv(hub.REVISION_ENV, raising=False)
    assert hub.resolve() == hub.DEFAULT_WEIGHTS_DIR
    assert hub.resolve(tmp_path) == tmp_path and not calls
    monkeypatch.setenv(hub.WEIGHTS_ENV, "someone/toystory-gpt")
    monkeypatch.setenv(hub.REVISION_ENV, "v1")
    assert hub.resolve() == tmp_path and calls == [("someone/toystory-gpt", "v1")]


def test_unreachable_hub_repo_is_one_clear_error(monkeypatch):
    def offline(repo_id, revision):
        raise OSError("network is unreachable")
    monkeypatch.setattr(hub, "snapshot_download", offline)
    with pytest.raises(hub.LocationError, match="'someone/nothing' is not a local folder.*network is unreachable"):
        hub.resolve("someone/nothing")


def test_warm_up_exports_every_attention_models_decoding(quick_weights):
    comparison = compare.Comparison.from_folder(quick_weights)
    comparison.warm_up()
    recorded = {n for n, saved in comparison.models.items() if saved._exported}
    assert recorded == {3, 4, 5, 6, 7, 8}  # milestones 1-2 have no cache to step through
