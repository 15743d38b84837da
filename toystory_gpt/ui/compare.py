"""The Compare tab: what the chosen milestones write from the same prompt, streaming side by side."""

from __future__ import annotations

import contextlib
import html
import math

import gradio as gr

from .. import api, hub, report
from . import endpoints, your_text

TITLE = "Compare"


CSS = """
/* Prompt and Generate first; the cards beside them (below them on a phone); the settings under the prompt (after
   the cards on a phone). Grid areas, so one order of components serves both. */
#compare-layout { display: grid !important; grid-template-columns: minmax(260px, 1fr) minmax(0, 3fr);
                  grid-template-rows: auto 1fr; grid-template-areas: "controls results" "settings results";
                  gap: 12px 16px; align-items: start; }
#compare-controls { grid-area: controls; }
#compare-results { grid-area: results; }
#compare-settings { grid-area: settings; }
@media (max-width: 800px) {
  #compare-layout { grid-template-columns: minmax(0, 1fr); grid-template-rows: auto;
                    grid-template-areas: "controls" "results" "settings"; }
}
#run-status p { margin: 0; font-size: 0.9rem; }
#cards { display: grid !important; grid-template-columns: repeat(auto-fill, minmax(min(100%, 290px), 1fr));
         gap: 14px; align-items: start; }
#cards > .card { min-width: 0 !important; border: 1px solid var(--border-color-primary);
                 border-radius: var(--radius-lg); padding: 10px 12px; background: var(--background-fill-secondary);
                 gap: 6px; contain: layout; }
.card h3 { margin: 0 !important; font-size: 1.02rem; }
.card .idea { font-size: 0.84rem; opacity: 0.85; margin: 0.15rem 0 0.3rem; line-height: 1.3; }
.card .stats { font-size: 0.8rem; font-variant-numeric: tabular-nums; margin: 0; line-height: 1.35; }
.card .stats .quiet { opacity: 0.75; }
.card textarea { font-family: var(--font-mono) !important; font-size: 0.85rem !important;
                 line-height: 1.35 !important; }
#notice { border-left: 4px solid var(--color-accent); padding: 0.2rem 0.8rem; }
/* On a phone the cards stack: shorter boxes, and the ideas (folded in the header) left out, bring card 8 closer */
@media (max-width: 640px) {
  .card .idea { display: none; }
  .card textarea { height: 9.5rem !important; }
}
"""


# The fixed-height text boxes follow the newest text unless their reader has scrolled up (Gradio's own autoscroll
# does not follow streamed updates). Polled: a streamed value is set on the element, which fires no event.
HEAD = """<script>
(() => {
  const unpinned = new WeakSet();
  document.addEventListener('scroll', (event) => {
    const box = event.target;
    if (!(box instanceof HTMLTextAreaElement) || !box.closest('.follow')) return;
    if (box.scrollTop + box.clientHeight >= box.scrollHeight - 24) unpinned.delete(box); else unpinned.add(box);
  }, true);
  setInterval(() => {
    for (const box of document.querySelectorAll('.follow textarea')) {
      if (!unpinned.has(box) && box.scrollTop + box.clientHeight < box.scrollHeight - 1) {
        box.scrollTop = box.scrollHeight;
      }
    }
  }, 200);
})();
</script>"""


def loss_words(record, step: int | None) -> str:
    """The card's line on its weights' validation loss: the final weights' (the best evaluation, which is what
    training kept) or, at a snapshot's ``step``, that evaluation's; in nats, and in plain words."""
    if record is None:
        return "no validation loss recorded"
    if step is None:
        loss = record.best_val_loss
        when = (f"its best evaluation, step {record.best_step:,} of {record.steps:,}: the weights kept"
                if record.best_step != record.steps else f"at its last step, {record.steps:,}")
    else:
        point = next((point for point in record.history if point.step == step), None)
        if point is None:
            return f"no evaluation recorded at step {step:,}"
        loss, when = point.val_loss, f"these weights, at step {step:,}"
    title = (f"Validation loss: the mean cross-entropy of the next character on text it never trained on, "
             f"{loss:.3f} nats ({loss / report.NATS_PER_BIT:.2f} bits) per character. e^loss = {math.exp(loss):.1f}: "
             f"as unsure as a fair pick among that many characters.")
    return (f'<span title="{html.escape(title)}">validation loss <b class="loss">{loss:.3f}</b> (lower is better: '
            f'as unsure as a pick among {math.exp(loss):.1f} characters)</span> · <span class="quiet">{when}'
            f'</span>')


def card_markdown(saved, step: int | None = None) -> str:
    milestone = saved.milestone
    return (f"### {milestone.label}\n<p class=\"idea\">{html.escape(milestone.idea)}</p>\n"
            f"<p class=\"stats\"><span class=\"quiet\">{saved.model.num_params:,} parameters</span> · "
            f"{loss_words(saved.record, step)}</p>")


def run_status(numbers, chosen, length, texts) -> str:
    """What the last generation did, under the buttons: all written, or where Stop left it (``texts``: one per
    milestone ``numbers``)."""
    written = [len(text or "") for number, text in zip(numbers, texts) if number in (chosen or [])]
    if not written or not isinstance(length, (int, float)):
        return ""
    length, fewest, most = int(length), min(written), max(written)
    if fewest >= length:
        return f"Wrote {length:,} characters with each of {len(written)} milestones."
    at = f"{fewest:,}" if fewest == most else f"{fewest:,}–{most:,}"
    return f"**Stopped at {at} of {length:,} characters.**"


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


def step_choices(models) -> list[tuple[str, int | str]]:
    """The Weights menu: the final weights, then every training step at which some milestone kept a snapshot."""
    return [("final (each one's best)", api.FINAL), *((f"as at step {s:,}", s) for s in models.snapshot_steps())]


def build(context) -> None:
    service = context.service
    models = service.models
    ladder = service.ladder
    available = sorted(models.saved)
    generate = endpoints.generate(service)

    async def write(chosen, prompt, length, temperature, top_k, seed, step, ladder_name, visitor: gr.Request):
        """/generate's answers, as one text per card: the ladder's, in order ("" where not chosen)."""
        # Gradio closes only this generator (a closed tab): closing it closes /generate's, which frees the share.
        answer = None
        async with contextlib.aclosing(generate(chosen, prompt, length, temperature, top_k, seed, step,
                                                ladder_name, visitor)) as answers:
            async for answer in answers:
                yield [answer.text(n) for n in ladder.numbers]
        if answer is None:  # stopped while being checked: it wrote nothing, and the line under the buttons says so
            yield [""] * len(ladder)

    def show_cards(chosen):
        return [gr.Column(visible=n in chosen) for n in ladder.numbers]

    with gr.Row(equal_height=False, elem_id="compare-layout"):
        with gr.Column(min_width=0, elem_id="compare-controls"):
            ladder_switch = your_text.switch(context)
            # No max_length: the browser would cut a longer paste without a word; the server says the limit.
            prompt = gr.Textbox(context.presentation.default_prompt, label="Prompt", lines=2, max_lines=6,
                                elem_id="prompt",
                                info="Empty is fine: the models then start a new line. Shift+Enter generates.")
            with gr.Row():
                button = gr.Button("Generate", variant="primary", elem_id="generate", min_width=0)
                stop = gr.Button("Stop", variant="stop", elem_id="stop", min_width=0)
            status = gr.Markdown("", elem_id="run-status")
            gr.Examples([[e.prompt] for e in context.presentation.examples], inputs=[prompt],
                        example_labels=[e.label for e in context.presentation.examples],
                        cache_examples=False, label="Example prompts")
        with gr.Column(min_width=0, elem_id="compare-results"):
            gr.Markdown(notice_markdown(models, context.weights_dir), elem_id="notice",
                        visible=len(available) < len(ladder))
            cards, texts, stats = [], [], []
            with gr.Column(elem_id="cards"):
                for m in ladder:
                    with gr.Column(visible=m.number in available, elem_classes="card", elem_id=f"card-{m.number}",
                                   min_width=0) as card:
                        if m.number in available:
                            stats.append(gr.Markdown(card_markdown(models.saved[m.number]),
                                                     elem_id=f"card-stats-{m.number}"))
                        # A box of fixed height (lines = max_lines): a growing one is measured and resized at
                        # every streamed update, which lays out the whole page each time; ``follow`` keeps the
                        # newest text in view instead.
                        texts.append(gr.Textbox(label=m.label, show_label=False, container=False, lines=10,
                                                max_lines=10, interactive=False, buttons=["copy"],
                                                elem_id=f"text-{m.number}", elem_classes="follow"))
                    cards.append(card)
        with gr.Column(min_width=0, elem_id="compare-settings"):
            length = gr.Slider(1, api.MAX_LENGTH, api.DEFAULT_LENGTH, step=1, label="Length (characters)",
                               elem_id="length")
            temperature = gr.Slider(0, api.MAX_TEMPERATURE, api.DEFAULT_TEMPERATURE, step=0.05,
                                    label="Temperature", info="0 = always the likeliest character; higher = wilder")
            top_k = gr.Slider(0, api.MAX_TOP_K, 0, step=1, label="Top-k",
                              info="Sample only from the k likeliest characters; 0 = off")
            seed = gr.Number(0, label="Seed", precision=0, minimum=0, maximum=api.MAX_SEED, elem_id="seed",
                             info="Same seed and settings → the same text, so comparisons are fair")
            step = gr.Dropdown(step_choices(models), value=api.FINAL, label="Weights", elem_id="weights-step",
                               info="The milestones as they were part-way through training (snapshots kept then); "
                                    "each card's loss is that of the weights it writes with")
            chosen = gr.CheckboxGroup([(ladder[n].label, n) for n in available], value=available,
                                      label="Milestones to compare", show_select_all=True, elem_id="milestones")
    # Every visitor's generation at once: the engine batches them, and an async handler holds no thread.
    # The same as /generate (registered with every endpoint in ``endpoints``), one text per card.
    starts = [button.click, prompt.submit]
    event = gr.on(starts, write,
                  inputs=[chosen, prompt, length, temperature, top_k, seed, step, ladder_switch],
                  outputs=texts, api_visibility="private", preprocess=False,  # api.GenerateRequest checks raw input
                  show_progress="minimal", concurrency_limit=service.engine.capacity)
    # Written or stopped, the line under the buttons says how far it got (cleared, in the page, at each start).
    # On success only: chained with .then, a request stopped while still being checked left the cards pending.
    gr.on(starts, None, None, status, js="() => ''", api_visibility="private", queue=False)
    event.success(lambda chosen, length, *texts: run_status(ladder.numbers, chosen, length, texts),
                  [chosen, length, *texts], status, api_visibility="private", queue=False, show_progress="hidden")
    # Stop ends the page's generations on the server, running or still being checked (see endpoints.stop); the
    # cancel after it is Gradio's, for a request still waiting in Gradio's own queue, where no handler runs yet.
    stop.click(endpoints.stop(service), queue=False, api_visibility="private").then(None, cancels=[event])
    chosen.change(show_cards, chosen, cards, api_visibility="private", queue=False)

    def card_stats(at, ladder_name):
        """Each card's line for the weights it writes with: the app's ladder's, or the visitor's (where they
        trained that milestone)."""
        with endpoints.answered():
            saved = service.on(ladder_name).models.saved
        return [card_markdown(saved[n], None if at == api.FINAL else int(at)) if n in saved else ""
                for n in available]

    def switched(ladder_name):
        """The app's ladder or the visitor's: its milestones chosen, its prompt, its snapshots and its cards."""
        with endpoints.answered():
            shown = service.on(ladder_name).models
        presentation = next(iter(shown.saved.values())).record.corpus.presentation if shown.saved else None
        return (gr.CheckboxGroup(value=sorted(shown.saved)),
                presentation.default_prompt if presentation else gr.skip(),
                gr.Dropdown(choices=step_choices(shown), value=api.FINAL), *card_stats(api.FINAL, ladder_name))

    step.change(card_stats, [step, ladder_switch], stats, api_visibility="private", queue=False,
                show_progress="hidden")
    ladder_switch.change(switched, ladder_switch, [chosen, prompt, step, *stats], api_visibility="private")
    context.shared.update(prompt=prompt, texts=texts)
