"""End to end in a real browser: Debian's Chromium, driven by Playwright, against the app on 127.0.0.1.

Set ``TOYSTORY_SCREENSHOT=docs/screenshot.png`` to save the page once all eight cards have filled; that is
how the README's screenshot is made, on the real weights with ``TOYSTORY_TEST_WEIGHTS=weights``::

    TOYSTORY_TEST_WEIGHTS=weights TOYSTORY_SCREENSHOT=docs/screenshot.png \
        python -m pytest tests/test_browser.py -k all_eight
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from tests.conftest import TIMEOUT_MS
from toystory_gpt import api
from toystory_gpt.milestones import LADDER
from toystory_gpt.pool import Pool
from toystory_gpt.serving import Engine

pytestmark = pytest.mark.browser  # the `browser` fixture (conftest) skips where Chromium is missing

# Resolves once every listed card holds `length` characters, with snapshots of the lengths taken every frame.
WATCH_CARDS = """async ([numbers, length]) => {
  const lengths = () => numbers.map(n => document.querySelector(`#text-${n} textarea`).value.length);
  const start = performance.now();
  document.querySelector('#generate').click();
  const snapshots = [];
  while (performance.now() - start < 60000) {
    await new Promise(requestAnimationFrame);
    const now = lengths();
    snapshots.push(now);
    if (now.every(l => l === length)) return {seconds: (performance.now() - start) / 1000, snapshots};
  }
  return {seconds: null, snapshots};
}"""


# A connection whose event stream lags behind the page's other requests by ``window.streamLag`` ms (0 until
# set), as through a buffering proxy: every chunk of /queue/data reaches the page that much later, in order.
LAGGING_STREAM = """(() => {
  const realFetch = window.fetch;
  window.fetch = async (...args) => {
    const response = await realFetch(...args);
    if (!String(args[0]?.url ?? args[0]).includes('/queue/data') || !response.body) return response;
    const reader = response.body.getReader();
    const body = new ReadableStream({start(controller) {
      (async () => {
        for (;;) {
          const {value, done} = await reader.read();
          setTimeout(() => done ? controller.close() : controller.enqueue(value), window.streamLag || 0);
          if (done) return;
        }
      })();
    }});
    return new Response(body, {status: response.status, statusText: response.statusText, headers: response.headers});
  };
})();"""


def open_app(browser, url: str, width: int = 1400, init_script: str | None = None):
    page = browser.new_page(viewport={"width": width, "height": 900})
    if init_script:
        page.add_init_script(init_script)
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector("#generate")
    return page


def card_text(page, number: int) -> str:
    return page.locator(f"#text-{number} textarea").input_value()


def test_chosen_milestones_fill_their_cards(browser, app_url):
    page = open_app(browser, app_url)
    chosen = {2, 5, 8}
    for m in LADDER.milestones:
        if m.number not in chosen:
            page.locator("#milestones").get_by_label(m.label, exact=True).uncheck()
    page.locator("#prompt textarea").fill("BUZZ: To infinity")
    result = page.evaluate(WATCH_CARDS, [sorted(chosen), 300])
    assert result["seconds"] is not None, f"cards did not fill: last lengths {result['snapshots'][-1:]}"
    for m in LADDER.milestones:
        card = page.locator(f"#card-{m.number}")
        assert card.is_visible() == (m.number in chosen)
    page.close()


def test_all_eight_stream_together_then_training_tab_plots(browser, app_url, record_property):
    page = open_app(browser, app_url)
    result = page.evaluate(WATCH_CARDS, [[m.number for m in LADDER.milestones], 300])
    assert result["seconds"] is not None, f"cards did not fill: last lengths {result['snapshots'][-1:]}"
    record_property("click_to_last_character_seconds", result["seconds"])
    print(f"\nclick to last character, eight milestones x 300: {result['seconds']:.2f} s")
    # Live and side by side: at some moment every card had some text and none had all of it.
    assert any(all(0 < n < 300 for n in lengths) for lengths in result["snapshots"])
    if path := os.environ.get("TOYSTORY_SCREENSHOT"):
        page.wait_for_timeout(300)  # let the last update paint
        page.screenshot(path=path, full_page=True)
    page.get_by_role("tab", name="Training").click()
    plot = page.locator("#val-plot").locator("canvas, svg").first
    plot.wait_for(state="visible")
    assert plot.bounding_box()["width"] > 200
    assert page.locator("#results table tr").count() == 1 + 9  # header, eight milestones, the ablation
    page.close()


@pytest.mark.parametrize("stream_lag_ms", [0, 400])
def test_stop_cancels_a_long_generation(browser, app_url, monkeypatch, stream_lag_ms):
    # The app runs in this process: slow its engine down so that Stop surely lands mid-generation, however fast
    # the tiny test models are, and note every pool that ticks and every sequence it writes.
    real_tick = Pool.tick
    pools, sequences, lock = set(), set(), threading.Lock()

    def slow_tick(pool):
        time.sleep(0.005)
        with lock:
            pools.add(pool)
            sequences.update(pool.joining, pool.live)
        return real_tick(pool)

    def idle() -> bool:  # the engine's active count is 0: no pool that ticked holds a sequence, live or waiting
        with lock:
            return not any(pool.busy for pool in pools)

    monkeypatch.setattr(Pool, "tick", slow_tick)
    page = open_app(browser, app_url, init_script=LAGGING_STREAM)
    # 1-7 left, so milestone 1's card shows progress
    page.locator("#milestones").get_by_label(LADDER.milestones[-1].label, exact=True).uncheck()
    page.locator("#length input[type=number]").fill("2000")
    page.locator("#length input[type=number]").press("Enter")
    page.click("#generate")
    page.wait_for_function("() => document.querySelector('#text-1 textarea').value.length > 20")
    page.evaluate(f"() => {{ window.streamLag = {stream_lag_ms}; }}")  # only now: it would delay the page's start
    page.click("#stop")
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while not idle():
        assert time.monotonic() < deadline, "the server kept generating after Stop"
        time.sleep(0.01)
    # It stopped mid-way: every text was cancelled short and has left its pool, so no character more is written.
    with lock:
        assert len(sequences) == 7 and all(s.cancelled and len(s.text) < 2000 for s in sequences)
        written = {id(s): len(s.text) for s in sequences}
    # ...and the page knows it: the text's progress tracker is hidden again, and stays so once the lagging
    # stream has caught up (Gradio's /cancel of a running stream sent a late, empty completion: "Error").
    page.wait_for_function("() => document.querySelector('#text-1 [data-testid=status-tracker]')"
                           ".classList.contains('hide')")
    page.wait_for_timeout(2 * stream_lag_ms + 500)
    trackers = page.locator("[id^=text-] [data-testid=status-tracker]")
    assert trackers.count() == 7 and all("hide" in c for c in trackers.evaluate_all("ts => ts.map(t => t.className)"))
    assert 20 < len(card_text(page, 1)) < 2000
    with lock:
        assert {id(s): len(s.text) for s in sequences} == written  # and the server wrote nothing since
    page.close()


def test_stop_while_the_request_is_being_checked_ends_it_without_an_error(browser, app_url, monkeypatch):
    # Hold the check of the inputs (where a snapshot would load) until Stop has been pressed.
    real_check, checking, release = api.Service.generate_request, threading.Event(), threading.Event()

    def slow_check(service, **inputs):
        checking.set()
        release.wait(TIMEOUT_MS / 1000)
        return real_check(service, **inputs)

    page = open_app(browser, app_url, init_script=LAGGING_STREAM)
    page.click("#generate")  # a first run, written to its end, fills the cards
    page.wait_for_function("() => document.querySelector('#run-status').innerText.includes('Wrote')")
    monkeypatch.setattr(api.Service, "generate_request", slow_check)
    submitted, real_submit = [], Engine.submit

    def submit(engine, *args, **kwargs):
        submitted.append(args)
        return real_submit(engine, *args, **kwargs)

    monkeypatch.setattr(Engine, "submit", submit)
    page.evaluate("() => { window.streamLag = 400; }")
    page.click("#generate")
    assert checking.wait(TIMEOUT_MS / 1000)
    page.click("#stop")
    page.wait_for_timeout(300)  # Stop reached the server while the check still ran
    release.set()
    page.wait_for_timeout(2 * 400 + 500)  # the lagging stream has caught up
    trackers = page.locator("[id^=text-] [data-testid=status-tracker]")
    assert trackers.count() == 8 and all("hide" in c for c in trackers.evaluate_all("ts => ts.map(t => t.className)"))
    assert "Error" not in page.locator("#cards").inner_text()
    assert submitted == [] and card_text(page, 1) == ""  # nothing was written, and the first run's text is gone
    # ...and the line under the buttons says so, not what the first run wrote
    assert page.locator("#run-status").inner_text().startswith("Stopped at 0 of")
    page.close()


def test_cards_wrap_to_one_column_on_a_phone(browser, app_url):
    for width, side_by_side in ((1400, True), (390, False)):
        page = open_app(browser, app_url, width)
        first, second = (page.locator(f"#card-{n}").bounding_box() for n in (1, 2))
        assert (abs(first["y"] - second["y"]) < 1) == side_by_side
        assert second["x"] + second["width"] <= width
        page.close()


def test_rewind_shows_what_each_milestone_wrote_at_that_step(browser, app_url):
    page = open_app(browser, app_url)
    page.get_by_role("tab", name="Training").click()
    loss, text = page.locator("#rewind-8 .loss"), page.locator("#rewind-8 pre")
    loss.wait_for()
    last_step, last_text = loss.inner_text(), text.inner_text()
    page.locator("#rewind-step input[type=range]").fill("0")  # drag the slider to the start
    page.wait_for_function("() => document.querySelector('#rewind-8 .loss').textContent.includes('at step 0 ')"
                           " || document.querySelector('#rewind-8 .loss').textContent.endsWith('at step 0')")
    assert text.inner_text() != last_text and loss.inner_text() != last_step
    assert page.locator("#rewind-cards .rewind-card").count() == len(LADDER)
    page.close()
