"""The page as a class sees it, in a real browser: on a phone (390×844) and a laptop (1440×900), from the keyboard,
and every number true where it stands.

Set ``TOYSTORY_SCREENSHOTS=docs`` to save each tab at both sizes there (``docs/page-<tab>-<width>.png``), the
Inside tab after a click, the Training plots, the Compare cards at a snapshot's step and after a Stop; on the real
weights, as docs/app.md lists::

    TOYSTORY_TEST_WEIGHTS=weights TOYSTORY_SCREENSHOTS=docs python -m pytest tests/test_page_browser.py
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.conftest import TIMEOUT_MS
from toystory_gpt.milestones import LADDER
from toystory_gpt.pool import Pool
from toystory_gpt.record import TrainingRecord

pytestmark = pytest.mark.browser  # the `browser` fixture (conftest) skips where Chromium is missing

SIZES = [(390, 844), (1440, 900)]
TABS = ("Compare", "Inside", "Training", "About")
# What the page is wider than the window by (0: not at all), and the elements that stick out unclipped.
OVERHANG = """() => {
  const width = document.documentElement.clientWidth, out = [];
  for (const e of document.querySelectorAll('.gradio-container *')) {
    const box = e.getBoundingClientRect();
    if (box.width === 0 || box.right <= width + 0.5) continue;
    let clipped = false;
    for (let p = e.parentElement; p && !clipped; p = p.parentElement) {
      clipped = getComputedStyle(p).overflowX !== 'visible' && p.getBoundingClientRect().right <= width + 0.5;
    }
    if (!clipped) out.push(`${e.tagName}#${e.id}.${String(e.className).slice(0, 40)} to ${Math.round(box.right)}`);
  }
  return {over: document.documentElement.scrollWidth - width, sticking: out.slice(0, 5)};
}"""
IN_VIEW = """(selector) => {
  const box = document.querySelector(selector).getBoundingClientRect();
  return box.height > 0 && box.top >= 0 && box.top < window.innerHeight - 40;
}"""


def screenshot(page, name: str) -> None:
    if folder := os.environ.get("TOYSTORY_SCREENSHOTS"):
        page.wait_for_timeout(400)  # let the last update paint
        page.screenshot(path=str(Path(folder) / f"page-{name}.png"))


def open_page(browser, url: str, size=(1440, 900)):
    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector("#generate")
    return page


def open_inside(browser, url: str, size=(1440, 900)):
    page = open_page(browser, url, size)
    page.get_by_role("tab", name="Inside").click()
    page.wait_for_selector("#surprise-rows .ins-row [data-pos]")
    page.wait_for_selector("#next-bars .ins-card")
    return page


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_no_tab_is_wider_than_the_window(browser, app_url, size):
    page = open_page(browser, app_url, size)
    for tab in TABS:
        page.get_by_role("tab", name=tab).click()
        panel = page.locator(f"#{tab.lower()}-tab")
        panel.wait_for(state="visible")
        if tab == "Inside":
            page.wait_for_selector("#attention-rows .ins-rows")
        page.wait_for_timeout(300)  # a Gradio tab lays its components out as it opens
        overhang = page.evaluate(OVERHANG)
        assert overhang["over"] <= 0, f"{tab} at {size[0]} px: {overhang}"
        screenshot(page, f"{tab.lower()}-{size[0]}")
    # The Training table reads a row per milestone (a cell of one line, not a letter a line); the tab's wide table
    # and About's code scroll inside their boxes.
    page.get_by_role("tab", name="Training").click()
    page.locator("#training-plots").scroll_into_view_if_needed()
    screenshot(page, f"training-plots-{size[0]}")
    cell = page.locator("#results table tr").nth(1).locator("td").first
    assert cell.bounding_box()["height"] < 48 and "1 · unigram" in cell.inner_text()
    page.locator("#results").scroll_into_view_if_needed()
    screenshot(page, f"training-table-{size[0]}")
    page.get_by_role("tab", name="About").click()
    code = page.locator(".idea-code").first
    if size[0] < 640:  # on a laptop the code is on the tab's first screen
        code.scroll_into_view_if_needed()
        screenshot(page, f"about-code-{size[0]}")
    assert code.bounding_box()["x"] + code.bounding_box()["width"] <= size[0]
    page.close()


def test_cards_show_the_loss_of_the_weights_they_write_with(browser, app_url, served_weights):
    page = open_page(browser, app_url)
    records = {m.number: TrainingRecord.from_json((served_weights / m.folder / "history.json").read_text())
               for m in LADDER.milestones}
    for number, record in records.items():  # final: its best evaluation, the weights training kept
        stats = page.locator(f"#card-stats-{number}").inner_text()
        assert f"validation loss {record.best_val_loss:.3f} (lower is better" in stats, stats
    def kept(milestone) -> set[int]:
        return {int(p.stem.removeprefix("step-")) for p in (served_weights / milestone.folder / "snapshots")
                .glob("step-*.safetensors")}

    steps = sorted(set.intersection(*map(kept, LADDER.milestones)))
    assert steps, "the served weights kept no snapshots"
    step = steps[0]
    page.locator("#weights-step input").click()
    page.get_by_role("option", name=f"as at step {step:,}", exact=True).click()
    for number, record in records.items():
        want = next(point.val_loss for point in record.history if point.step == step)
        page.wait_for_function("([n, text]) => document.querySelector(`#card-stats-${n}`).innerText.includes(text)",
                               arg=[number, f"validation loss {want:.3f} (lower is better"])
        assert f"at step {step:,}" in page.locator(f"#card-stats-{number}").inner_text()
    screenshot(page, "compare-step-1440")
    page.close()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_a_click_brings_the_bars_and_the_attention_into_view(browser, app_url, size):
    page = open_inside(browser, app_url, size)
    # The gain and lens rows make the rows tall: the views at a character start below the first screen.
    page.locator("#inside-gains").get_by_role("checkbox").check()
    page.wait_for_selector("#surprise-rows .ins-gain")
    page.locator("#inside-lens").get_by_role("checkbox").check()
    page.wait_for_selector("#surprise-rows .ins-lens")
    page.locator("#surprise-rows .ins-surprise").nth(7).locator('[data-pos="12"]').click()
    page.wait_for_function("() => document.querySelector('#next-bars').innerText.includes('character 13 of')")
    page.wait_for_function(IN_VIEW, arg="#next-bars .ins-heading")
    if size[0] > 640:  # beside each other: both on the screen at once
        page.wait_for_function(IN_VIEW, arg="#attention-rows .ins-rows")
        assert page.locator("#attention-rows .ins-query").count() == 6  # milestones 3-8: the slot's attention
        # ...each row scrolled to its end, where the outlined last character read is
        query = page.locator("#attention-rows .ins-query").last.bounding_box()
        rows = page.locator("#attention-rows .ins-rows").bounding_box()
        assert rows["x"] <= query["x"] <= rows["x"] + rows["width"]
    screenshot(page, f"inside-click-{size[0]}")
    # Turning rows off keeps the chosen character.
    page.locator("#inside-lens").get_by_role("checkbox").uncheck()
    page.wait_for_function("() => !document.querySelector('#surprise-rows .ins-lens')")
    assert "character 13 of" in page.locator("#next-bars").inner_text()
    assert page.locator("#surprise-rows .ins-surprise").first.locator(".ins-sel").get_attribute("data-pos") == "12"
    page.close()


def focused(page) -> dict:
    return page.evaluate("() => ({id: document.activeElement.id, pos: document.activeElement.dataset.pos ?? null})")


def tab_to(page, wanted, most: int = 80) -> None:
    """Press Tab until ``wanted(focused element)`` holds."""
    for _ in range(most):
        page.keyboard.press("Tab")
        if wanted(focused(page)):
            return
    raise AssertionError(f"Tab never reached it; last focused: {focused(page)}")


def test_keyboard_only_reads_a_character_then_generates_and_stops(browser, app_url, monkeypatch):
    page = open_inside(browser, app_url)
    page.locator("#inside-text textarea").focus()
    tab_to(page, lambda element: element["pos"] is not None)  # a row's one Tab stop: its chosen character
    readout = page.locator("#surprise-rows .ins-readout")
    read = readout.inner_text()
    assert "p = " in read and "top guesses" in read
    page.keyboard.press("ArrowLeft")
    pos = focused(page)["pos"]
    page.wait_for_function("(text) => document.querySelector('#surprise-rows .ins-readout').innerText !== text",
                           arg=read)
    page.keyboard.press("Enter")  # chooses it: the views follow
    page.wait_for_function("(n) => document.querySelector('#next-bars').innerText.includes(`character ${n} of`)",
                           arg=int(pos) + 1)
    # Compare: slow the engine (it runs in this process) so that Stop surely lands mid-generation.
    real_tick = Pool.tick
    monkeypatch.setattr(Pool, "tick", lambda pool: (time.sleep(0.005), real_tick(pool))[1])
    page.get_by_role("tab", name="Compare").click()
    page.locator("#length input[type=number]").focus()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type("2000")
    page.keyboard.press("Enter")
    page.locator("#prompt textarea").focus()
    tab_to(page, lambda element: element["id"] == "generate")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelector('#text-8 textarea').value.length > 20")
    page.keyboard.press("Tab")
    assert focused(page)["id"] == "stop"
    page.keyboard.press("Enter")
    status = page.locator("#run-status")
    page.wait_for_function("() => document.querySelector('#run-status').innerText.includes('Stopped at')")
    assert "of 2,000 characters" in status.inner_text()
    written = len(page.locator("#text-8 textarea").input_value())
    assert 20 < written < 2000
    screenshot(page, "compare-stopped-1440")
    page.close()


def test_messages_for_people_and_old_results_kept(browser, app_url):
    page = open_inside(browser, app_url)
    before = page.locator("#surprise-rows .ins-rows").inner_html()
    page.locator("#inside-text textarea").fill("")
    page.click("#inside-look")
    toast = page.locator(".toast-body").filter(has_text="Type some text")
    toast.wait_for()
    assert page.locator("#surprise-rows .ins-rows").inner_html() == before  # the last reading stays, unmarked
    assert page.locator("#inside-tab .error").count() == 0
    page.get_by_role("tab", name="Compare").click()
    page.locator("#seed input").fill("")
    page.locator("#prompt textarea").fill("WOODY: " * 300)  # 2,100 characters: said, not silently cut
    assert len(page.locator("#prompt textarea").input_value()) == 2100
    page.click("#generate")
    page.locator(".toast-body").filter(has_text="prompt is 2,100 characters long; the limit is 1,000").wait_for()
    page.locator("#prompt textarea").fill("WOODY:")
    page.click("#generate")
    page.locator(".toast-body").filter(has_text="Seed is empty: type a whole number").wait_for()
    page.close()
