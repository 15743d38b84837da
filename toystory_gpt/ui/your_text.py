"""The Your text tab: a visitor's own text trained into the ladder while they watch (the plan and its cost first, then
a progress bar, each model's curve and its sample at every evaluation), then theirs to use: Compare and Inside
switch to it for their page only (``switch``), its rewind is here, and it downloads as a weights folder (zip).

The training itself is ``api.Service``'s (``start_training``, ``train``), the same as the ``/train`` endpoint's.
"""

from __future__ import annotations

import asyncio
import html
import shutil
import tempfile
from pathlib import Path

import gradio as gr

from .. import api, corpus, report, training_job
from ..milestones import Ladder
from ..record import Evaluation, ResultRow
from ..request import MAX_TRAINING_TEXT
from . import chart, endpoints, training

TITLE = "Your text"
APP = ""  # the switch's value for the app's own ladder (the API's ``ladder`` input, empty)
YOURS = "your text"
ZIP = "your-ladder.zip"  # the download, inside the ladder's folder
UPLOAD_BYTES = 4 * MAX_TRAINING_TEXT  # UTF-8 takes at most 4 bytes a character: the length limit decides
PLAN_FIRST = "_Paste or upload a text: the plan and what it costs show here before you start._"

CSS = """
#yt-progress .yt-bar { height: 0.9rem; border-radius: 0.45rem; background: var(--background-fill-secondary);
                       border: 1px solid var(--border-color-primary); overflow: hidden; }
#yt-progress .yt-bar div { height: 100%; background: var(--color-accent); }
#yt-progress p { margin: 0.3rem 0; font-variant-numeric: tabular-nums; }
#yt-samples { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 10px; }
#yt-samples .yt-card { border: 1px solid var(--border-color-primary); border-radius: var(--radius-lg);
                       padding: 6px 8px; background: var(--background-fill-secondary); min-width: 0; }
#yt-samples h4 { margin: 0 0 0.2rem; font-size: 0.9rem; }
#yt-samples pre { white-space: pre-wrap; word-break: break-word; font-size: 0.8rem; margin: 0; max-height: 9rem;
                  overflow-y: auto; background: none; padding: 0; }
"""


# Five tabs' names at Gradio's padding are wider than a phone: narrower padding there keeps the bar in the window
# (a media rule, so in the page's head: Gradio scopes those of ``css`` to the page's content).
HEAD = ("<style>@media (max-width: 640px) { .gradio-container .tab-container button { padding-left: 6px; "
        "padding-right: 6px; } }</style>")


def switch(context) -> gr.Radio:
    """A tab's choice between the app's ladder and the visitor's (shown once they trained one); its value is the
    ``ladder`` input of the requests: empty for the app's, the visitor's ladder's name for theirs."""
    radio = gr.Radio([("the app's ladder", APP)], value=APP, label="Models", visible=False,
                     elem_classes="ladder-switch", info="Trained on your text in the Your text tab: for your page only")
    context.shared.setdefault("switches", []).append(radio)
    return radio


# ------------------------------------------------------------------------------------------------ what the tab shows

def progress_html(update: api.TrainingUpdate, label: str) -> str:
    """The progress bar: the share of the plan's work done, the model and step training now, and the time left."""
    left = "" if update.seconds_left is None else f" · about {training_job.duration(update.seconds_left)} left"
    now = f"{html.escape(label)}: step {update.step:,} of {update.steps:,}" if update.milestone else "starting"
    return (f'<div class="yt-bar"><div style="width:{100 * update.done:.1f}%"></div></div>'
            f"<p>{100 * update.done:.0f}% · {now} · {training_job.duration(update.elapsed)} so far{left}</p>")


def samples_html(latest: dict[int, Evaluation], ladder: Ladder) -> str:
    """Each model's sample at its latest evaluation, with its val loss then."""
    cards = [f'<div class="yt-card" id="yt-sample-{n}"><h4>{html.escape(ladder[n].label)}</h4>'
             f'<p class="loss">step {point.step:,}: val loss {point.val_loss:.3f} nats/char</p>'
             f'<pre>{html.escape(point.sample or "")}</pre></div>' for n, point in sorted(latest.items())]
    return f'<div id="yt-samples">{"".join(cards)}</div>'


def curves_html(points: dict[int, list[tuple[int, float]]], ladder: Ladder) -> str:
    """Each model's validation loss so far: the Training tab's chart (a dash and a label per line, not colour alone)."""
    return chart.line_chart([chart.Series(str(n), ladder[n].label, tuple(line)) for n, line in sorted(points.items())],
                            "Validation loss (lower is better)", "nats/char")


def budget_notes(rows: list[ResultRow], plan: training_job.Plan) -> str:
    """Where a rung scored worse than the one below it, said beside it: with a budgeted recipe, whether it was
    still improving when the budget ran out (so its place is the budget's, not its idea's)."""
    served = sorted((r for r in rows if r.served and r.milestone is not None), key=lambda r: r.milestone)
    notes = []
    for lower, upper in zip(served, served[1:]):
        if upper.val_loss is None or lower.val_loss is None or upper.val_loss <= lower.val_loss:
            continue
        line = f"- **{upper.label}** scored {upper.val_loss:.3f}, worse than {lower.label}'s {lower.val_loss:.3f}"
        if upper.still_improving and plan.recipe.attention_steps is not None:
            line += (f", and was still improving ({report.STILL_IMPROVING}) when its {upper.steps:,} steps of "
                     f"{plan.recipe.name} ran out: its place on the ladder is the budget's, not its idea's")
        elif upper.still_improving:
            line += f", and was still improving ({report.STILL_IMPROVING}) at its last step"
        notes.append(line + ".")
    return "\n".join(notes)


def text_from(service: api.Service, pasted: str | None, uploaded: str | None) -> corpus.Corpus:
    """The text to train on, the uploaded file's if any, else the pasted one, checked as ``train.py --text`` checks
    a file (and its length as /train's); InvalidRequest says what is wrong."""
    if uploaded:
        try:
            text = training_job.read_text(Path(uploaded), Path(uploaded).name)
        except corpus.CorpusError as exc:
            raise api.InvalidRequest(str(exc)) from None
        service.parse(api.TrainRequest, text=text.text, milestones=[1])  # the one length limit
        return text
    return service.text_of(service.parse(api.TrainRequest, text=pasted, milestones=[1]))


def archive(folder: Path) -> Path:
    """The ladder's weights folder as a zip inside it (what ``TOYSTORY_WEIGHTS`` serves once unzipped, and what
    ``publish model`` publishes), so that dropping the ladder deletes it too; made once."""
    folder = Path(folder)
    zipped = folder / ZIP
    if not zipped.exists():
        with tempfile.TemporaryDirectory(prefix="toystory-zip-") as scratch:  # not inside what it zips
            made = shutil.make_archive(str(Path(scratch) / "ladder"), "zip", root_dir=folder)
            shutil.move(made, zipped)
    return zipped


# ------------------------------------------------------------------------------------------------ the tab

def build(context) -> None:
    service = context.service
    ladder = service.ladder
    gr.Markdown("Paste a plain text (or upload a UTF-8 `.txt` file) and train the ladder on it, watching each model "
                f"learn. Up to {MAX_TRAINING_TEXT:,} characters. When it is done, the Compare and Inside tabs "
                "can switch to your ladder — for your page only: nobody else sees it, and it is dropped when you close "
                "the page (or after an hour without use). Download it to keep it.")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=300):
            text = gr.Textbox(label="Your text", lines=8, max_lines=16, elem_id="yt-text",
                              placeholder="Paste a plain text here: a few thousand characters or more")
            upload = gr.File(label="…or upload a text file", file_types=[".txt"], type="filepath",
                             elem_id="yt-upload")
            chosen = gr.CheckboxGroup([(m.label, m.number) for m in ladder], value=ladder.numbers,
                                      label="Milestones to train", elem_id="yt-milestones")
            with gr.Row():
                start = gr.Button("Start training", variant="primary", elem_id="yt-start")
                stop = gr.Button("Stop", variant="stop", elem_id="yt-stop")
        with gr.Column(scale=3, min_width=320):
            plan = gr.Markdown(PLAN_FIRST, elem_id="yt-plan")
            progress = gr.HTML(elem_id="yt-progress")
            curves = gr.HTML(curves_html({}, ladder), elem_id="yt-curves")
    samples = gr.HTML(elem_id="yt-samples-box")
    results = gr.Markdown(elem_id="yt-results")
    download = gr.DownloadButton("Download your ladder (zip)", visible=False, elem_id="yt-download")
    with gr.Row(equal_height=True):
        rewind = gr.Slider(0, 1, 1, step=1, label="Rewind: your ladder's training step", visible=False,
                           elem_id="yt-rewind-step")
    rewind_cards = gr.HTML(elem_id="yt-rewind")
    folder = gr.State()
    switches = context.shared.get("switches", [])

    async def train_here(pasted, uploaded, numbers, visitor: gr.Request):
        with endpoints.answered():
            request = service.parse(api.TrainRequest, text=pasted or "", milestones=numbers)
            text = await asyncio.to_thread(text_from, service, pasted, uploaded)
            running = service.start_training(text, request.milestones, visitor.session_hash)
        points, latest = {}, {}
        unchanged = [gr.skip()] * len(switches)  # the switches keep any earlier ladder until this one is done
        # A training that fails, or finds no room left for its ladder, says why, as everything above does.
        with endpoints.answered():
            async for update in service.train(running, visitor.session_hash):
                if update.evaluation is not None:
                    point = update.evaluation
                    points.setdefault(update.milestone, []).append((point.step, point.val_loss))
                    latest[update.milestone] = point
                if update.ladder is None:
                    label = ladder[update.milestone].label if update.milestone else ""
                    yield (update.plan, progress_html(update, label), curves_html(points, ladder),
                           samples_html(latest, ladder), gr.skip(), None, gr.DownloadButton(visible=False),
                           gr.Slider(visible=False), "", *unchanged)
                    continue
                kept = service.ladders.get(update.ladder)
                yours = [gr.Radio(choices=[("the app's ladder", APP), (YOURS, update.ladder)], value=update.ladder,
                                  visible=True)] * len(switches)
                # the ladder reaches the page first (its name as the switches' value): nothing below can lose it
                yield (update.plan, progress_html(update, "done"), curves_html(points, ladder),
                       samples_html(latest, ladder), gr.skip(), str(kept.folder), gr.skip(), gr.skip(), gr.skip(),
                       *yours)
                rows, found, zipped = await asyncio.gather(
                    asyncio.to_thread(report.collect_rows, kept.folder, None, ladder),
                    asyncio.to_thread(training.records, kept.folder, ladder), asyncio.to_thread(archive, kept.folder))
                steps = training.evaluation_steps(found, ladder) or [0]
                notes = budget_notes(rows, running.job.plan)
                summary = (f"### Your ladder\n\nTrained with {running.job.plan.recipe.name} on "
                           f"{running.job.plan.device}.\n\n{report.table(rows, ladder=ladder)}\n\n{notes}")
                yield (gr.skip(), gr.skip(), gr.skip(), gr.skip(), summary, gr.skip(),
                       gr.DownloadButton(value=str(zipped), visible=True),
                       gr.Slider(steps[0], steps[-1], steps[-1], step=training.slider_step(steps), visible=True),
                       training.rewind_html(found, steps[-1], ladder), *unchanged)
        if not running.finished:
            yield ("", "<p>Stopped: nothing was kept.</p>", gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(),
                   gr.skip(), gr.skip(), *unchanged)

    def preview(pasted, uploaded, numbers) -> str:
        """The plan and its cost, before Start; or why this text cannot be trained on."""
        if not (pasted or uploaded):
            return PLAN_FIRST
        try:
            request = service.parse(api.TrainRequest, text=pasted or "", milestones=numbers)
            return service.trainings.plan(text_from(service, pasted, uploaded), request.milestones,
                                          ladder).describe()
        except (api.InvalidRequest, corpus.CorpusError) as exc:
            return f"**This cannot be trained on:** {html.escape(str(exc))}"

    def rewound(step, at):
        if not at:
            return ""
        return training.rewind_html(training.records(Path(at), ladder), int(step), ladder)

    outputs = [plan, progress, curves, samples, results, folder, download, rewind, rewind_cards, *switches]
    gr.on([text.change, upload.change, chosen.change], preview, [text, upload, chosen], plan,
          api_visibility="private", show_progress="hidden", trigger_mode="always_last")
    start.click(train_here, [text, upload, chosen], outputs, api_visibility="private", concurrency_limit=None,
                show_progress="hidden")
    stop.click(stopper(service), None, None, queue=False, api_visibility="private")
    rewind.change(rewound, [rewind, folder], rewind_cards, api_visibility="private", show_progress="hidden")


def stopper(service: api.Service):
    """Stop: the training this page started, if one runs, stops."""

    def stop(visitor: gr.Request) -> None:
        running = service.trainings.running if service.trainings else None
        if running is not None and running.owner == visitor.session_hash:
            running.stop()

    return stop


def closed(service: api.Service):
    """The page closed: its training stops and its ladders are dropped, everything they held freed."""
    stop = stopper(service)

    def close(visitor: gr.Request) -> None:
        stop(visitor)
        if service.ladders is not None:
            service.ladders.drop_owner(visitor.session_hash)

    return close
