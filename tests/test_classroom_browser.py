"""Two visitors at once in a real browser: each sees its own eight texts stream, and Stop on one leaves the other be."""

from __future__ import annotations

import time

import pytest

from tests.conftest import TIMEOUT_MS
from toystory_gpt.api import MAX_LENGTH
from toystory_gpt.milestones import LADDER
from toystory_gpt.pool import Pool

pytestmark = pytest.mark.browser  # the `browser` fixture (conftest) skips where Chromium is missing

ALL = [m.number for m in LADDER.milestones]


def visitor(browser, url: str, prompt: str, length: int):
    """A page of its own (its own browser context: another visitor, not another tab), prompt and length set."""
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector("#generate")
    page.locator("#prompt textarea").fill(prompt)
    page.locator("#length input[type=number]").fill(str(length))
    page.locator("#length input[type=number]").press("Tab")
    return page


def texts(page) -> list[str]:
    return [page.locator(f"#text-{n} textarea").input_value() for n in ALL]


def test_two_visitors_stream_their_own_texts_and_stop_only_their_own(browser, app_url, served, monkeypatch):
    # The app runs in this process: slow every tick a little, so that Stop surely lands mid-generation however
    # fast the tiny test models are and however slowly a busy machine's browser clicks (the texts stay the same:
    # the engine's ticks only take longer). The long visitor asks for the most there is: tens of seconds.
    real_tick = Pool.tick

    def tick(pool):
        time.sleep(0.004)
        return real_tick(pool)

    monkeypatch.setattr(Pool, "tick", tick)
    long, short = visitor(browser, app_url, "WOODY:", MAX_LENGTH), visitor(browser, app_url, "BUZZ: ", 300)
    long.click("#generate")
    short.click("#generate")
    growing = "() => [...document.querySelectorAll('#cards textarea')].every(t => t.value.length > 10)"
    long.wait_for_function(growing)
    short.wait_for_function(growing)
    # Dispatched, not clicked: a busy machine's browser, repainting 16 growing texts, may take longer than the
    # timeout to show the two still frames in a row that Playwright waits for before a click.
    long.locator("#stop").dispatch_event("click")
    short.wait_for_function("() => [...document.querySelectorAll('#cards textarea')]"
                            ".every(t => t.value.length === 300)")
    monkeypatch.undo()
    want = [w.text for w in served.run(served.generate_request(milestones=ALL, prompt="BUZZ: ", length=300,
                                                               temperature=0.8, top_k=0, seed=0)).texts]
    assert texts(short) == want  # its own texts, exactly, whatever ran beside them
    # The stopped page keeps what it had, a beginning of its own texts, and gets nothing more.
    stopped = texts(long)
    long.wait_for_timeout(500)
    assert texts(long) == stopped and all(len(t) < MAX_LENGTH for t in stopped)
    full = [w.text for w in served.run(served.generate_request(milestones=ALL, prompt="WOODY:",
                                                               length=max(map(len, stopped)), temperature=0.8,
                                                               top_k=0, seed=0)).texts]
    assert all(f.startswith(s) for f, s in zip(full, stopped))
    for page in (long, short):
        page.context.close()
