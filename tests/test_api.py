"""The one entry for requests: validation messages, the Service's streaming and runs, the CLI and where weights come
from."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from toystory_gpt import __main__ as cli
from toystory_gpt import api, hub, onnx_decode
from toystory_gpt.api import GenerateRequest, InvalidRequest
from toystory_gpt.onnx_decode import OnnxDecoding
from toystory_gpt.serving.engine import TICKS_PER_TURN

GOOD = dict(milestones=[2, 5, 8], prompt="WOODY:", length=40, temperature=0.8, top_k=0, seed=3)
IDLE_TIMEOUT = 30  # seconds; bounds a hang, measures nothing


def streamed(service: api.Service, request: GenerateRequest, interval: float) -> list[dict[int, str]]:
    """Every update ``Service.stream`` yields for ``request``, read to the end, as {milestone: text}."""
    async def read():
        return [texts(answer) async for answer in service.stream(request, interval)]
    return asyncio.run(read())


def texts(answer: api.GenerateAnswer) -> dict[int, str]:
    return {written.milestone: written.text for written in answer.texts}


def run(service: api.Service, **inputs) -> dict[int, str]:
    return texts(service.run(service.generate_request(**inputs)))


def wait_until_idle(service: api.Service) -> None:
    """Until the engine holds no sequence (live or waiting); fails after IDLE_TIMEOUT."""
    deadline = time.monotonic() + IDLE_TIMEOUT
    while service.engine.active:
        assert time.monotonic() < deadline, f"the engine still holds {service.engine.active} sequences"
        time.sleep(0.01)


def test_parse_normalises_what_json_and_sliders_send():
    request = GenerateRequest.parse(milestones=["8", 2.0, 5, 5], prompt=None, length=300.0, temperature=1, top_k=0.0,
                                    seed=7.0)
    assert request == GenerateRequest(milestones=(2, 5, 8), prompt="", length=300, temperature=1.0, top_k=0, seed=7)
    assert request.milestones == (2, 5, 8) and request.step is None
    assert GenerateRequest.parse(**GOOD, step=api.FINAL).step is None
    assert GenerateRequest.parse(**GOOD, step="10").step == 10  # as Gradio's API page shows a choice


@pytest.mark.parametrize("change, message", [
    (dict(milestones=[]), "at least one milestone"),
    (dict(milestones=[9]), "each milestone must be from 1 to 8"),
    (dict(milestones="2,5"), "milestones must be a list"),
    (dict(prompt="x" * (api.MAX_PROMPT + 1)), "the limit is 1,000"),
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
def test_parse_rejects_with_a_message_for_people(change, message):
    with pytest.raises(InvalidRequest, match=message):
        GenerateRequest.parse(**{**GOOD, **change})


@given(st.fixed_dictionaries({k: st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5),
                                            st.lists(st.integers(-3, 12), max_size=4))
                              for k in GOOD}))
def test_parse_never_fails_any_other_way(inputs):
    try:
        request = GenerateRequest.parse(**inputs)
    except InvalidRequest:
        return
    assert 1 <= request.length <= api.MAX_LENGTH and request.milestones


def test_stream_grows_every_text_together_in_ladder_order(service):
    request = service.generate_request(**{**GOOD, "milestones": [8, 2, 5], "length": 300})
    wait_until_idle(service)  # alone in the engine, the three start in the same tick
    updates = streamed(service, request, interval=0.001)
    final = updates[-1]
    assert final == texts(service.run(request))  # the last update holds the finished texts
    assert {n: len(t) for n, t in final.items()} == {2: 300, 5: 300, 8: 300}
    assert len(updates) <= 3 * request.length + 1  # every update but the last shows something new
    assert all(before != after for before, after in zip(updates, updates[1:-1]))
    for shown, later in zip(updates, updates[1:]):
        assert list(shown) == [2, 5, 8]  # the chosen ones, in ladder order
        assert all(later[n].startswith(shown[n]) for n in (2, 5, 8))  # each text only ever grows
        lengths = [len(shown[n]) for n in (2, 5, 8)]
        assert max(lengths) - min(lengths) <= TICKS_PER_TURN  # never more than one turn apart
    # Live: texts were shown part-written, all three at once.
    assert any(all(0 < len(shown[n]) < 300 for n in (2, 5, 8)) for shown in updates)


def test_stream_sends_few_updates_and_always_the_finished_texts(service):
    request = service.generate_request(**GOOD)
    start = time.monotonic()
    assert streamed(service, request, interval=60) == [texts(service.run(request))]  # one update: the last
    assert time.monotonic() - start < 30  # the finished texts come as soon as they are, not at the next interval


def test_closing_the_stream_frees_the_engine_at_once(service):
    request = service.generate_request(**{**GOOD, "length": api.MAX_LENGTH})

    async def first_update_then_close():
        stream = service.stream(request, interval=0.001)
        answer = await anext(stream)
        assert service.engine.active == 3  # still writing
        await stream.aclose()  # what a closed tab does
        return texts(answer)

    first = asyncio.run(first_update_then_close())
    assert all(len(first[n]) < api.MAX_LENGTH for n in (2, 5, 8))
    wait_until_idle(service)


async def visit_stream(service, request, owner, address=None, started=None):
    """A visitor's whole generation as the app runs it: its share held while it is checked and streamed (a pause
    ``started`` stands for the check); every update, as {milestone: text}."""
    with service.visit(owner, address) as visit:
        if started is not None:
            await started
        return [texts(answer) async for answer in service.stream(request, interval=0.001, visit=visit)]


def test_stop_ends_its_owners_stream_with_the_texts_so_far_and_no_other(service):
    long = service.generate_request(**{**GOOD, "length": api.MAX_LENGTH})
    other = service.generate_request(**{**GOOD, "length": 600, "seed": 4})

    async def one_visitor_stops():
        checked = asyncio.get_running_loop().create_future()
        mine = asyncio.ensure_future(visit_stream(service, long, "me", started=checked))
        theirs = asyncio.ensure_future(visit_stream(service, other, "them"))
        await asyncio.sleep(0)
        checked.set_result(None)  # checked: it starts writing
        while service.engine.active < 6:
            await asyncio.sleep(0.001)
        assert await service.stop("me") == 1
        assert mine.done()  # stop returns once the stream has sent its last update and ended
        assert await service.stop("me") == 0 and await service.stop("nobody") == 0
        return (await mine)[-1], (await theirs)[-1]

    mine, theirs = asyncio.run(one_visitor_stops())
    full = texts(service.run(long))
    for n in (2, 5, 8):  # stopped part-way: what it had written, which is how the full text begins
        assert len(mine[n]) < api.MAX_LENGTH and full[n].startswith(mine[n])
    assert theirs == texts(service.run(other))  # the other visitor's stream ran to its end
    wait_until_idle(service)


def test_stop_while_a_request_is_being_checked_ends_it_before_it_writes(service):
    async def stopped_while_checking():
        checking = asyncio.get_running_loop().create_future()
        mine = asyncio.ensure_future(visit_stream(service, service.generate_request(**GOOD), "me", started=checking))
        await asyncio.sleep(0)
        stopping = asyncio.ensure_future(service.stop("me"))
        await asyncio.sleep(0)
        checking.set_result(None)  # the check ends after Stop was pressed
        assert await stopping == 1
        return await mine

    assert asyncio.run(stopped_while_checking()) == []  # no update, no error: it ends as if written
    assert service.engine.active == 0  # nothing was submitted


def test_one_visitor_holds_at_most_its_share_and_another_is_served_beside_it(service):
    greedy = service.generate_request(**{**GOOD, "milestones": list(range(1, 9)), "length": api.MAX_LENGTH})
    mine = service.generate_request(**{**GOOD, "milestones": list(range(1, 9)), "length": 300})

    async def greedy_and_another():
        held = [asyncio.ensure_future(visit_stream(service, greedy, "greedy", "10.0.0.1"))
                for _ in range(api.OWNER_LIMIT)]
        await asyncio.sleep(0)
        with pytest.raises(InvalidRequest, match=rf"^This page already has as many generations running as one "
                                                 rf"visitor may have at once \({api.OWNER_LIMIT}\): wait"):
            with service.visit("greedy", "10.0.0.1"):
                pass
        written = (await visit_stream(service, mine, "another", "10.0.0.1"))[-1]
        # Served beside them, not after them: the greedy ones are still writing when it has finished.
        assert not any(h.done() for h in held)
        await service.stop("greedy")
        return written

    assert asyncio.run(greedy_and_another()) == texts(service.run(mine))
    wait_until_idle(service)


def test_one_address_holds_at_most_its_share(service, monkeypatch):
    monkeypatch.setattr(api, "ADDRESS_LIMIT", 3)
    with contextlib.ExitStack() as held:
        for visitor in range(3):
            held.enter_context(service.visit(f"pupil {visitor}", "192.0.2.7"))
        with pytest.raises(InvalidRequest, match=r"^As many generations are running for your network address as "
                                                 r"one address may have at once \(3\): try again"):
            held.enter_context(service.visit("pupil 3", "192.0.2.7"))
        with service.visit("pupil 3", "198.51.100.1"):  # another address is not held up
            pass
    with service.visit("pupil 3", "192.0.2.7"):  # and once one ends, there is room again
        pass


def test_each_text_depends_only_on_its_milestone_and_the_seed(service):
    together = run(service, **GOOD)
    alone = run(service, **{**GOOD, "milestones": [5]})
    assert alone == {5: together[5]}
    assert run(service, **GOOD) == together
    assert run(service, **{**GOOD, "seed": 4}) != together


def test_unavailable_milestone_says_why(quick_weights, tmp_path):
    shutil.copytree(quick_weights, tmp_path / "w")
    (tmp_path / "w" / "milestone7" / "model.safetensors").unlink()
    shutil.rmtree(tmp_path / "w" / "milestone3")
    partial = api.Service.from_folder(tmp_path / "w")
    try:
        with pytest.raises(InvalidRequest, match=r"7 · \+ layer normalization is unavailable: its weights are broken "
                                                 r".*model.safetensors: missing"):
            partial.generate_request(**{**GOOD, "milestones": [7]})
        with pytest.raises(InvalidRequest, match="3 · single-head attention is unavailable: it has not been trained"):
            partial.generate_request(**{**GOOD, "milestones": [3]})
    finally:
        partial.close()


def test_dropped_characters_are_reported_once(service):
    assert service.dropped(service.generate_request(**{**GOOD, "prompt": "WOODY: é<é>"})) == "é<>"
    assert service.dropped(service.generate_request(**GOOD)) == ""


def test_cli_prints_the_same_texts_as_the_library(service, quick_weights, capsys):
    assert cli.main(["generate", "--weights", str(quick_weights), "--milestones", "2,5,8", "--prompt", "WOODY:",
                     "--length", "40", "--temperature", "0.8", "--top-k", "0", "--seed", "3", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {p["milestone"]: p["text"] for p in printed} == run(service, **GOOD)


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


def test_warm_up_exports_every_attention_models_decoding(quick_weights, monkeypatch):
    exported, export = {}, onnx_decode.export

    def recording_export(model):
        exported[id(model)] = export(model)
        return exported[id(model)]

    monkeypatch.setattr(onnx_decode, "export", recording_export)
    fresh = api.Service.from_folder(quick_weights)
    try:
        fresh.engine.warm_up()
        models = fresh.models.saved
        assert {n for n, saved in models.items() if exported.get(id(saved.model))} == {3, 4, 5, 6, 7, 8}
        assert len(exported) == 8  # milestones 1-2 were asked too: they have no cache to step through
        # The first visitor neither exports nor waits for it: the pools decode in ONNX Runtime already.
        assert fresh.run(fresh.generate_request(**{**GOOD, "milestones": list(models)})).text(8)
        assert len(exported) == 8
        assert {n for n in models if isinstance(fresh.engine.pool(n).decoding, OnnxDecoding)} == {3, 4, 5, 6, 7, 8}
    finally:
        fresh.close()
