"""The Your text tab in a real browser: paste a public-domain text, see the plan, train milestones 1, 2, 3 and 8 on
the CPU recipe (its tiny test size), watch the progress and the curves move; then generate from "your text" in
Compare and read it in Inside. A second page neither lists nor offers it."""

from __future__ import annotations

import time

import pytest

from tests.conftest import TIMEOUT_MS
from tests.test_your_text import NUMBERS, TEXT, app_url, tiny  # noqa: F401  (fixtures)
from toystory_gpt.milestones import LADDER

pytestmark = pytest.mark.browser  # the `browser` fixture (conftest) skips where Chromium is missing

PASTED = TEXT[:8000]  # what a visitor pastes: typing 40,000 characters into the box takes the browser too long

# Starts the training and resolves once the download button shows (the ladder is kept), with every distinct state
# of the progress bar and of the curves seen meanwhile, a frame at a time.
WATCH_TRAINING = """async () => {
  const progress = new Set(), curves = new Set();
  document.querySelector('#yt-start').click();
  const start = performance.now();
  while (performance.now() - start < 120000) {
    await new Promise(requestAnimationFrame);
    progress.add(document.querySelector('#yt-progress').innerText);
    curves.add(document.querySelector('#yt-curves').innerHTML);
    const download = document.querySelector('#yt-download');
    if (download && download.offsetParent !== null) return {progress: [...progress], curves: curves.size};
  }
  return {progress: [...progress], curves: curves.size, timedOut: true};
}"""


def test_train_watch_then_generate_and_look_inside_your_ladder(browser, app_url):  # noqa: F811
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app_url)
    page.get_by_role("tab", name="Your text").click()
    page.locator("#yt-text textarea").fill(PASTED)
    for m in LADDER:
        if m.number not in NUMBERS:
            page.locator("#yt-milestones").get_by_label(m.label, exact=True).uncheck()
    plan = page.locator("#yt-plan")
    plan.get_by_text("4 models, the tiny test recipe, on this server's CPU").wait_for()
    assert "Steps per model: 1: 30, 2: 30, 3:" in plan.inner_text()  # shown, with its cost, before Start

    seen = page.evaluate(WATCH_TRAINING)
    assert not seen.get("timedOut"), seen["progress"][-3:]
    shown = [p for p in seen["progress"] if "%" in p]
    assert len(shown) >= 3 and any("step" in p and "left" in p for p in shown)  # a bar that moved, with time left
    assert seen["curves"] >= 3  # the curves grew as evaluations came
    for n in NUMBERS:
        assert page.locator(f"#yt-sample-{n} pre").inner_text()  # its sample at its last evaluation
    assert "8 · + dropout" in page.locator("#yt-results").inner_text()
    assert page.locator("#yt-rewind-step").is_visible()

    page.get_by_role("tab", name="Compare").click()
    switch = page.locator(".ladder-switch").first
    assert switch.get_by_label("your text").is_checked()
    page.wait_for_function("""(numbers) => [...document.querySelectorAll('#milestones input')]
        .filter(box => box.checked).length === numbers.length""", arg=NUMBERS)
    page.locator("#prompt textarea").fill("ROMEO:")
    page.click("#generate")
    page.wait_for_function("""(numbers) => numbers.every(n =>
        document.querySelector(`#text-${n} textarea`).value.length === 300)""", arg=NUMBERS)
    assert not page.locator("#card-4").is_visible()

    page.get_by_role("tab", name="Inside").click()
    assert page.locator(".ladder-switch").nth(1).get_by_label("your text").is_checked()
    page.wait_for_function("""() => document.querySelectorAll('#surprise-rows .ins-surprise').length === 4""")
    labels = page.locator("#surprise-rows .ins-surprise .ins-label").all_inner_texts()
    assert [label.split(" ·")[0].strip() for label in labels] == [str(n) for n in NUMBERS]

    other = browser.new_context().new_page()  # another visitor: their own session
    other.set_default_timeout(TIMEOUT_MS)
    other.goto(app_url)
    other.wait_for_selector("#generate")
    assert not any(switch.is_visible() for switch in other.locator(".ladder-switch").all())
    assert other.get_by_label("your text").count() == 0
    other.get_by_role("tab", name="Your text").click()
    assert "8 · + dropout" not in other.locator("#yt-results").inner_text()
    other.close()
    page.close()


def test_a_closed_page_stops_its_training_and_frees_everything(browser, tiny, app_url):  # noqa: F811
    page = browser.new_context().new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app_url)
    page.get_by_role("tab", name="Your text").click()
    page.locator("#yt-text textarea").fill(PASTED)
    page.locator("#yt-plan").get_by_text("8 models").wait_for()
    page.click("#yt-start")
    page.locator("#yt-progress").get_by_text("step").first.wait_for()
    running = tiny.trainings.running
    assert running is not None and running.owner is not None
    process, folder = running._process, running.job.out
    page.context.close()  # the tab closes: Gradio's unload event
    deadline = time.monotonic() + 60
    while tiny.trainings.running is not None or process.is_alive():
        assert time.monotonic() < deadline, "the closed page's training is still running"
        time.sleep(0.2)
    assert not running.finished and not folder.exists()  # stopped part-way, its folder deleted
    assert not any(kept.owner == running.owner for kept in tiny.ladders.all())
