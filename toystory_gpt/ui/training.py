"""The Training tab: every model's loss curves, a rewind through what each milestone wrote as it learned,
the results table and the corpus statistics."""

from __future__ import annotations

import html
import time

import gradio as gr
import pandas as pd

from .. import corpus, report
from ..milestones import LADDER, Ladder

TITLE = "Training"
PLAY_DELAY = 0.7  # seconds per step while playing: long enough to read that the text changed
NOW = "step shown"  # the plots' marker series: a vertical line at the rewind's step

CSS = """
#rewind-cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(290px, 1fr)); gap: 12px; }
#rewind-cards .rewind-card { border: 1px solid var(--border-color-primary); border-radius: var(--radius-lg);
                             padding: 8px 10px; background: var(--background-fill-secondary); min-width: 0; }
#rewind-cards h4 { margin: 0 0 0.2rem; font-size: 0.95rem; }
#rewind-cards .loss { font-size: 0.8rem; opacity: 0.8; margin: 0 0 0.3rem; font-variant-numeric: tabular-nums; }
#rewind-cards pre { white-space: pre-wrap; word-break: break-word; font-size: 0.8rem; margin: 0; max-height: 12rem;
                    overflow-y: auto; background: none; padding: 0; }
"""


def records(weights_dir, ladder: Ladder = LADDER) -> dict:
    """What training recorded for each model of ``ladder`` that has a record, the ablation included, by folder."""
    found = ((m.folder, report.saved_record(weights_dir, m)) for m in ladder.models)
    return {folder: record for folder, record in found if record is not None}


def training_curves(weights_dir, ladder: Ladder = LADDER) -> pd.DataFrame:
    """Long-format loss history of every trained model, the ablation included: one row per (model, step, split).

    The plots' legends show only the milestone number (``milestone``): nine full names do not fit in one row.
    """
    rows = []
    found = records(weights_dir, ladder)
    for m in ladder.models:
        if (record := found.get(m.folder)) is None:
            continue
        key = "ablation" if m.is_ablation else str(m.number)
        rows += [{"milestone": key, "model": m.label, "step": point.step, "split": split, "loss": loss}
                 for point in record.history for split, loss in (("train", point.train_loss), ("val", point.val_loss))
                 if loss is not None]
    return pd.DataFrame(rows, columns=["milestone", "model", "step", "split", "loss"])


def marked(curves: pd.DataFrame, split: str, step: int) -> pd.DataFrame:
    """One split's curves plus a vertical line at ``step`` (two points of the series NOW)."""
    shown = curves[curves.split == split]
    if shown.empty:
        return shown
    low, high = shown.loss.min(), shown.loss.max()
    line = pd.DataFrame([{"milestone": NOW, "model": f"step {step:,}", "step": step, "split": split, "loss": loss}
                         for loss in (low, high)])
    return pd.concat([shown, line], ignore_index=True)


def evaluation_steps(found: dict, ladder: Ladder = LADDER) -> list[int]:
    """Every step at which some milestone was evaluated (and so wrote a sample), in order."""
    return sorted({point.step for m in ladder if (record := found.get(m.folder)) is not None
                   for point in record.history})


def rewind_html(found: dict, step: int, ladder: Ladder = LADDER) -> str:
    """One card per milestone: what it wrote at ``step`` and its val loss then (its last evaluation before
    ``step`` if it stopped earlier or skipped that step)."""
    cards = []
    for m in ladder:
        record = found.get(m.folder)
        if record is None:
            continue
        before = [point for point in record.history if point.step <= step]
        if not before:
            continue
        point = before[-1]
        note = "" if point.step == step else f" (its last evaluation, step {point.step:,})"
        if record.still_improving and point.step == record.steps:
            note += f" {report.STILL_IMPROVING} still improving at its last step"
        text = point.sample if point.sample is not None else "(no sample recorded at this step)"
        cards.append(f'<div class="rewind-card" id="rewind-{m.number}"><h4>{html.escape(m.label)}</h4>'
                     f'<p class="loss">val loss {point.val_loss:.3f} nats/char at step {point.step:,}{note}</p>'
                     f"<pre>{html.escape(text)}</pre></div>")
    return f'<div id="rewind-cards">{"".join(cards)}</div>'


def corpus_statistics(summary) -> str:
    """The corpus statistics of the run that trained these weights, from its results.json."""
    if summary is None:
        return "_No results.json here, so the corpus statistics of this training run are not available._"
    lines = "\n".join(f"- {line}" for line in summary.corpus.to_text().splitlines())
    return f"Corpus statistics (the training text, both splits):\n\n{lines}"


def build(context) -> None:
    ladder = context.ladder
    found = records(context.weights_dir, ladder)
    curves = training_curves(context.weights_dir, ladder)
    steps = evaluation_steps(found, ladder) or [0]
    last = steps[-1]
    gr.Markdown("Loss is the cross-entropy of the next character in nats (divide by ln 2 ≈ 0.693 for bits); "
                f"validation is the last 10% of {context.presentation.described}, never trained on.")
    plots = []
    with gr.Row():
        for split, title in (("val", "Validation loss"), ("train", "Training loss (mean since the last evaluation)")):
            plots.append(gr.LinePlot(marked(curves, split, last), x="step", y="loss", color="milestone", title=title,
                                     y_title="nats/char", tooltip=["model", "step", "loss"], height=360, min_width=340,
                                     elem_id=f"{split}-plot"))
    gr.Markdown("### Rewind: what each milestone wrote as it learned\n"
                f"At every evaluation, training recorded a sample: the same prompt "
                f"({html.escape(repr(context.presentation.sample_prompt))}) and seed every time. Drag the "
                "slider (or press Play) to watch the ladder learn to write. Snapshots of the weights at some of these "
                "steps can generate anything in the Compare tab (*Weights*).")
    with gr.Row(equal_height=True):
        rewind = gr.Slider(steps[0], last, last, step=steps[1] - steps[0] if len(steps) > 1 else 1,
                           label="Training step", elem_id="rewind-step", scale=5)
        play = gr.Button("▶ Play", elem_id="rewind-play", scale=1, min_width=90)
    cards = gr.HTML(rewind_html(found, last, ladder), elem_id="rewind")

    def show(step):
        step = int(step)
        return rewind_html(found, step, ladder), marked(curves, "val", step), marked(curves, "train", step)

    def walk():
        for step in steps:
            yield step
            time.sleep(PLAY_DELAY)

    rewind.change(show, rewind, [cards, *plots], api_visibility="private", show_progress="hidden")
    # No limit: it only sleeps between steps, so one visitor's Play must not make the others' wait.
    play.click(walk, None, rewind, api_visibility="private", show_progress="hidden", concurrency_limit=None)
    published = report.published_for(context.summary and context.summary.corpus.name)
    gr.Markdown(report.table(context.rows, published, ladder) if context.rows else "_No training results found._",
                elem_id="results")
    if context.rows and (others := beside(context)):
        gr.Markdown("### Beside the other ladders\nThe same eight ideas and the same recipe on other texts (their "
                    "results are committed in the repository), and the lecture's published ladder on Tiny "
                    "Shakespeare.\n\n" + others, elem_id="side-by-side")
    gr.Markdown(corpus_statistics(context.summary), elem_id="corpus-stats")


def beside(context) -> str:
    """The served ladder beside every committed ladder trained on another text, with the lecture's column; empty
    where there is no other."""
    served = context.summary.corpus.name if context.summary else corpus.SCREENPLAY_NAME
    others = [summary for summary in report.committed_summaries() if summary.corpus.name != served]
    if not others:
        return ""
    return report.side_by_side([("served: " + served, context.rows),
                                *((summary.corpus.name, summary.rows) for summary in others)], report.LECTURE,
                               context.ladder)
