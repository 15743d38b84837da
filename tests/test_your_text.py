"""A visitor's own ladder: the plan and how its budget is shared out; ZeroGPU's call model rehearsed (the training in a
forked worker while the engine's threads serve, the parent loading what it wrote); Stop; one training at a time; the
store's names, time limit and cap; the zip round trip; and through gradio_client, /train, ``ladder`` on /generate,
/surprise and /logit_lens, the unknown-ladder message and every refused input."""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import threading
import zipfile
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import httpx
import pytest
from gradio_client.exceptions import AppError

import app
from tests.conftest import LADDER_TEXT
from toystory_gpt import __main__ as cli
from toystory_gpt import api, hub, trainer, training_job
from toystory_gpt.record import ResultRow
from toystory_gpt.serving.visitor_ladders import Full, Unknown, VisitorLadders
from toystory_gpt.tokenizer import CharTokenizer
from toystory_gpt.ui import your_text
from toystory_gpt.ui.page import free_port

NUMBERS = [1, 2, 3, 8]
TEXT = LADDER_TEXT.read_text(encoding="utf-8")
GENERATE = dict(prompt="ROMEO:", length=40, temperature=0.8, top_k=0, seed=3)


@pytest.fixture(scope="module")
def tiny(quick_weights):
    """The app's service, training visitors' ladders on the CPU with the tiny recipe."""
    service = api.Service.from_folder(quick_weights, trainings=training_job.Trainings(training_job.TINY_RECIPE,
                                                                                      device="cpu"))
    yield service
    service.close()


def read_all(stream) -> list:
    async def read():
        return [update async for update in stream]
    return asyncio.run(read())


def text_of(service, text=TEXT):
    return service.text_of(api.TrainRequest.parse(text=text, milestones=NUMBERS))


@pytest.fixture(scope="module")
def trained(tiny):
    """A ladder trained on the CPU in a forked worker while the engine writes a long text for someone else; its
    updates, the name it is kept under, and that other visitor's text (and what it is when written alone)."""
    other = tiny.generate_request(milestones=list(range(1, 9)), **{**GENERATE, "length": api.MAX_LENGTH})
    busy = tiny.submit(other)  # the engine's threads are writing while the worker forks
    running = tiny.start_training(text_of(tiny), NUMBERS, owner="page-1")
    assert running._process.pid and running._process.is_alive()
    updates = read_all(tiny.train(running, "page-1"))
    served = api.GenerateAnswer.of(busy.result(timeout=120))
    return updates, updates[-1].ladder, served, tiny.run(other)


def test_the_cpu_recipe_shares_its_budget_out_by_each_models_cost():
    text = training_job.read_text(LADDER_TEXT, "excerpt")
    recipe, most = training_job.CPU_RECIPE, training_job.TrainConfig.max_steps
    full = training_job.plan(text, range(1, 9), recipe, "cpu")
    steps = {m.milestone: m.steps for m in full.models}
    cost = {m.milestone: m.step_flops for m in full.models}
    assert steps[1] == steps[2] == most  # the tables, nearly free: their standard steps
    assert cost[1] < cost[3] < cost[5] < cost[6]  # the deep models dearest
    attention = range(3, 9)
    assert {steps[n] for n in attention} == {recipe.attention_steps}  # the same steps each: the deep ones cost most
    spent = {n: steps[n] * cost[n] for n in attention}
    assert sum(spent.values()) == pytest.approx(recipe.attention_steps * sum(cost[n] for n in attention))
    assert spent[3] < spent[5] < spent[6]
    fewer = {m.milestone: m.steps for m in training_job.plan(text, NUMBERS, recipe, "cpu").models}
    assert fewer[3] == fewer[8] > steps[8]  # the budget shared by fewer models: more steps each
    assert "still improving" in full.describe() and f"{recipe.attention_steps} steps" in full.describe()
    gpu = training_job.plan(text, range(1, 9), training_job.STANDARD, "zerogpu")
    assert [m.steps for m in gpu.models] == [most] * 8
    assert gpu.gpu_duration == math.ceil(gpu.seconds * training_job.GPU_MARGIN + training_job.GPU_START)
    assert f"asks ZeroGPU for {gpu.gpu_duration} s of your daily GPU quota" in gpu.describe()


def test_the_worker_trains_while_the_engine_serves_and_the_parent_loads_what_it_wrote(tiny, trained):
    updates, name, served, alone = trained
    assert served == alone  # the engine kept serving, unchanged, while the worker was forked and trained
    assert [u.milestone for u in updates if u.saved] == NUMBERS
    done = [u.done for u in updates if u.milestone]
    assert done == sorted(done) and done[0] < 0.1 and done[-1] == pytest.approx(1.0)
    evaluations = [u for u in updates if u.evaluation]
    assert {u.milestone for u in evaluations} == set(NUMBERS)
    assert all(u.evaluation.sample is not None for u in evaluations)
    assert updates[0].plan.startswith("**4 models, the tiny test recipe, on this server's CPU")
    assert name and len(name) >= 22 and all(u.ladder is None for u in updates[:-1])
    ladder = tiny.on(name)
    assert sorted(ladder.models.saved) == NUMBERS and ladder is not tiny
    assert ladder.models.saved[8].record.corpus.file == "your-text.txt"
    answer = tiny.run(tiny.generate_request(milestones=NUMBERS, ladder=name, **GENERATE))
    assert [w.milestone for w in answer.texts if w.text] == NUMBERS
    assert answer != tiny.run(tiny.generate_request(milestones=NUMBERS, **GENERATE))  # another ladder's texts
    assert tiny.trainings.running is None


def test_a_job_is_plain_data_that_pickles_for_a_spawned_worker_or_zerogpu():
    text = training_job.read_text(LADDER_TEXT, "excerpt")
    job = training_job.Job(text, training_job.plan(text, NUMBERS, training_job.CPU_RECIPE, "cuda"), Path("/tmp/x"))
    # What a spawned worker receives: the job through multiprocessing's own pickler (ZeroGPU pickles it alike).
    assert ForkingPickler.loads(ForkingPickler.dumps(job)) == job
    assert training_job.start_method("cuda").get_start_method() == "spawn"
    assert training_job.start_method("mps").get_start_method() == "spawn"
    assert training_job.start_method("cpu").get_start_method() == "fork"


def test_stop_kills_the_worker_and_frees_everything(tiny, trained):
    running = tiny.start_training(text_of(tiny), NUMBERS, owner="page-2")
    updates = running.updates()
    assert next(updates).milestone == 1
    process, folder = running._process, running.job.out
    running.stop()
    assert not process.is_alive() and not folder.exists()
    assert list(updates) == [] and tiny.trainings.running is None
    again = tiny.start_training(text_of(tiny), [1], owner="page-2")  # the machine is free for the next one
    again.stop()


def test_a_worker_forked_while_another_thread_holds_the_progress_bars_lock_still_trains(tiny, trained):
    """A forked worker has only the thread that forked: a lock another thread held at the fork stays held there, and
    the trainer's progress bar would wait for tqdm's forever."""
    held, release = threading.Event(), threading.Event()

    def hold():
        with trainer.tqdm.get_lock():
            held.set()
            release.wait(120)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    try:
        running = tiny.start_training(text_of(tiny), [1], owner="page-6")
        reader = concurrent.futures.ThreadPoolExecutor(1).submit(lambda: list(running.updates()))
        try:
            assert reader.result(timeout=60) and running.finished
        finally:
            running.stop()
    finally:
        release.set()
        holder.join()


def test_one_training_at_a_time(tiny, trained):
    running = tiny.start_training(text_of(tiny), NUMBERS, owner="page-3")
    try:
        with pytest.raises(api.InvalidRequest, match="Your ladder is already training: wait for it to finish, or"):
            tiny.start_training(text_of(tiny), NUMBERS, owner="page-3")
        with pytest.raises(api.InvalidRequest, match="Another visitor's ladder is training on this machine"):
            tiny.start_training(text_of(tiny), NUMBERS, owner="page-4")
    finally:
        running.stop()


def test_the_store_names_expires_caps_and_drops_with_the_page(tmp_path):
    now = [0.0]
    closed = []
    store = VisitorLadders(lambda folder: folder.name, closed.append, capacity=2, ttl=600, clock=lambda: now[0])
    folders = [tmp_path / f"l{i}" for i in range(3)]
    for folder in folders:
        folder.mkdir()
    first, second = store.add(folders[0], "page-a"), store.add(folders[1], "page-b")
    assert first.name != second.name and len(first.name) == 22  # secrets.token_urlsafe(16)
    with pytest.raises(Full, match="already keeps 2 visitors' ladders, its most; .* within 10 min"):
        store.add(folders[2], "page-c")
    now[0] = 500
    assert store.get(first.name).served == "l0"  # used: its hour starts again
    now[0] = 700
    with pytest.raises(Unknown):
        store.get(second.name)  # unused for longer than the time limit: dropped, its folder deleted
    assert closed == ["l1"] and not folders[1].exists()
    store.drop_owner("page-a")
    assert len(store) == 0 and not folders[0].exists()
    again = [tmp_path / f"m{i}" for i in range(3)]
    for folder in again:
        folder.mkdir()
    earlier = store.add(again[0], "page-d")
    latest = store.add(again[1], "page-d")  # retrained: the page's earlier ladder is dropped
    assert [kept.name for kept in store.all()] == [latest.name] and not again[0].exists()
    with pytest.raises(Unknown):
        store.get(earlier.name)
    with pytest.raises(Unknown):
        store.add(again[2], "page-a")  # finished loading after its page closed: dropped at once
    assert [kept.name for kept in store.all()] == [latest.name] and not again[2].exists()


def test_the_zip_is_a_weights_folder_that_serves_and_publishes(tiny, trained, tmp_path, monkeypatch, capsys):
    name = trained[1]
    kept = tiny.ladders.get(name)
    zipped = your_text.archive(kept.folder)
    assert zipped.parent == kept.folder  # dropping the ladder deletes it too
    with zipfile.ZipFile(zipped) as archive:
        assert your_text.ZIP not in archive.namelist()
        archive.extractall(tmp_path / "mine")
    monkeypatch.setenv(hub.WEIGHTS_ENV, str(tmp_path / "mine"))
    served = api.Service.from_folder(hub.resolve())
    try:
        request = dict(milestones=NUMBERS, **GENERATE)
        assert served.run(served.generate_request(**request)) == \
            tiny.run(tiny.generate_request(**request, ladder=name))
        assert sorted(served.models.saved) == NUMBERS
    finally:
        served.close()
    assert cli.main(["publish", "model", "you/my-ladder", "--weights", str(tmp_path / "mine"), "--dry-run"]) == 0
    assert "dry run: nothing was sent" in capsys.readouterr().out


def result_row(milestone: int, val_loss: float, still_improving: bool) -> ResultRow:
    return ResultRow(milestone, f"m{milestone}", f"rung {milestone}", 1000, val_loss, val_loss / math.log(2), 10,
                     20, 1.0, 1337, True, still_improving, val_loss)


def test_a_rung_worse_than_the_one_below_is_noted_whatever_the_rows_order():
    text = training_job.read_text(LADDER_TEXT, "excerpt")
    budgeted = training_job.plan(text, NUMBERS, training_job.CPU_RECIPE, "cpu")
    standard = training_job.plan(text, NUMBERS, training_job.STANDARD, "cpu")
    rows = [result_row(8, 2.0, True), result_row(3, 2.5, False), result_row(1, 3.0, False), result_row(2, 2.4, False)]
    notes = your_text.budget_notes(rows, budgeted).splitlines()
    assert notes == ["- **rung 3** scored 2.500, worse than rung 2's 2.400."]
    rows[1] = result_row(3, 2.5, True)
    assert "when its 20 steps of the short CPU recipe ran out" in your_text.budget_notes(rows, budgeted)
    assert "still improving (" in your_text.budget_notes(rows, standard)
    assert "at its last step" in your_text.budget_notes(rows, standard)
    assert your_text.budget_notes(sorted(rows, key=lambda r: r.milestone)[:2], budgeted) == ""


# ------------------------------------------------------------------------------------------------ through the API

@pytest.fixture(scope="module")
def app_url(tiny, quick_weights):
    """The app over ``tiny`` (conftest's ``client`` connects to it here)."""
    demo = app.build_app(quick_weights, service=tiny)
    _, url, _ = app.launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                           quiet=True)
    yield url.rstrip("/")
    demo.close()


def test_train_streams_progress_and_names_the_ladder_the_other_endpoints_take(client, app_url):
    job = client.submit(text=TEXT, milestones=NUMBERS, api_name="/train")
    updates = list(job)
    assert job.status().success
    last = updates[-1]
    name = last["ladder"]
    assert name and all(update["ladder"] is None for update in updates[:-1])
    assert any(update["evaluation"] and update["milestone"] == 8 for update in updates)
    done = [update["done"] for update in updates]
    assert done == sorted(done) and done[-1] == 1.0
    answer = client.predict(milestones=NUMBERS, **GENERATE, step="final", ladder=name, api_name="/generate")
    assert [written["milestone"] for written in answer["texts"] if written["text"]] == NUMBERS
    surprise = client.predict(text="ROMEO: what", milestones=NUMBERS, ladder=name, api_name="/surprise")
    lens = client.predict(text="ROMEO: what", milestone=8, ladder=name, api_name="/logit_lens")
    assert surprise != client.predict(text="ROMEO: what", milestones=NUMBERS, api_name="/surprise")
    assert lens and lens != client.predict(text="ROMEO: what", milestone=8, api_name="/logit_lens")
    assert name not in httpx.get(f"{app_url}/config").text  # never listed


@pytest.mark.parametrize("endpoint, inputs", [
    ("/generate", dict(milestones=NUMBERS, **GENERATE, step="final")),
    ("/surprise", dict(text="ROMEO:", milestones=NUMBERS)),
    ("/logit_lens", dict(text="ROMEO:", milestone=8)),
])
def test_an_unknown_ladder_is_a_clear_message(client, endpoint, inputs):
    with pytest.raises(AppError, match="No ladder named 'nope' here: a visitor's ladder is kept while its page is "
                                       "open and at most 60 min after its last use"):
        client.predict(**inputs, ladder="nope", api_name=endpoint)


@pytest.mark.parametrize("text, milestones, message", [
    ("", NUMBERS, "your text is empty: there is nothing to train on"),
    ("ROMEO:\x00\x01\x02 binary" * 40, NUMBERS, "your text holds NUL bytes (the first at byte 6): it is a binary file"),
    ("".join(f"{c}\x00" for c in TEXT[:2000]), NUMBERS, "your text is UTF-16 text, not UTF-8"),
    (TEXT[:300], NUMBERS, "has 300 characters; training needs at least 321"),
    ("".join(map(chr, range(0x4E00, 0x4E00 + 1100))), NUMBERS, "has 1,100 distinct characters; a character-level "
                                                               "model here takes at most 1,024"),
    ("x" * 2_000_001, NUMBERS, "text is 2,000,001 characters long; the limit is 2,000,000"),
    (TEXT, [], "Choose at least one milestone"),
    (TEXT, [9], "each milestone must be from 1 to 8, got 9"),
], ids=["empty", "binary", "utf-16", "too-short", "too-many-characters",
        "too-long", "no-milestone", "no-such-milestone"])
def test_every_refused_text_is_refused_before_training_with_its_message(client, tiny, text, milestones,
                                                                        message):
    with pytest.raises(AppError) as error:
        client.predict(text=text, milestones=milestones, api_name="/train")
    assert message in str(error.value)
    assert tiny.trainings.running is None  # nothing started


def test_a_second_training_is_refused_while_one_runs(client, tiny):
    first = client.submit(text=TEXT, milestones=NUMBERS, api_name="/train")
    next(iter(first))  # running
    with pytest.raises(AppError, match="Your ladder is already training"):  # the same client: the same session
        client.predict(text=TEXT, milestones=NUMBERS, api_name="/train")
    first.cancel()


def test_text_that_is_not_utf8_is_refused_pasted_or_uploaded(tiny, tmp_path):
    # A lone surrogate (JSON can carry one; gradio_client cannot send it) is not text; a Latin-1 file is not UTF-8.
    with pytest.raises(api.InvalidRequest, match="unable to parse raw data as a unicode string"):
        your_text.text_from(tiny, TEXT[:500] + "\ud800" + TEXT[500:1000], None)
    upload = tmp_path / "mine.txt"
    upload.write_bytes(TEXT[:2000].replace("the", "thé").encode("latin-1"))
    with pytest.raises(api.InvalidRequest, match=r"mine\.txt is not UTF-8 text: byte 0xe9 at offset \d+ .*iconv"):
        your_text.text_from(tiny, "ignored when a file is uploaded", str(upload))
    assert your_text.text_from(tiny, TEXT, None).record.characters == len(TEXT)
    upload.write_text("é" * 2_000_001, encoding="utf-8")  # the same limit, in characters, as a pasted text's
    with pytest.raises(api.InvalidRequest, match="text is 2,000,001 characters long; the limit is 2,000,000"):
        your_text.text_from(tiny, None, str(upload))
    assert your_text.UPLOAD_BYTES >= 4 * 2_000_000  # no text within the limit is refused at the upload
    assert tiny.trainings.running is None


def test_a_prompt_a_ladder_cannot_start_from_is_refused_before_it_generates(tiny, monkeypatch):
    # a visitor's text without a newline makes such a vocabulary; the app's models' here, swapped for one
    monkeypatch.setattr(tiny.models.saved[1], "tokenizer", CharTokenizer.from_text("abc"))
    with pytest.raises(api.InvalidRequest, match="1 · .* cannot start: the prompt has none of its characters, and it "
                                                 "has no newline to start from"):
        tiny.generate_request(milestones=[1, 2], **{**GENERATE, "prompt": "xyz"})
    assert tiny.generate_request(milestones=[1, 2], **{**GENERATE, "prompt": "a"}).prompt == "a"


def test_the_tab_says_why_a_training_failed(tiny, quick_weights, monkeypatch):
    """A training that fails after it started reaches the page as its message, not as Gradio's bare "Error"."""
    demo = app.build_app(quick_weights, tiny)
    train_here = next(fn.fn for fn in demo.fns.values() if getattr(fn.fn, "__name__", "") == "train_here")
    monkeypatch.setattr(tiny, "start_training", lambda *args: None)

    async def failing(training, owner):
        raise api.InvalidRequest("The training failed (RuntimeError: out of memory).")
        yield

    monkeypatch.setattr(tiny, "train", failing)

    async def run():
        return [update async for update in train_here(TEXT, None, NUMBERS, SimpleNamespace(session_hash="page-9"))]

    with pytest.raises(gr.Error, match="out of memory"):
        asyncio.run(run())
