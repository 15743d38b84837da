"""The Compare tab: what the chosen milestones write from the same prompt, streaming side by side."""

from __future__ import annotations

import html

import gradio as gr

from .. import api, hub, report
from . import endpoints

TITLE = "Compare"


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


def card_markdown(saved) -> str:
    milestone = saved.milestone
    return (f"### {milestone.label}\n<p class=\"idea\">{html.escape(milestone.idea)}</p>\n"
            f"<p class=\"stats\">{saved.model.num_params:,} parameters · {report.loss_line(saved.record)}</p>")


def notice_markdown(models, weights_dir) -> str:
    """Which milestones cannot be compared, and why; empty when all loaded."""
    missing = [m for m in models.ladder if m.number not in models.saved]
    if not missing:
        return ""
    if not models.saved:
        return (f"**No trained milestones found in `{weights_dir}`.** Train them with `python train.py`, "
                f"or point `${hub.WEIGHTS_ENV}` at a weights folder or Hub repo.")
    return "\n".join(f"- **{m.label}** is unavailable: {html.escape(models.unavailable_reason(m.number))}."
                     for m in missing)


def build(context) -> None:
    service = context.service
    models = service.models
    ladder = service.ladder
    available = sorted(models.saved)
    generate = endpoints.generate(service)

    async def write(chosen, prompt, length, temperature, top_k, seed, step, visitor: gr.Request):
        """/generate's answers, as one text per card: the ladder's, in order ("" where not chosen)."""
        async for answer in generate(chosen, prompt, length, temperature, top_k, seed, step, visitor):
            yield [answer.text(n) for n in ladder.numbers]

    def show_cards(chosen):
        return [gr.Column(visible=n in chosen) for n in ladder.numbers]

    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=300):
            chosen = gr.CheckboxGroup([(ladder[n].label, n) for n in available], value=available,
                                      label="Milestones to compare", show_select_all=True, elem_id="milestones")
            prompt = gr.Textbox(context.presentation.default_prompt, label="Prompt", lines=2, max_lines=6,
                                max_length=api.MAX_PROMPT, elem_id="prompt",
                                info="Empty is fine: the models then start a new line. Shift+Enter generates.")
            length = gr.Slider(1, api.MAX_LENGTH, api.DEFAULT_LENGTH, step=1, label="Length (characters)",
                               elem_id="length")
            temperature = gr.Slider(0, api.MAX_TEMPERATURE, api.DEFAULT_TEMPERATURE, step=0.05,
                                    label="Temperature", info="0 = always the likeliest character; higher = wilder")
            top_k = gr.Slider(0, api.MAX_TOP_K, 0, step=1, label="Top-k",
                              info="Sample only from the k likeliest characters; 0 = off")
            seed = gr.Number(0, label="Seed", precision=0, minimum=0, maximum=api.MAX_SEED,
                             info="Same seed and settings → the same text, so comparisons are fair")
            step = gr.Dropdown([("final (best)", api.FINAL),
                                *((f"as at step {s:,}", s) for s in models.snapshot_steps())],
                               value=api.FINAL, label="Weights", elem_id="weights-step",
                               info="The milestones as they were part-way through training (snapshots kept then)")
            with gr.Row():
                button = gr.Button("Generate", variant="primary", elem_id="generate")
                stop = gr.Button("Stop", variant="stop", elem_id="stop")
            gr.Examples([[e.prompt] for e in context.presentation.examples], inputs=[prompt],
                        example_labels=[e.label for e in context.presentation.examples],
                        cache_examples=False, label="Example prompts")
        with gr.Column(scale=3):
            gr.Markdown(notice_markdown(models, context.weights_dir), elem_id="notice",
                        visible=len(available) < len(ladder))
            cards, texts = [], []
            with gr.Column(elem_id="cards"):
                for m in ladder:
                    with gr.Column(visible=m.number in available, elem_classes="card", elem_id=f"card-{m.number}",
                                   min_width=0) as card:
                        if m.number in available:
                            gr.Markdown(card_markdown(models.saved[m.number]))
                        # The box grows with the text: Gradio's autoscroll does not follow streamed updates,
                        # so a fixed box would hide the newest text.
                        texts.append(gr.Textbox(label=m.label, show_label=False, container=False, lines=10,
                                                max_lines=100, interactive=False, buttons=["copy"],
                                                elem_id=f"text-{m.number}"))
                    cards.append(card)
    # Every visitor's generation at once: the engine batches them, and an async handler holds no thread.
    # The same as /generate (registered with every endpoint in ``endpoints``), one text per card.
    event = gr.on([button.click, prompt.submit], write,
                  inputs=[chosen, prompt, length, temperature, top_k, seed, step],
                  outputs=texts, api_visibility="private", preprocess=False,  # api.GenerateRequest checks raw input
                  show_progress="minimal", concurrency_limit=service.engine.capacity,
                  concurrency_id=endpoints.GENERATING)
    # Stop ends the page's generations on the server, running or still being checked (see endpoints.stop); the
    # cancel after it is Gradio's, for a request still waiting in Gradio's own queue, where no handler runs yet.
    stop.click(endpoints.stop(service), queue=False, api_visibility="private").then(None, cancels=[event])
    chosen.change(show_cards, chosen, cards, api_visibility="private", queue=False)
    context.shared.update(prompt=prompt, texts=texts)
