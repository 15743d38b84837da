"""Toy Story GPT in the browser: what the eight milestones write from the same prompt, streaming side by side.

    python app.py                                   # serves weights/ on http://127.0.0.1:7860
    TOYSTORY_WEIGHTS=/tmp/weights python app.py     # another folder, or a Hub repo id (owner/name)

On a Hugging Face Space this file runs as is: ``demo`` is built at import, from ``$TOYSTORY_WEIGHTS``
(pinned with ``$TOYSTORY_WEIGHTS_REVISION``) or the repo's own ``weights/``.
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import gradio as gr
import pandas as pd
import torch

from toystory_gpt import compare, corpus, hub, report
from toystory_gpt.milestones import ABLATION, BY_NUMBER, MILESTONES

log = logging.getLogger("toystory_gpt.app")

UPDATE_INTERVAL = 0.05  # seconds between screen updates while streaming: 20 a second looks live and stays light
CONCURRENCY = 2         # generations at once: a free Space has 2 CPUs, and each generation uses one thread
QUEUE_SIZE = 32         # more waiting visitors than this are told the app is busy instead of queueing for minutes
SESSIONS_KEPT = 1000    # visitors whose component state Gradio keeps, ~0.1 MB each: its default of 10,000 could hold ~1 GB

EXAMPLES = ["WOODY:", "BUZZ: Buzz Lightyear to Star Command.", "INT. SID'S ROOM\n", "HAMM: ", ""]
EXAMPLE_LABELS = ["WOODY:", "BUZZ: Buzz Lightyear to…", "INT. SID'S ROOM ⏎", "HAMM:", "(empty: start of a line)"]

# System fonts: nothing to fetch, and text looks native on every laptop and phone.
THEME = gr.themes.Soft(primary_hue="sky", secondary_hue="amber", neutral_hue="slate",
                       font=["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"],
                       font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"])
CSS = """
.gradio-container { max-width: 1500px !important; margin: 0 auto; }
#header h1 { margin-bottom: 0.2rem; }
#header .lede { font-size: 1.05rem; margin: 0 0 0.6rem; }
#ladder ol { columns: 2 24rem; column-gap: 2.5rem; margin: 0; padding-left: 1.4rem; }
#ladder li { break-inside: avoid; margin-bottom: 0.25rem; font-size: 0.92rem; }
#cards { display: grid !important; grid-template-columns: repeat(auto-fill, minmax(290px, 1fr)); gap: 14px; align-items: start; }
#cards > .card { min-width: 0 !important; border: 1px solid var(--border-color-primary); border-radius: var(--radius-lg);
                 padding: 10px 12px; background: var(--background-fill-secondary); gap: 6px; }
.card h3 { margin: 0 !important; font-size: 1.02rem; }
.card .idea { font-size: 0.84rem; opacity: 0.85; margin: 0.15rem 0 0.3rem; line-height: 1.3; }
.card .stats { font-size: 0.8rem; font-variant-numeric: tabular-nums; opacity: 0.75; margin: 0; }
.card textarea { font-family: var(--font-mono) !important; font-size: 0.85rem !important; line-height: 1.35 !important; }
@media (max-width: 640px) {
  #header h1 { font-size: 1.6rem; }
  #header .lede { font-size: 0.95rem; }
  #ladder li { font-size: 0.85rem; margin-bottom: 0.1rem; }
}
#notice { border-left: 4px solid var(--color-accent); padding: 0.2rem 0.8rem; }
"""


def ladder_markdown() -> str:
    items = "\n".join(f"1. **{m.name}** — {m.idea}" for m in MILESTONES)
    return f'<div id="ladder">\n\n{items}\n\n</div>'


HEADER = f"""<div id="header">

# Toy Story GPT

<p class="lede">Eight tiny character-level language models trained on the <i>Toy Story</i> (1995) screenplay,
each adding one idea of the GPT recipe to the one before. Pick a prompt and watch them write side by side.</p>

</div>

{ladder_markdown()}
"""


def throttle(updates: Iterable, interval: float) -> Iterator:
    """Pass on at most one update per ``interval`` seconds, and always the last one."""
    last_sent, pending = float("-inf"), None
    for update in updates:
        pending = update
        if time.monotonic() - last_sent >= interval:
            yield pending
            last_sent, pending = time.monotonic(), None
    if pending is not None:
        yield pending


def shown_characters(characters: str) -> str:
    """The characters for a message, space-separated; invisible ones and lone surrogates as U+XXXX.

    A lone surrogate (which JSON can carry) would otherwise break the server's event stream: it cannot be encoded.
    """
    return " ".join(c if c.isprintable() else f"U+{ord(c):04X}" for c in characters)


def card_markdown(comparison: compare.Comparison, number: int) -> str:
    milestone = BY_NUMBER[number]
    saved = comparison.models[number]
    loss = saved.info.get("best_val_loss")
    scored = f"best val loss {loss:.3f} nats/char ({loss / report.NATS_PER_BIT:.2f} bits)" if loss is not None else "no val loss recorded"
    return (f"### {milestone.label}\n<p class=\"idea\">{html.escape(milestone.idea)}</p>\n"
            f"<p class=\"stats\">{saved.model.num_params:,} parameters · {scored}</p>")


def notice_markdown(comparison: compare.Comparison, weights_dir: Path) -> str:
    """Which milestones cannot be compared, and why; empty when all eight loaded."""
    missing = [m for m in MILESTONES if m.number not in comparison.models]
    if not missing:
        return ""
    if not comparison.models:
        return (f"**No trained milestones found in `{weights_dir}`.** Train them with `python train.py`, "
                f"or point `${hub.WEIGHTS_ENV}` at a weights folder or Hub repo.")
    lines = [f"- **{m.label}** is unavailable: {html.escape(comparison.unavailable_reason(m.number))}." for m in missing]
    return "\n".join(lines)


def training_curves(comparison: compare.Comparison, weights_dir: Path) -> pd.DataFrame:
    """Long-format loss history of every trained model, the ablation included: one row per (model, step, split).

    The plots' legends show only the milestone number (``milestone``): nine full names do not fit in one row.
    """
    histories = [(str(saved.milestone.number), saved.milestone.label, saved.info.get("history", []))
                 for saved in comparison.models.values()]
    if (ablation := report.saved_info(weights_dir, ABLATION)) is not None:
        histories.append(("ablation", ABLATION.label, ablation.get("history", [])))
    rows = [{"milestone": key, "model": label, "step": point["step"], "split": split, "loss": point[f"{split}_loss"]}
            for key, label, history in histories for point in history for split in ("train", "val")
            if point[f"{split}_loss"] is not None]
    return pd.DataFrame(rows, columns=["milestone", "model", "step", "split", "loss"])


def corpus_statistics(comparison: compare.Comparison) -> str:
    """Milestone 1's corpus statistics, as training recorded them in its history.json."""
    if 1 not in comparison.models:
        return "_Milestone 1 is not loaded, so its corpus statistics are not available._"
    try:
        stats = corpus.CorpusStats(**comparison.models[1].info["corpus_stats"])
    except (KeyError, TypeError):
        return "_Milestone 1's history.json holds no corpus statistics._"
    lines = "\n".join(f"- {line}" for line in stats.to_text().splitlines())
    return f"Corpus statistics (clean text, both splits):\n\n{lines}"


# Why a rung can score worse than the one below it; shown only when it did.
WHY_WORSE = {
    3: "Attention must learn from scratch what the bigram table stores directly (which character follows which); "
       "until it has trained long enough to use the wider context, it trails the table.",
    4: "Four heads of 32 dimensions each match queries and keys in a narrower space than one head of 128, for the "
       "same parameters; with no feed-forward layer yet to compute on what the heads gather, the split buys little.",
    5: "The feed-forward layer sits in the only path from input to output (no residual yet), "
       "so the gradient must pass through one more transformation, which makes the model harder to train.",
    6: "Four blocks take longer per step, and with the same step budget a deeper model may not have converged.",
    7: "At only four blocks the residual stream stays well scaled without it, so normalization has little to fix "
       "here; its benefit grows with depth.",
    8: "Dropout trades fit for generalization: it only pays once a model over-fits.",
}


def results_markdown(rows: list[dict]) -> str:
    """What each trained milestone scored against the one below it; the worse steps get their likely reason."""
    by_number = {r["milestone"]: r for r in rows}  # 0 is the ablation
    parts = []
    for m in MILESTONES:
        r = by_number.get(m.number)
        if r is None:
            parts.append(f"- **{m.label}** — {m.idea} _Not trained yet._")
            continue
        line = f"- **{m.label}** — {m.idea} Best val loss **{r['val_loss']:.3f}** nats/char ({r['val_bits']:.2f} bits/char)"
        previous = by_number.get(m.number - 1) if m.number > 1 else None
        delta = r["val_loss"] - previous["val_loss"] if previous else 0.0
        if previous and abs(delta) < 0.0005:
            line += f", the same as milestone {m.number - 1}."
        elif previous:
            line += f", {abs(delta):.3f} {'worse' if delta > 0 else 'better'} than milestone {m.number - 1}."
        else:
            line += "."
        if delta >= 0.0005:
            line += f" **A step back:** {WHY_WORSE[m.number]}"
            if m.number == 8:
                line += (" Milestone 7 was still improving at its last step, so it was not over-fitting yet."
                         if previous["best_step"] == previous["steps"] else
                         " Milestone 7 peaked before its last step, so there was over-fitting to fight.")
        parts.append(line)
        if m.number == 6 and 0 in by_number and 5 in by_number:
            ablation, one_block = by_number[0]["val_loss"], by_number[5]["val_loss"]
            parts.append(f"  - The ablation, the same four blocks *without* residual connections, scored {ablation:.3f}, "
                         f"against {one_block:.3f} for one block (milestone 5) and {r['val_loss']:.3f} with residuals"
                         + (": depth alone does not pay; residual connections are what let the gradient reach the lower blocks."
                            if ablation > one_block else "."))
    return "\n".join(parts)


ABOUT = """
## How to run it yourself

```bash
# in a clone of this repository, with Python 3.11
python -m venv .venv && . .venv/bin/activate
pip install -r requirements.txt
python app.py                      # this app, on http://127.0.0.1:7860
python -m toystory_gpt generate --milestones 2,5,8 --prompt "WOODY:" --seed 0   # the same from a terminal
python train.py                    # retrain the ladder into weights/ (CPU is enough)
```

Set `TOYSTORY_WEIGHTS` to serve another weights folder, or a Hugging Face Hub repo id
(pinned with `TOYSTORY_WEIGHTS_REVISION`).

## Data and licence

The models are trained on the final-draft screenplay of *Toy Story* (1995), written by Joss Whedon,
Andrew Stanton, Joel Cohen and Alec Sokolow; the text is copyrighted by its owners. It is **not**
included here: `train.py` downloads it from a public copy (pinned URL, checked SHA-256) or reads a
local file you give it. What the models write imitates that text; it is shown for teaching only.
"""


def build_app(weights_dir: Path) -> gr.Blocks:
    """Load every milestone in ``weights_dir`` and lay out the app; nothing is generated until asked."""
    torch.set_num_threads(1)  # sampling is many tiny matmuls: one thread per request is fastest, and leaves cores for others
    comparison = compare.Comparison.from_folder(weights_dir)
    comparison.warm_up()
    for saved in comparison.models.values():
        log.info("loaded %s: %s parameters, from %s", saved.milestone.label, f"{saved.model.num_params:,}", saved.folder)
    for number in sorted(set(BY_NUMBER) - set(comparison.models)):
        log.warning("unavailable %s: %s", BY_NUMBER[number].label, comparison.unavailable_reason(number))
    available = sorted(comparison.models)
    log.info("serving %d of %d milestones from %s", len(available), len(MILESTONES), weights_dir)
    rows = report.collect_rows(weights_dir)

    def run(milestones, prompt, length, temperature, top_k, seed):
        """Continue the prompt with each chosen milestone; returns eight texts in ladder order ("" where not chosen)."""
        try:
            request = comparison.request(milestones, prompt, length, temperature, top_k, seed)
        except compare.InvalidRequest as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        if dropped := comparison.dropped(request):
            gr.Warning(f"Left out characters the models have never seen: {html.escape(shown_characters(dropped))}")
        yield from throttle(comparison.stream(request), UPDATE_INTERVAL)

    def show_cards(milestones):
        return [gr.Column(visible=n in milestones) for n in BY_NUMBER]

    with gr.Blocks(title="Toy Story GPT") as demo:
        gr.Markdown(HEADER)
        with gr.Tab("Compare"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=1, min_width=300):
                    milestones = gr.CheckboxGroup([(BY_NUMBER[n].label, n) for n in available], value=available,
                                                  label="Milestones to compare", show_select_all=True, elem_id="milestones")
                    prompt = gr.Textbox(compare.DEFAULTS["prompt"], label="Prompt", lines=2, max_lines=6,
                                        max_length=compare.MAX_PROMPT, elem_id="prompt",
                                        info="Empty is fine: the models then start a new line. Shift+Enter generates.")
                    length = gr.Slider(1, compare.MAX_LENGTH, compare.DEFAULTS["length"], step=1, label="Length (characters)",
                                       elem_id="length")
                    temperature = gr.Slider(0, compare.MAX_TEMPERATURE, compare.DEFAULTS["temperature"], step=0.05,
                                            label="Temperature", info="0 = always the likeliest character; higher = wilder")
                    top_k = gr.Slider(0, compare.MAX_TOP_K, compare.DEFAULTS["top_k"], step=1, label="Top-k",
                                      info="Sample only from the k likeliest characters; 0 = off")
                    seed = gr.Number(compare.DEFAULTS["seed"], label="Seed", precision=0, minimum=0, maximum=compare.MAX_SEED,
                                     info="Same seed and settings → the same text, so comparisons are fair")
                    with gr.Row():
                        generate = gr.Button("Generate", variant="primary", elem_id="generate")
                        stop = gr.Button("Stop", variant="stop", elem_id="stop")
                    gr.Examples([[e] for e in EXAMPLES], inputs=[prompt], example_labels=EXAMPLE_LABELS,
                                cache_examples=False, label="Example prompts")
                with gr.Column(scale=3):
                    gr.Markdown(notice_markdown(comparison, weights_dir), elem_id="notice",
                                visible=len(available) < len(MILESTONES))
                    cards, texts = [], []
                    with gr.Column(elem_id="cards"):
                        for m in MILESTONES:
                            with gr.Column(visible=m.number in available, elem_classes="card", elem_id=f"card-{m.number}",
                                           min_width=0) as card:
                                if m.number in available:
                                    gr.Markdown(card_markdown(comparison, m.number))
                                # The box grows with the text (to ~2,000 characters): Gradio's autoscroll
                                # does not follow streamed updates, so a fixed box would hide the newest text.
                                texts.append(gr.Textbox(label=m.label, show_label=False, container=False, lines=10,
                                                        max_lines=100, interactive=False, buttons=["copy"],
                                                        elem_id=f"text-{m.number}"))
                            cards.append(card)
            event = gr.on([generate.click, prompt.submit], run, inputs=[milestones, prompt, length, temperature, top_k, seed],
                          outputs=texts, api_name="generate", preprocess=False,  # compare.validate checks raw API input
                          show_progress="minimal", concurrency_limit=CONCURRENCY)
            stop.click(None, cancels=[event])
            milestones.change(show_cards, milestones, cards, api_visibility="private", queue=False)
        with gr.Tab("Training", elem_id="training-tab"):
            curves = training_curves(comparison, weights_dir)
            gr.Markdown("Loss is the cross-entropy of the next character in nats (divide by ln 2 ≈ 0.693 for bits); "
                        "validation is the last 10% of the screenplay, never trained on.")
            with gr.Row():
                for split, title in (("val", "Validation loss"), ("train", "Training loss (mean since the last evaluation)")):
                    gr.LinePlot(curves[curves.split == split], x="step", y="loss", color="milestone", title=title,
                                y_title="nats/char", tooltip=["model", "step", "loss"], height=360, min_width=340,
                                elem_id=f"{split}-plot")
            gr.Markdown(report.table(rows) if rows else "_No training results found._", elem_id="results")
            gr.Markdown(corpus_statistics(comparison), elem_id="corpus-stats")
        with gr.Tab("About"):
            gr.Markdown("## The ladder, and what each step did\n\n" + results_markdown(rows) + "\n" + ABOUT)
    demo.queue(max_size=QUEUE_SIZE)
    return demo


def launch(app: gr.Blocks, **server):
    """Serve ``app`` with this project's look (Gradio 6 takes theme and CSS at launch), keeping SESSIONS_KEPT sessions."""
    return app.launch(**{"theme": THEME, "css": CSS, "state_session_capacity": SESSIONS_KEPT, **server})


logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
log.setLevel(logging.INFO)
demo = build_app(hub.resolve())

if __name__ == "__main__":
    launch(demo)
