"""The Compare tab: what the chosen milestones write from the same prompt, streaming side by side."""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Iterator

import gradio as gr

from .. import compare, hub, milestones, report

TITLE = "Compare"
UPDATE_INTERVAL = 0.05  # seconds between screen updates while streaming: 20 a second looks live and stays light
CONCURRENCY = 2         # generations at once: a free Space has 2 CPUs, and each generation uses one thread


CSS = """
#cards { display: grid !important; grid-template-columns: repeat(auto-fill, minmax(290px, 1fr)); gap: 14px;
         align-items: start; }
#cards > .card { min-width: 0 !important; border: 1px solid var(--border-color-primary);
                 border-radius: var(--radius-lg); padding: 10px 12px; background: var(--background-fill-secondary);
                 gap: 6px; }
.card h3 { margin: 0 !important; font-size: 1.02rem; }
.card .idea { font-size: 0.84rem; opacity: 0.85; margin: 0.15rem 0 0.3rem; line-height: 1.3; }
.card .stats { font-size: 0.8rem; font-variant-numeric: tabular-nums; opacity: 0.75; margin: 0; }
.card textarea { font-family: var(--font-mono) !important; font-size: 0.85rem !important;
                 line-height: 1.35 !important; }
#notice { border-left: 4px solid var(--color-accent); padding: 0.2rem 0.8rem; }
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


def card_markdown(saved) -> str:
    milestone = saved.milestone
    return (f"### {milestone.label}\n<p class=\"idea\">{html.escape(milestone.idea)}</p>\n"
            f"<p class=\"stats\">{saved.model.num_params:,} parameters · {report.loss_line(saved.record)}</p>")


def notice_markdown(comparison: compare.Comparison, weights_dir) -> str:
    """Which milestones cannot be compared, and why; empty when all loaded."""
    missing = [m for m in milestones.LADDER if m.number not in comparison.models]
    if not missing:
        return ""
    if not comparison.models:
        return (f"**No trained milestones found in `{weights_dir}`.** Train them with `python train.py`, "
                f"or point `${hub.WEIGHTS_ENV}` at a weights folder or Hub repo.")
    return "\n".join(f"- **{m.label}** is unavailable: {html.escape(comparison.unavailable_reason(m.number))}."
                     for m in missing)


def build(context) -> None:
    comparison = context.comparison
    ladder = milestones.LADDER
    available = sorted(comparison.models)

    def run(milestones, prompt, length, temperature, top_k, seed, step=compare.FINAL):
        """Continue the prompt with each chosen milestone, with its final weights or as it was at training step
        ``step``; returns one text per milestone of the ladder, in order ("" where not chosen)."""
        try:
            request = comparison.request(milestones, prompt, length, temperature, top_k, seed, step)
        except compare.InvalidRequest as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        if dropped := comparison.dropped(request):
            gr.Warning(f"Left out characters the models have never seen: {html.escape(shown_characters(dropped))}")
        yield from throttle(comparison.stream(request), UPDATE_INTERVAL)

    def show_cards(chosen):
        return [gr.Column(visible=n in chosen) for n in ladder.numbers]

    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=300):
            chosen = gr.CheckboxGroup([(ladder[n].label, n) for n in available], value=available,
                                      label="Milestones to compare", show_select_all=True, elem_id="milestones")
            prompt = gr.Textbox(context.presentation.default_prompt, label="Prompt", lines=2, max_lines=6,
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
            step = gr.Dropdown([("final (best)", compare.FINAL),
                                *((f"as at step {s:,}", s) for s in comparison.snapshot_steps())],
                               value=compare.FINAL, label="Weights", elem_id="weights-step",
                               info="The milestones as they were part-way through training (snapshots kept then)")
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="generate")
                stop = gr.Button("Stop", variant="stop", elem_id="stop")
            gr.Examples([[e.prompt] for e in context.presentation.examples], inputs=[prompt],
                        example_labels=[e.label for e in context.presentation.examples],
                        cache_examples=False, label="Example prompts")
        with gr.Column(scale=3):
            gr.Markdown(notice_markdown(comparison, context.weights_dir), elem_id="notice",
                        visible=len(available) < len(ladder))
            cards, texts = [], []
            with gr.Column(elem_id="cards"):
                for m in ladder:
                    with gr.Column(visible=m.number in available, elem_classes="card", elem_id=f"card-{m.number}",
                                   min_width=0) as card:
                        if m.number in available:
                            gr.Markdown(card_markdown(comparison.models[m.number]))
                        # The box grows with the text: Gradio's autoscroll does not follow streamed updates,
                        # so a fixed box would hide the newest text.
                        texts.append(gr.Textbox(label=m.label, show_label=False, container=False, lines=10,
                                                max_lines=100, interactive=False, buttons=["copy"],
                                                elem_id=f"text-{m.number}"))
                    cards.append(card)
    event = gr.on([generate.click, prompt.submit], run,
                  inputs=[chosen, prompt, length, temperature, top_k, seed, step],
                  outputs=texts, api_name="generate", preprocess=False,  # compare.validate checks raw API input
                  show_progress="minimal", concurrency_limit=CONCURRENCY)
    stop.click(None, cancels=[event])
    chosen.change(show_cards, chosen, cards, api_visibility="private", queue=False)
    context.shared.update(prompt=prompt, texts=texts)
