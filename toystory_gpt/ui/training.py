"""The Training tab: every model's loss curves, a rewind through what each milestone wrote as it learned,
the results table and the corpus statistics."""

from __future__ import annotations

import html
import time

import gradio as gr

from .. import corpus, report
from ..milestones import LADDER, Ladder
from . import chart

TITLE = "Training"
PLAY_DELAY = 0.7  # seconds per step while playing: long enough to read that the text changed

CSS = """
#rewind-cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 260px), 1fr)); gap: 10px; }
#rewind-cards .rewind-card { border: 1px solid var(--border-color-primary); border-radius: var(--radius-lg);
                             padding: 8px 10px; background: var(--background-fill-secondary); min-width: 0; }
#rewind-cards h4 { margin: 0 0 0.2rem; font-size: 0.95rem; }
#rewind-cards .loss { font-size: 0.8rem; opacity: 0.85; margin: 0 0 0.3rem; font-variant-numeric: tabular-nums; }
#rewind-cards pre { white-space: pre-wrap; word-break: break-word; font-size: 0.8rem; margin: 0; max-height: 9rem;
                    overflow-y: auto; background: none; padding: 0; }
#rewind-controls { align-items: end; }
#rewind-controls button { max-width: 8rem; }
#training-plots { display: grid !important; grid-template-columns: repeat(auto-fit, minmax(min(100%, 420px), 1fr));
                  gap: 16px; }
""" + chart.CSS


def records(weights_dir, ladder: Ladder = LADDER) -> dict:
    """What training recorded for each model of ``ladder`` that has a record, the ablation included, by folder."""
    found = ((m.folder, report.saved_record(weights_dir, m)) for m in ladder.models)
    return {folder: record for folder, record in found if record is not None}


def training_curves(weights_dir, ladder: Ladder = LADDER) -> dict[str, list[chart.Series]]:
    """Every trained model's loss history, the ablation included, per split ("val", "train"): one line each,
    named at its end by its milestone number (nine full names do not fit beside a plot) and in full in the
    legend."""
    found = records(weights_dir, ladder)
    curves = {"val": [], "train": []}
    for m in ladder.models:
        if (record := found.get(m.folder)) is None:
            continue
        key = "abl" if m.is_ablation else str(m.number)
        for split in curves:
            points = tuple((point.step, loss) for point in record.history
                           if (loss := point.val_loss if split == "val" else point.train_loss) is not None)
            curves[split].append(chart.Series(key, m.label, points))
    return curves


PLOTS = (("val", "Validation loss (text never trained on; lower is better)"),
         ("train", "Training loss (mean since the last evaluation)"))


def plots_html(curves: dict[str, list[chart.Series]], step: int) -> list[str]:
    return [chart.line_chart(curves[split], title, "nats/char", marker=step, element_id=f"{split}-chart")
            for split, title in PLOTS]


def evaluation_steps(found: dict, ladder: Ladder = LADDER) -> list[int]:
    """Every step at which some milestone was evaluated (and so wrote a sample), in order."""
    return sorted({point.step for m in ladder if (record := found.get(m.folder)) is not None
                   for point in record.history})


def slider_step(steps: list[int]) -> int:
    """The rewind slider's step between evaluations (``evaluation_steps``, at least one)."""
    return steps[1] - steps[0] if len(steps) > 1 else 1


def rewind_html(found: dict, step: int, ladder: Ladder = LADDER) -> str:
    """One card per milestone: what it wrote at ``step`` and its val loss then (its last evaluation before
    ``step`` if it stopped earlier or skipped that step); past its best step, the card says so: the weights
    the app serves are those of its best step, not its last."""
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
        elif point.step > record.best_step:
            note += (f"; past its best: {record.best_val_loss:.3f} at step {record.best_step:,}, the weights "
                     f"Compare uses")
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
    gr.Markdown("### Rewind: what each milestone wrote as it learned\n"
                f"At every evaluation, training recorded a sample: the same prompt "
                f"({html.escape(repr(context.presentation.sample_prompt))}) and seed every time. Drag the "
                "slider (or press Play) to watch the ladder learn to write. Loss is the cross-entropy of the next "
                "character in nats (lower is better; ÷ 0.693 for bits) on the last 10% of "
                f"{context.presentation.described}, never trained on. Training kept each model's weights at its best "
                "evaluation (lowest loss) and stopped once it no longer improved, so a card here may show a later, "
                "higher loss than the Compare tab's, whose final weights are that best step's. Snapshots of the "
                "weights at some steps can write anything in the Compare tab (*Weights*).")
    with gr.Row(equal_height=False, elem_id="rewind-controls"):
        rewind = gr.Slider(steps[0], last, last, step=slider_step(steps),
                           label="Training step", elem_id="rewind-step", scale=5, min_width=160)
        play = gr.Button("▶ Play", elem_id="rewind-play", scale=1, min_width=80)
        pause = gr.Button("❚❚ Pause", elem_id="rewind-pause", scale=1, min_width=80)
    cards = gr.HTML(rewind_html(found, last, ladder), elem_id="rewind")
    with gr.Row(elem_id="training-plots"):
        plots = [gr.HTML(drawn, elem_id=f"{split}-plot", min_width=0)
                 for drawn, (split, _) in zip(plots_html(curves, last), PLOTS, strict=True)]

    def show(step):
        step = int(step)
        return rewind_html(found, step, ladder), *plots_html(curves, step)

    def walk(at):
        """From the step shown (from the start if that is the last), one evaluation every PLAY_DELAY."""
        start = next((i for i, step in enumerate(steps) if step > at), 0)
        for step in steps[start:]:
            yield step
            time.sleep(PLAY_DELAY)

    rewind.change(show, rewind, [cards, *plots], api_visibility="private", show_progress="hidden")
    # No limit: it only sleeps between steps, so one visitor's Play must not make the others' wait.
    playing = play.click(walk, rewind, rewind, api_visibility="private", show_progress="hidden",
                         concurrency_limit=None)
    pause.click(None, cancels=[playing], api_visibility="private", queue=False)
    published = report.published_for(context.summary and context.summary.corpus.name)
    gr.Markdown("### Results\n" + (report.table(context.rows, published, ladder) if context.rows else
                                    "_No training results found._"), elem_id="results")
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
