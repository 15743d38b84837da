"""The web app: its /generate API driven with gradio_client against the app on 127.0.0.1, and its start-up."""

from __future__ import annotations

import asyncio
import importlib.machinery
import importlib.util
import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gradio as gr
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

import app
from toystory_gpt import api, report
from toystory_gpt.ui import endpoints, page, training

GOOD = dict(milestones=[2, 5, 8], prompt="WOODY:", length=60, temperature=0.8, top_k=0, seed=3)


def generate(client: Client, **change) -> dict:
    """/generate's answer, as it comes: {"texts": [{"milestone", "text"}, ...]}."""
    return client.predict(**{**GOOD, **change}, api_name="/generate")


def texts(answer: dict) -> dict[int, str]:
    return {written["milestone"]: written["text"] for written in answer["texts"]}


def test_one_text_per_selected_milestone_of_the_requested_length(client):
    answer = generate(client)
    assert {n: len(t) for n, t in texts(answer).items()} == {2: 60, 5: 60, 8: 60}


def test_same_seed_same_texts_other_seed_other_texts(client):
    assert generate(client) == generate(client)
    assert generate(client, seed=4) != generate(client)


def test_api_text_is_the_librarys_and_so_the_clis(client, served):
    request = served.generate_request(**{**GOOD, "milestones": list(range(1, 9)), "top_k": 5})
    assert generate(client, milestones=list(range(1, 9)), top_k=5) == served.run(request).model_dump()


def test_empty_prompt_and_unknown_characters_still_generate(client):
    assert {n: len(t) for n, t in texts(generate(client, prompt="", milestones=[1])).items()} == {1: 60}
    assert len(texts(generate(client, prompt="WOODY: ¡héllo <b>", milestones=[8]))[8]) == 60


def test_the_api_page_shows_every_answers_shape(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    shapes = {name: endpoint["returns"][0]["type"] for name, endpoint in endpoints.items()}
    assert set(shapes) == {"/generate", "/surprise", "/next_chars", "/attention", "/logit_lens", "/train"}
    written = shapes["/generate"]["properties"]["texts"]["items"]
    assert written["properties"] == {"milestone": {"type": "integer"}, "text": {"type": "string"}}
    assert set(shapes["/surprise"]["properties"]) == {"text", "dropped", "milestones"}
    bars = shapes["/next_chars"]["properties"]["milestones"]["items"]["properties"]
    assert set(bars) == {"milestone", "chars", "true_next"}
    assert set(bars["chars"]["items"]["properties"]) == {"char", "probability", "sampled_probability"}
    assert "weights" in shapes["/attention"]["properties"]
    block = shapes["/logit_lens"]["properties"]["blocks"]["items"]["properties"]
    assert set(block) == {"after", "bits", "bits_per_char", "ranks", "change"}
    assert {"plan", "done", "seconds_left", "evaluation", "ladder"} <= set(shapes["/train"]["properties"])


@pytest.mark.parametrize("change, message", [
    (dict(milestones=[]), "Choose at least one milestone."),
    (dict(length=5000), "length must be from 1 to 2,000, got 5000"),
    (dict(temperature=3), "temperature must be a number from 0 to 2"),
    (dict(top_k=-1), "top_k must be from 0 to 100, got -1"),
    (dict(seed=1.5), "seed must be a whole number from 0 to 4,294,967,295, got 1.5"),
    (dict(prompt="x" * 1001), "prompt is 1,001 characters long; the limit is 1,000"),
    (dict(milestones=[9]), "each milestone must be from 1 to 8, got 9"),
])
def test_bad_input_gets_a_clear_message(client, change, message):
    with pytest.raises(AppError) as error:
        generate(client, **change)
    assert message in str(error.value)


def test_broken_and_missing_milestones_are_shown_not_fatal(quick_weights, tmp_path):
    shutil.copytree(quick_weights, tmp_path / "w")
    (tmp_path / "w" / "milestone7" / "config.json").write_text("{not json", encoding="utf-8")
    shutil.rmtree(tmp_path / "w" / "milestone3")
    demo = app.build_app(tmp_path / "w")
    checkboxes = next(b for b in demo.blocks.values() if isinstance(b, gr.CheckboxGroup))
    assert [value for _, value in checkboxes.choices] == [1, 2, 4, 5, 6, 8]
    notice = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "notice")
    assert ("7 · + layer normalization** is unavailable: its weights are broken (milestone7: config.json: "
            "not valid JSON" in notice.value)
    assert "3 · single-head attention** is unavailable: it has not been trained" in notice.value


def test_training_tab_reads_what_training_saved(quick_weights):
    curves = training.training_curves(quick_weights)
    assert set(curves) == {"train", "val"}
    for split, lines in curves.items():
        assert [line.key for line in lines] == ["1", "2", "3", "4", "5", "6", "7", "8", "abl"]
        assert all(line.points and all(loss > 0 for _, loss in line.points) for line in lines), split
    assert "vocabulary: 62 distinct characters" in training.corpus_statistics(report.read_summary(quick_weights))


def handler_updates(service, **change) -> list:
    """Every update the /generate handler yields for GOOD (with ``change``), read to the end."""
    inputs = {**GOOD, "length": 300, **change}

    async def read():
        return [answer async for answer in endpoints.generate(service)(**inputs)]
    return asyncio.run(read())


def test_generate_handler_sends_few_updates_and_always_the_last(service, monkeypatch):
    finished = service.run(service.generate_request(**{**GOOD, "length": 300}))
    monkeypatch.setattr(endpoints, "UPDATE_INTERVAL", 60)
    assert handler_updates(service) == [finished]  # 60 s between updates: only the finished texts
    monkeypatch.setattr(endpoints, "UPDATE_INTERVAL", 0.001)
    updates = handler_updates(service)
    assert len(updates) > 1 and updates[-1] == finished  # often: the texts as they grow, then the finished ones
    assert any(0 < len(answer.text(2)) < 300 for answer in updates)


@pytest.mark.slow  # starts the app in a subprocess
def test_app_module_serves_the_folder_named_by_the_environment(quick_weights):
    # What a Space does: import app.py with $TOYSTORY_WEIGHTS set, and log what loaded.
    env = {**os.environ, "TOYSTORY_WEIGHTS": str(quick_weights)}
    done = subprocess.run([sys.executable, "-c", "import app; assert app.demo is not None"],
                          cwd=Path(app.__file__).parent, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "loaded 8 · + dropout: 30,272 parameters" in done.stderr


def test_every_endpoint_is_the_apps_not_a_tabs(quick_weights, monkeypatch):
    monkeypatch.setattr(page, "TABS", (page.about,))  # the Compare and Inside tabs removed
    demo = app.build_app(quick_weights)
    public = {fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"}
    assert public == {"generate", "surprise", "next_chars", "attention", "logit_lens", "train"}


@pytest.mark.parametrize("headers, address", [
    ({}, "203.0.113.9"),  # no proxy: the connection's own
    ({"x-forwarded-for": "198.51.100.4"}, "198.51.100.4"),  # one proxy: the address it saw
    ({"x-forwarded-for": "10.9.9.9, 198.51.100.4"}, "198.51.100.4"),  # a forged entry left of the proxy's
    ({"x-forwarded-for": ""}, "203.0.113.9"),
])
def test_a_visitors_address_is_the_one_the_nearest_proxy_saw(headers, address):
    visitor = gr.Request(headers=headers, client={"host": "203.0.113.9", "port": 4321}, session_hash="page")
    assert endpoints.address(visitor) == address


def test_closing_the_compare_handler_early_frees_the_visitors_share_at_once(quick_weights, service):
    demo = app.build_app(quick_weights, service)
    write = next(fn.fn for fn in demo.fns.values() if getattr(fn.fn, "__name__", "") == "write")
    visitor = gr.Request(headers={}, client={"host": "203.0.113.9", "port": 4321}, session_hash="page")

    async def first_update_then_close():
        updates = write([2, 5, 8], "WOODY:", 300, 0.8, 0, 3, api.FINAL, None, visitor)
        await anext(updates)
        assert len(service._visits) == 1 and service.streaming == 1
        await updates.aclose()  # what Gradio does when the tab closes
        return len(service._visits), service.streaming

    assert asyncio.run(first_update_then_close()) == (0, 0)


def test_the_app_shares_by_the_address_its_proxy_forwards(app_url, monkeypatch):
    # Through the app's queue, as a Space's proxy sends it: the handler sees the request's headers.
    addresses, real_visit = [], api.Service.visit

    def visit(service, owner=None, address=None):
        addresses.append(address)
        return real_visit(service, owner, address)

    monkeypatch.setattr(api.Service, "visit", visit)
    proxied = Client(app_url, verbose=False, headers={"X-Forwarded-For": "10.9.9.9, 198.51.100.4"})
    try:
        generate(proxied, length=5)
    finally:
        proxied.close()
    assert addresses == ["198.51.100.4"]


def test_gradio_looks_for_an_absent_matplotlib_once_not_at_every_event(monkeypatch):
    """Gradio imports matplotlib around every event it runs; the app records an absent one as absent, so that a
    streamed update does not search every folder on sys.path for it again."""
    if importlib.util.find_spec("matplotlib") is not None:
        pytest.skip("matplotlib is installed here: nothing to skip")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # recorded, so that the test leaves sys.modules as it was
    monkeypatch.delitem(sys.modules, "matplotlib")
    searched = []
    real = importlib.machinery.PathFinder.find_spec

    def counting(cls, name, *args, **kwargs):
        searched.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.machinery.PathFinder, "find_spec", classmethod(counting))
    with gr.utils.MatplotlibBackendMananger():
        pass
    assert "matplotlib" in searched  # without it: a search at each event's start and end
    page.skip_absent_matplotlib()
    searched.clear()
    for _ in range(3):
        with gr.utils.MatplotlibBackendMananger():
            pass
    assert "matplotlib" not in searched


def test_gradios_queue_looks_for_work_every_10_ms_not_every_millisecond(quick_weights, monkeypatch):
    monkeypatch.setattr(page, "TABS", (page.about,))
    queue = app.build_app(quick_weights)._queue
    assert queue.sleep_when_free == page.QUEUE_POLL_SECONDS == 0.01
    assert queue.progress_update_sleep_when_free == page.PROGRESS_POLL_SECONDS
    # Where Gradio waits, it still reads them: a renamed attribute would be set here and never read.
    source = inspect.getsource(gr.queueing.Queue)
    for name in ("sleep_when_free", "progress_update_sleep_when_free"):
        assert f"await asyncio.sleep(self.{name})" in source
