"""The page while all eight milestones write 2,000 characters each: how long Chromium's main thread is busy at a
stretch (its long-task timing) and how long after a Stop click the texts still change, for two checkouts of the
app side by side (e.g. main before a change and the working tree after it).

    python benchmarks/page.py --before /tmp/before --after .      # each: a folder holding an app.py

Each app is started in its own process (``python app.py``, on the real ``weights/``) and driven by Debian's
Chromium at 1440×900; the runs alternate (before, after, before, ...) so both see the same load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_model  # noqa: E402
from tests.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from toystory_gpt.cores import usable_cores  # noqa: E402
from toystory_gpt.ui.page import free_port  # noqa: E402

LENGTH = 2000
# Every long task (> 50 ms of main thread) from the page's start; and, per animation frame, when the texts last
# changed and when a frame was last painted (wall clock, ms since the epoch, to compare with the click's time
# taken outside the page).
OBSERVE = """(() => {
  window.longTasks = [];
  new PerformanceObserver(list => list.getEntries().forEach(e => window.longTasks.push(e.duration)))
    .observe({type: 'longtask', buffered: true});
  document.addEventListener('click', () => { window.clickedAt = Date.now(); }, true);
  window.watchTexts = () => {
    let last = '';
    window.lastChange = Date.now();
    const tick = () => {
      const now = [...document.querySelectorAll('[id^=text-] textarea')].map(t => t.value.length).join(',');
      if (now !== last) { last = now; window.lastChange = Date.now(); window.lengths = now; }
      window.lastFrame = Date.now();
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  };
})();"""


def start(source: Path, weights: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(source), "TOYSTORY_WEIGHTS": str(weights),
           "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen([sys.executable, "app.py"], cwd=source, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return server, url
        except OSError:
            if server.poll() is not None:
                raise SystemExit(f"the app in {source} exited with {server.returncode}") from None
            time.sleep(0.5)
    server.kill()
    raise SystemExit(f"the app in {source} did not start")


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.set_default_timeout(120_000)
    page.add_init_script(OBSERVE)
    page.goto(url)
    page.wait_for_selector("#generate")
    page.locator("#length input[type=number]").fill(str(LENGTH))
    page.locator("#length input[type=number]").press("Tab")
    page.wait_for_timeout(500)
    page.evaluate("() => { window.longTasks = []; window.watchTexts(); }")
    return page


def full_run(browser, url: str) -> dict:
    """Generate to the end: the longest main-thread task and the seconds from click to the last character."""
    page = open_page(browser, url)
    started = time.time()
    page.locator("#generate").click()
    page.wait_for_function(f"() => window.lengths && window.lengths.split(',').every(n => +n >= {LENGTH})",
                           polling=200)
    tasks = page.evaluate("() => window.longTasks")
    done = page.evaluate("() => window.lastChange") / 1000 - started
    page.close()
    return {"longest": max(tasks, default=0), "busy": sum(tasks), "seconds": done}


def stop_run(browser, url: str, after: float) -> dict:
    """Generate, click Stop ``after`` seconds in (a real mouse click, queued behind whatever the page is doing):
    the seconds from the click to its handler running and to the texts' last change (negative: they had all
    changed for the last time before it), and how long the texts then were."""
    page = open_page(browser, url)
    box = page.locator("#stop").bounding_box()  # now: asked while the page is busy, the answer could wait seconds
    page.locator("#generate").click()
    time.sleep(after)
    clicked = time.time()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    # Stopped: frames are painted (the page is not merely busy) and the texts have not changed for 3 s.
    while not page.evaluate("() => Date.now() - window.lastFrame < 500 && Date.now() - window.lastChange > 3000"):
        time.sleep(0.2)
    last = page.evaluate("() => window.lastChange") / 1000 - clicked
    handled = page.evaluate("() => window.clickedAt") / 1000 - clicked
    shown = page.evaluate("() => window.lengths")
    page.close()
    return {"stop_to_last": last, "stop_handled": handled, "lengths": shown}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="a checkout of the app before the change")
    parser.add_argument("--after", type=Path, default=ROOT, help="the app after it (default: this checkout)")
    parser.add_argument("--weights", type=Path, default=ROOT / "weights")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--stop-after", type=float, default=4.0, help="seconds from Generate to Stop")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    apps = {name: start(path.resolve(), args.weights.resolve()) for name, path in
            (("before", args.before), ("after", args.after))}
    results = {name: [] for name in apps}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            for _ in range(args.repeats):
                for name, (_, url) in apps.items():
                    results[name].append({**full_run(browser, url), **stop_run(browser, url, args.stop_after)})
            browser.close()
    finally:
        for server, _ in apps.values():
            server.terminate()
            server.wait()
    print(f"CPU: {cpu_model()}, {usable_cores()} cores; load {os.getloadavg()[0]:.2f} (1 min) at end; "
          f"Chromium {CHROMIUM} headless at 1440x900; eight milestones x {LENGTH:,} characters; "
          f"median of {args.repeats}")
    print(f"{'':34}{'before':>12}{'after':>12}")  # a last change before the Stop: it came after the texts ended
    for key, label, unit in (("longest", "longest main-thread task", "ms"), ("busy", "long tasks in all", "ms"),
                             ("seconds", "click to last character", "s"),
                             ("stop_handled", f"Stop ({args.stop_after:g} s in) to its handler", "s"),
                             ("stop_to_last", "Stop to the texts' last change", "s")):
        cells = "".join(f"{statistics.median(r[key] for r in results[name]):>10.{0 if unit == 'ms' else 2}f}"
                        f" {unit:<1}" for name in apps)
        print(f"{label:<34}{cells}")
    for name in apps:
        print(f"{name}: lengths when stopped: " + "; ".join(r["lengths"] for r in results[name]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
