"""The Training tab: every model's loss curves, the results table and the corpus statistics."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from .. import corpus, milestones, report

TITLE = "Training"


def training_curves(weights_dir) -> pd.DataFrame:
    """Long-format loss history of every trained model, the ablation included: one row per (model, step, split).

    The plots' legends show only the milestone number (``milestone``): nine full names do not fit in one row.
    """
    rows = []
    for m in milestones.LADDER.models:
        record = report.saved_record(weights_dir, m)
        if record is None:
            continue
        key = "ablation" if m.is_ablation else str(m.number)
        rows += [{"milestone": key, "model": m.label, "step": point.step, "split": split, "loss": loss}
                 for point in record.history for split, loss in (("train", point.train_loss), ("val", point.val_loss))
                 if loss is not None]
    return pd.DataFrame(rows, columns=["milestone", "model", "step", "split", "loss"])


def corpus_statistics(summary) -> str:
    """The corpus statistics of the run that trained these weights, from its results.json."""
    if summary is None:
        return "_No results.json here, so the corpus statistics of this training run are not available._"
    lines = "\n".join(f"- {line}" for line in corpus.CorpusStats(**summary.corpus).to_text().splitlines())
    return f"Corpus statistics (clean text, both splits):\n\n{lines}"


def build(context) -> None:
    curves = training_curves(context.weights_dir)
    gr.Markdown("Loss is the cross-entropy of the next character in nats (divide by ln 2 ≈ 0.693 for bits); "
                "validation is the last 10% of the screenplay, never trained on.")
    with gr.Row():
        for split, title in (("val", "Validation loss"), ("train", "Training loss (mean since the last evaluation)")):
            gr.LinePlot(curves[curves.split == split], x="step", y="loss", color="milestone", title=title,
                        y_title="nats/char", tooltip=["model", "step", "loss"], height=360, min_width=340,
                        elem_id=f"{split}-plot")
    gr.Markdown(report.table(context.rows) if context.rows else "_No training results found._", elem_id="results")
    gr.Markdown(corpus_statistics(context.summary), elem_id="corpus-stats")
