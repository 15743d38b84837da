"""Load: concurrent gradio_client users against the app on 127.0.0.1, and what a full queue tells them.

No timing assertions (``benchmarks/app.py`` measures latency): only that every request gets its texts or
the clear "queue is full" message, that concurrent users get exactly their own texts, and that the server's
memory stays within RSS_GROWTH_BOUND. The server runs in this process (``app_url``), so its RSS is ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest
from gradio_client import Client
from gradio_client.utils import QueueError, Status

import app
from toystory_gpt import api, serving
from toystory_gpt.milestones import LADDER
from toystory_gpt.ui import page
from toystory_gpt.ui.page import free_port

pytestmark = pytest.mark.slow

USERS = 8
REQUESTS = 2                 # per user
LENGTH = 40                  # characters per milestone: short, as this runs in every CI run
RSS_GROWTH_BOUND = 200 * 2**20
REQUEST_TIMEOUT = 300        # seconds; bounds a hang, measures nothing
HTTP_TIMEOUT = 120           # seconds for any one HTTP read (the event stream gets a heartbeat every 15 s)
BUSY = "Queue is full! Please try again."   # gradio_client's own words when the server answers 503 queue_full
SLOTS = 2                    # generations served at once by the tiny queue's app (its engine's capacity)

ALL = [m.number for m in LADDER.milestones]


def inputs(user: int, i: int, length: int = LENGTH) -> dict:
    return dict(milestones=ALL, prompt="WOODY:", length=length, temperature=0.8, top_k=0, seed=1000 * user + i)


def user_session(url: str, user: int, requests: int) -> list[tuple[str, dict, object]]:
    """One visitor: its own client, ``requests`` generations in a row; each outcome is ok, busy or error."""
    # not httpx's 5 s: CI may be busy
    client = Client(url, verbose=False, httpx_kwargs={"timeout": httpx.Timeout(HTTP_TIMEOUT)})
    outcomes = []
    try:
        for i in range(requests):
            sent = inputs(user, i)
            try:
                outcomes.append(("ok", sent,
                                 client.submit(**sent, api_name="/generate").result(timeout=REQUEST_TIMEOUT)))
            except QueueError as exc:
                outcomes.append(("busy", sent, str(exc)))
            except Exception as exc:  # noqa: BLE001 - any other failure is what this test looks for
                outcomes.append(("error", sent, repr(exc)))
    finally:
        client.close()
    return outcomes


def run_users(url: str, users: int, requests: int) -> list[tuple[str, dict, object]]:
    with ThreadPoolExecutor(max_workers=users) as pool:
        sessions = list(pool.map(lambda user: user_session(url, user, requests), range(users)))
    return [outcome for session in sessions for outcome in session]


def test_concurrent_users_get_their_own_texts_and_memory_stays_bounded(app_url, served):
    server = psutil.Process()
    run_users(app_url, USERS, 1)  # warm-up: first-use allocations (thread pools, caches) are not growth
    gc.collect()
    before = server.memory_info().rss
    outcomes = run_users(app_url, USERS, REQUESTS)
    gc.collect()
    after = server.memory_info().rss
    print(f"\n{USERS} users x {REQUESTS} requests: {sum(o[0] == 'ok' for o in outcomes)} ok, "
          f"{sum(o[0] == 'busy' for o in outcomes)} busy; RSS {before / 2**20:.0f} -> {after / 2**20:.0f} MB")
    assert len(outcomes) == USERS * REQUESTS
    assert [o for o in outcomes if o[0] == "error"] == []
    assert all(result == BUSY for kind, _, result in outcomes if kind == "busy")
    for kind, sent, texts in outcomes:
        if kind == "ok":  # each user gets exactly the texts of its own seed, however the requests interleaved
            assert texts == served.run(served.generate_request(**sent)).model_dump()
    assert after - before < RSS_GROWTH_BOUND, f"RSS grew by {(after - before) / 2**20:.0f} MB"


def test_the_server_keeps_the_state_of_a_bounded_number_of_sessions(served_weights, monkeypatch):
    # Gradio keeps each session's component state (~0.1 MB here) until SESSIONS_KEPT newer ones push it out.
    monkeypatch.setattr(page, "SESSIONS_KEPT", 3)
    demo = app.build_app(served_weights)
    _, url, _ = app.launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        outcomes = [o for user in range(6) for o in user_session(url.rstrip("/"), user, 1)]
        assert [kind for kind, _, _ in outcomes] == ["ok"] * 6
        assert demo.state_session_capacity == 3 and len(demo.state_holder.session_data) <= 3
    finally:
        demo.close()


@contextlib.contextmanager
def gated_app(served_weights, monkeypatch, slots: int, queue_size: int):
    """The app with an engine of ``slots`` rows per model and a queue of ``queue_size``, whose generations wait at
    a gate once started: which requests run and which wait is then certain, not timed."""
    gate, started = threading.Event(), threading.Semaphore(0)
    real_stream = api.Service.stream

    async def gated_stream(self, request, interval, visit=None):
        started.release()
        deadline = time.monotonic() + REQUEST_TIMEOUT
        while not gate.is_set() and time.monotonic() < deadline:  # holding no thread, the event loop free
            await asyncio.sleep(0.01)
        async for texts in real_stream(self, request, interval, visit):
            yield texts

    monkeypatch.setattr(page, "QUEUE_SIZE", queue_size)
    monkeypatch.setattr(api.Service, "stream", gated_stream)
    models = serving.Models.from_folder(served_weights)
    service = api.Service(models, serving.Engine(models, capacity=slots))
    demo = app.build_app(served_weights, service)
    _, url, _ = app.launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield url.rstrip("/"), gate, started
    finally:
        gate.set()
        demo.close()
        service.close()


@pytest.fixture
def tiny_queue_app(served_weights, monkeypatch):
    """The app with a queue of one and SLOTS generations at once."""
    with gated_app(served_weights, monkeypatch, SLOTS, 1) as gated:
        yield gated


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + REQUEST_TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting until {what}"
        time.sleep(0.05)


def test_past_the_queue_size_callers_are_told_the_app_is_busy(tiny_queue_app, served):
    url, gate, started = tiny_queue_app
    clients = [Client(url, verbose=False) for _ in range(SLOTS + 2)]
    try:
        running = []
        # Both generation slots taken, one request at a time: the queue holds one, so two sent together could
        # find it full while the first still waits there to be picked up.
        for i, client in enumerate(clients[:SLOTS]):
            running.append(client.submit(**inputs(i, 0), api_name="/generate"))
            assert started.acquire(timeout=REQUEST_TIMEOUT), f"generation {i + 1} never started"
        waiting = clients[SLOTS].submit(**inputs(98, 0), api_name="/generate")
        wait_until(lambda: waiting.status().code == Status.IN_QUEUE,
                   "the third request is queued")  # ...and the queue full
        refused = clients[SLOTS + 1].submit(**inputs(99, 0), api_name="/generate")
        with pytest.raises(QueueError, match="^Queue is full! Please try again.$"):
            refused.result(timeout=REQUEST_TIMEOUT)
        # What a hand-written HTTP client sees: 503 and Gradio's detail.
        raw = httpx.post(f"{url}/gradio_api/call/generate", json={"data": list(inputs(97, 0).values())},
                         timeout=REQUEST_TIMEOUT)
        assert raw.status_code == 503 and raw.json()["detail"].startswith("Queue is full. Max size is 1")
        gate.set()
        for job, user in [*zip(running, range(SLOTS)), (waiting, 98)]:  # the accepted ones all finish
            want = served.run(served.generate_request(**inputs(user, 0))).model_dump()
            assert job.result(timeout=REQUEST_TIMEOUT) == want
        # Once there is room again, the refused caller is served.
        answer = clients[-1].predict(**inputs(99, 0), api_name="/generate")
        assert [w["milestone"] for w in answer["texts"]] == inputs(99, 0)["milestones"]
    finally:
        for client in clients:
            client.close()


def test_the_app_runs_as_many_generations_at_once_as_its_engine_has_rows(served_weights, monkeypatch):
    # Gradio runs at most `max_threads` events at once, whatever an event's own concurrency limit: a class
    # larger than that would wait in Gradio's queue, one small batch after another, instead of sharing the
    # engine's batched steps.
    rows = 12
    with gated_app(served_weights, monkeypatch, rows, rows) as (url, gate, started):
        clients = [Client(url, verbose=False) for _ in range(rows)]
        try:
            jobs = [client.submit(**inputs(i, 0), api_name="/generate") for i, client in enumerate(clients)]
            for i in range(rows):  # the gate holds the started ones far longer than this waits
                assert started.acquire(timeout=REQUEST_TIMEOUT / 5), f"only {i} of {rows} generations started at once"
            gate.set()
            assert all(len(job.result(timeout=REQUEST_TIMEOUT)["texts"]) == len(inputs(0, 0)["milestones"])
                       for job in jobs)
        finally:
            for client in clients:
                client.close()
