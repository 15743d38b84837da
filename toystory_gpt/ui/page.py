"""The whole page: a header, then one tab per module in ``TABS``, all reading one ``Context``.

Adding a tab is one module (a ``TITLE`` and a ``build(context)`` that lays out its components inside the
tab) and one entry in ``TABS``. The API endpoints are not a tab's: ``endpoints.register`` adds them all.
"""

from __future__ import annotations

import html
import importlib.util
import logging
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from .. import api, corpus, report
from ..milestones import LADDER, Ladder
from ..record import Presentation, ResultRow, RunSummary
from . import about, compare, endpoints, inside, training, your_text

log = logging.getLogger("toystory_gpt.app")

TABS = (compare, inside, your_text, training, about)
# Visitors waiting for a free slot of the engine (its capacity are served at once): past this many, they are
# told the app is busy instead of queueing for minutes.
QUEUE_SIZE = 64
# Gradio runs at most ``max_threads`` events at once, async ones included, whatever each event's own limit:
# room for a visitor per engine slot, plus this many synchronous events (the Inside views, the Training tab's
# rewind), which each hold a worker thread.
VIEW_THREADS = 8
# Visitors whose component state Gradio keeps, ~0.1 MB each: its default of 10,000 could hold ~1 GB.
SESSIONS_KEPT = 1000
# How often Gradio's queue looks again for an event it can start, when it could start none (its own: every 1 ms),
# and for progress to send (every 10 ms). Each look takes Python's lock from the engine's threads, which then wait
# to get it back; an event started 10 ms later is still started before a visitor can tell.
QUEUE_POLL_SECONDS = 0.01
PROGRESS_POLL_SECONDS = 0.05

# System fonts: nothing to fetch, and text looks native on every laptop and phone.
THEME = gr.themes.Soft(primary_hue="sky", secondary_hue="amber", neutral_hue="slate",
                       font=["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"],
                       font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"])
CSS = """
.gradio-container { max-width: 1500px !important; margin: 0 auto; }
/* Nothing may widen the page: wide things (code, tables, rows of characters) scroll inside themselves. */
/* contain: a tab's width is the window's, never its content's, so what is too wide must scroll in its box */
.gradio-container .tabitem { contain: inline-size; }
.gradio-container .column, .gradio-container .row, .gradio-container .block { min-width: 0; }
.gradio-container .prose pre, .gradio-container .prose table { display: block; max-width: 100%; overflow-x: auto; }
.gradio-container .prose td, .gradio-container .prose th { white-space: nowrap; }
#header h1 { margin: 0 0 0.1rem; font-size: 1.7rem; }
#header .lede { font-size: 1rem; margin: 0; }
#header details { font-size: 0.9rem; margin: 0.2rem 0 0; }
#header summary { cursor: pointer; color: var(--link-text-color); }
#header ol { columns: 2 24rem; column-gap: 2.5rem; margin: 0.3rem 0 0; padding-left: 1.4rem; }
#header li { break-inside: avoid; margin-bottom: 0.25rem; }
@media (max-width: 640px) {
  #header h1 { font-size: 1.4rem; }
  #header .lede { font-size: 0.9rem; }
}
""" + "".join(tab.CSS for tab in TABS if hasattr(tab, "CSS"))
# Gradio scopes the rules of ``css`` inside @media to the page's content: the page's own padding, narrower on a
# phone (it left less than the tab bar and the header need), is set here.
HEAD = ("<style>@media (max-width: 640px) { .gradio-container .main.app { padding-left: 10px; padding-right: 10px; } }"
        "</style>" + "".join(tab.HEAD for tab in TABS if hasattr(tab, "HEAD")))  # and the tabs' scripts


@dataclass
class Context:
    """What every tab builds from: the service (the loaded milestones and the engine), where the milestones
    came from, and what training recorded. ``shared`` holds components one tab offers another (e.g. the
    Compare tab's texts)."""
    service: api.Service
    weights_dir: Path
    rows: list[ResultRow]
    summary: RunSummary | None
    shared: dict = field(default_factory=dict)

    @property
    def ladder(self) -> Ladder:
        return self.service.ladder

    @property
    def presentation(self) -> Presentation:
        """How to present the text these weights were trained on (the screenplay where no results.json says)."""
        return self.summary.corpus.presentation if self.summary else corpus.SCREENPLAY


def header_markdown(presentation: Presentation = corpus.SCREENPLAY, ladder: Ladder = LADDER) -> str:
    """The title, one sentence, and the ladder folded away: the controls must fit on the first screen."""
    items = "".join(f"<li><b>{html.escape(m.name)}</b> — {html.escape(m.idea)}</li>" for m in ladder)
    return (f'<div id="header"><h1>Toy Story GPT</h1><p class="lede">{len(ladder)} tiny character-level language '
            f"models trained on {presentation.described}, each adding one idea of the GPT recipe to the one before. "
            f"Write a prompt and watch them continue it side by side.</p><details id=\"ladder\"><summary>The "
            f"{len(ladder)} ideas, one per model</summary><ol>{items}</ol></details></div>")


def skip_absent_matplotlib() -> None:
    """Gradio imports matplotlib around every event it runs, a streamed update included, to set its backend. Where
    it is not installed, each such import searches every folder on ``sys.path`` again (failed imports are not
    remembered): a large share of the server's own work while text streams. Recorded as absent once, it fails at
    once, as Python does for a module set to None in ``sys.modules``."""
    if "matplotlib" not in sys.modules and importlib.util.find_spec("matplotlib") is None:
        sys.modules["matplotlib"] = None


def build_app(weights_dir: Path, service: api.Service | None = None, ladder: Ladder = LADDER) -> gr.Blocks:
    """Load every milestone of ``ladder`` in ``weights_dir`` and lay out the app; nothing is generated until asked.
    ``service``: serve through this one instead (its caller closes it), e.g. an engine of another size."""
    skip_absent_matplotlib()
    service = service or api.Service.from_folder(weights_dir, ladder)
    ladder = service.ladder
    service.engine.warm_up()
    models = service.models
    for saved in models.saved.values():
        log.info("loaded %s: %s parameters, from %s", saved.milestone.label, f"{saved.model.num_params:,}",
                 saved.folder)
    for m in ladder:
        if m.number not in models.saved:
            log.warning("unavailable %s: %s", m.label, models.unavailable_reason(m.number))
    log.info("serving %d of %d milestones from %s", len(models.saved), len(ladder), weights_dir)
    summary = report.read_summary(weights_dir)
    context = Context(service, Path(weights_dir), report.collect_rows(weights_dir, summary and summary.seeds, ladder),
                      summary)
    with gr.Blocks(title="Toy Story GPT") as demo:
        gr.Markdown(header_markdown(context.presentation, ladder))
        for tab in TABS:
            with gr.Tab(tab.TITLE, elem_id=f"{tab.__name__.rsplit('.', 1)[-1]}-tab"):
                tab.build(context)
        endpoints.register(service)
        demo.unload(your_text.closed(service))
    demo.queue(max_size=QUEUE_SIZE)
    demo._queue.sleep_when_free = QUEUE_POLL_SECONDS  # Gradio 6.31's names (a test checks it still reads them)
    demo._queue.progress_update_sleep_when_free = PROGRESS_POLL_SECONDS
    demo.max_threads = service.engine.capacity + VIEW_THREADS  # what ``launch`` passes on
    return demo


def launch(app: gr.Blocks, **server):
    """Serve ``app`` with this project's look (Gradio 6 takes theme and CSS at launch), keeping SESSIONS_KEPT
    sessions, running as many events at once as ``build_app`` made room for, and taking uploads up to the Your
    text tab's."""
    return app.launch(**{"theme": THEME, "css": CSS, "head": HEAD, "state_session_capacity": SESSIONS_KEPT,
                         "max_threads": app.max_threads, "max_file_size": your_text.UPLOAD_BYTES, **server})


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for tests and benchmarks that start the app)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
