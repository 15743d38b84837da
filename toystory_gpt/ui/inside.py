"""The Inside tab's layout: where each model is surprised by a text, what each idea saved, what it expects next,
where it looks and what each block adds. (Its API endpoints are registered with the others in ``endpoints``.)

Thin on purpose: the numbers come from ``toystory_gpt.analysis``, what they look like from ``inside_view``; here
are the components, and the handlers that run the models when asked (never while the page is laid out).
"""

from __future__ import annotations

import dataclasses
import functools
import html
from dataclasses import dataclass

import gradio as gr

from .. import analysis, api
from ..milestones import ABLATION
from . import endpoints, your_text
from . import inside_view as view
from .endpoints import shown_characters

TITLE = "Inside"
DEFAULT_TEXT = "The little robot rolled under the bed and waited for the lights to go out."

# Delegated, so it survives every re-render of the rows; the selection moves at once, before the server answers.
# The keyboard: each row has one Tab stop (its chosen character); the arrow keys move along and across rows, Enter
# or Space chooses. A focused or tapped character's numbers go to the readout line (no hover on a phone). After a
# choice the views at that character scroll into view if they are below the screen's lower part.
CLICK_JS = """
const readout = (span) => {
  const line = element.querySelector('.ins-readout');
  if (line) line.textContent = span.title.replaceAll('\\n', ' · ');
};
const choose = (span) => {
  element.querySelectorAll('.ins-sel').forEach(s => { s.classList.remove('ins-sel'); s.tabIndex = -1; });
  element.querySelectorAll(`[data-pos="${span.dataset.pos}"]`).forEach(s => { s.classList.add('ins-sel');
                                                                              s.tabIndex = 0; });
  readout(span);
  trigger('click', {pos: Number(span.dataset.pos)});
  const focus = document.querySelector('#inside-focus');
  if (focus && focus.getBoundingClientRect().top > 0.7 * window.innerHeight) {
    focus.scrollIntoView({behavior: 'smooth', block: 'start'});
  }
};
element.addEventListener('click', (event) => {
  const span = event.target.closest('[data-pos]');
  if (span) choose(span);
});
element.addEventListener('focusin', (event) => {
  const span = event.target.closest('[data-pos]');
  if (span) readout(span);
});
element.addEventListener('keydown', (event) => {
  const span = event.target.closest('[data-pos]');
  if (!span) return;
  if (event.key === 'Enter' || event.key === ' ') { event.preventDefault(); choose(span); return; }
  const row = span.closest('.ins-row'), rows = [...element.querySelectorAll('.ins-row')];
  let next = null;
  if (event.key === 'ArrowLeft') next = span.previousElementSibling;
  if (event.key === 'ArrowRight') next = span.nextElementSibling;
  if (event.key === 'ArrowUp' || event.key === 'ArrowDown') {
    const other = rows[rows.indexOf(row) + (event.key === 'ArrowUp' ? -1 : 1)];
    next = other && other.querySelector(`[data-pos="${span.dataset.pos}"]`);
  }
  if (next && next.dataset.pos !== undefined) {
    event.preventDefault();
    span.tabIndex = -1; next.tabIndex = 0; next.focus();
  }
});
"""

# The attention rows open scrolled to their end, where the outlined last character read is: when drawn, and when
# first shown (a hidden tab has no width to scroll).
END_JS = """
const toEnd = () => element.querySelectorAll('.ins-end').forEach(r => { r.scrollLeft = r.scrollWidth; });
new MutationObserver(toEnd).observe(element, {childList: true, subtree: true});
new ResizeObserver(toEnd).observe(element);
"""

CSS = """
.ins-legend { font-size: 0.85rem; display: flex; flex-wrap: wrap; align-items: center; gap: 0.4rem 0.8rem;
              margin-bottom: 0.4rem; }
.ins-scale { display: inline-block; width: 160px; height: 0.9rem; border: 1px solid var(--border-color-primary);
             vertical-align: middle; background: linear-gradient(to right, #ffffff, #fbbf24, #dc2626); }
/* contain: the rows scroll sideways together instead of widening the page on a phone */
.ins-rows { overflow-x: auto; contain: inline-size; border: 1px solid var(--border-color-primary);
            border-radius: var(--radius-lg); font-family: var(--font-mono); font-size: 0.9rem; line-height: 1.6; }
.ins-row { display: flex; width: max-content; min-width: 100%; align-items: baseline; }
.ins-row:nth-child(even) { background: var(--background-fill-secondary); }
.ins-label { position: sticky; left: 0; z-index: 1; min-width: 11rem; max-width: 11rem; padding: 0 0.5rem;
             background: var(--background-fill-primary); border-right: 1px solid var(--border-color-primary);
             font-family: var(--font); font-size: 0.8rem; white-space: nowrap; overflow: hidden;
             text-overflow: ellipsis; }
.ins-chars { white-space: pre; padding: 0 0.4rem; flex: 1; }
.ins-chars span { color: #111; }
.ins-chars span[data-pos] { cursor: pointer; }
.ins-chars span.ins-hot { color: #fff; }
.ins-chars span.ins-ws { opacity: 0.55; }
.ins-chars span.ins-sel { outline: 2px solid #0284c7; outline-offset: -1px; }
.ins-chars span.ins-query { outline: 2px solid #0284c7; outline-offset: -1px; }
.ins-bpc { position: sticky; right: 0; padding: 0 0.5rem; background: var(--background-fill-primary);
           border-left: 1px solid var(--border-color-primary); font-family: var(--font); font-size: 0.8rem;
           font-variant-numeric: tabular-nums; white-space: nowrap; }
.ins-narrow { display: none; }
/* the thin rows: colour strips under their model's row, the characters kept (invisible) so the columns align */
.ins-gain .ins-chars, .ins-lens .ins-chars { line-height: 0.5rem; font-size: 0.9rem; }
.ins-gain .ins-chars span, .ins-lens .ins-chars span { color: transparent; }
.ins-gain .ins-label, .ins-lens .ins-label, .ins-gain .ins-bpc, .ins-lens .ins-bpc { font-size: 0.62rem;
  line-height: 0.8rem; opacity: 0.85; }
.ins-row.ins-gain, .ins-row.ins-lens { align-items: center; }
.ins-ablation .ins-label { font-style: italic; }
.ins-row.ins-surprise.ins-ablation { border-top: 1px dashed var(--border-color-primary); }
.ins-gain-scale { background: linear-gradient(to right, #9333ea, #ffffff, #16a34a); }
@media (max-width: 640px) {
  .ins-label { min-width: 2.2rem; max-width: 2.2rem; padding: 0 0.3rem; }
  .ins-wide { display: none; }
  .ins-narrow { display: inline; }
  .ins-lens-card td.ins-guesses { white-space: normal; }
}
.ins-note { font-family: var(--font); font-size: 0.85rem; opacity: 0.8; padding: 0 0.4rem; white-space: nowrap; }
.ins-heading { font-size: 0.95rem; margin: 0.2rem 0 0.5rem; }
.ins-cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); gap: 10px; }
.ins-card { border: 1px solid var(--border-color-primary); border-radius: var(--radius-lg); padding: 6px 8px;
            background: var(--background-fill-secondary); font-size: 0.8rem; }
.ins-card h4 { margin: 0 0 0.2rem; font-size: 0.85rem; }
.ins-card table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; margin: 0;
                 border: none !important; }
.ins-card tr, .ins-card th, .ins-card td { border: none !important; padding: 1px 2px !important;
                                           background: none !important; }
.ins-card th { font-weight: normal; opacity: 0.7; text-align: left; font-size: 0.72rem; }
.ins-card td.ins-ch { font-family: var(--font-mono); width: 2.2rem; white-space: pre; }
.ins-bar { position: relative; height: 1.05rem; background: var(--background-fill-primary); }
.ins-bar div { position: absolute; inset: 0 auto 0 0; }
.ins-bar span { position: relative; padding-left: 3px; font-size: 0.72rem; }
.ins-raw div { background: #93c5fd; }
.ins-smp div { background: #f59e0b; }
.ins-cut { opacity: 0.35; }
.ins-true td.ins-ch { font-weight: bold; color: #15803d; }
.ins-truth { margin: 0 0 0.25rem; opacity: 0.85; }
.ins-lens-card tr.ins-first td { font-weight: bold; color: #15803d; }
#lens-cards .ins-cards { grid-template-columns: repeat(auto-fill, minmax(min(100%, 330px), 1fr)); }
.ins-lens-card { min-width: 0; overflow-x: auto; }  /* a long row scrolls in its card, never widens the page */
.ins-lens-card td.ins-guesses { font-family: var(--font-mono); font-size: 0.72rem; white-space: nowrap; }
.ins-map img { image-rendering: pixelated; max-width: 100%; border: 1px solid var(--border-color-primary); }
.ins-map p { font-size: 0.8rem; opacity: 0.85; margin: 0.3rem 0 0; }
.ins-map-top { font-size: 0.75rem; opacity: 0.85; margin-left: 1.4rem; display: flex; gap: 0.6rem; }
.ins-map-body { display: flex; align-items: flex-start; }
.ins-map-side { writing-mode: vertical-rl; font-size: 0.75rem; opacity: 0.85; width: 1.4rem; }
.ins-attention-scale { width: 100px; background: linear-gradient(to right, rgba(2,132,199,0), rgba(2,132,199,1)); }
#attention-rows .ins-note { white-space: normal; }
.ins-notes { font-size: 0.8rem; opacity: 0.85; margin: 0.3rem 0 0; }
.ins-readout { font-size: 0.85rem; margin: 0.3rem 0 0; min-height: 1.3rem; font-variant-numeric: tabular-nums; }
.ins-chars span[data-pos]:focus-visible { outline: 3px solid #f59e0b; outline-offset: -1px; }
/* a finger needs more than a mouse: taller rows where the pointer is coarse */
@media (pointer: coarse) { .ins-surprise .ins-chars { line-height: 2.1; font-size: 1rem; } }
"""


@dataclass(frozen=True)
class Selection:
    """What the tab shows (its ``gr.State``): the request, what the models read of its text, and the clicked slot."""
    request: api.InsideRequest
    read: analysis.Request
    slot: int


def position_views(service: api.Service, selection: Selection, layer: str, head: str,
                   heat) -> tuple[str, str, str, str]:
    """Bars, attention rows, heatmap and lens at the selected slot: one forward pass per model, no rescoring."""
    with endpoints.answered():
        service = service.on(selection.request.ladder)  # the app's ladder, or the visitor's
    models, req, ladder = service.models.readable, selection.read, service.ladder
    slot, looks = service.look(req, selection.slot)
    heat_look = next((seen for seen in looks if seen.milestone == heat), None)
    return (view.bars_html(models, req, slot, looks), view.attention_html(models, req, looks, layer, head),
            view.heatmap_html(models, req, heat_look, layer, head, ladder),
            view.lens_html(models, req, slot, looks, ladder))


def read(service: api.Service, request: api.InsideRequest, reading: analysis.Reading, layer: str, head: str, heat,
         shown: Selection | None = None):
    """The rows of what ``service.inside`` read for ``request``, and the views at the slot ``shown`` selected if it
    read the same text (rows turned on or off), else at the last character."""
    with endpoints.answered():  # gone since ``service.inside`` found it (dropped, expired): a message
        service = service.on(request.ladder)  # the app's ladder, or the visitor's
    req = reading.request
    if req.dropped:
        gr.Warning(f"Left out characters the models have never seen: {html.escape(shown_characters(req.dropped))}")
    kept = shown is not None and shown.read.text == req.text and 0 <= shown.slot < len(req.text)
    selection = Selection(request, req, shown.slot if kept else len(req.text) - 1)
    rows = view.rows_html(view.rows(service.models.readable, reading), selection.slot, request.gains)
    return rows, selection, *position_views(service, selection, layer, head, heat)


def build(context) -> None:
    service = context.service
    models = service.models.readable  # the milestones in ladder order, then the ablation if it loaded
    ladder = service.ladder
    available = list(models)
    with_attention = [key for key in available if models[key].model.config.has_attention]
    configs = [models[key].model.config for key in with_attention]
    layer_choices = [view.MEAN, *map(str, range(1, max((c.n_layer for c in configs), default=0) + 1))]
    head_choices = [view.MEAN, *map(str, range(1, max((c.n_head for c in configs), default=0) + 1))]

    def look(ladder_name, text, chosen, gains, lens, temperature, top_k, layer, head, heat, shown=None):
        """The tab's inputs as a request, read (by the app's ladder or the visitor's). One that cannot be read is
        said in a message beside the results, which stay: an error would mark them all."""
        try:
            request = service.parse(api.InsideRequest, text=text, milestones=chosen, gains=gains, lens=lens,
                                    temperature=temperature, top_k=top_k, ladder=ladder_name)
            reading = service.inside(request)
        except (api.InvalidRequest, analysis.Unanswerable) as exc:
            gr.Warning(html.escape(str(exc)))
            return (gr.skip(),) * 6
        return read(service, request, reading, layer, head, heat, shown)

    def knobs_set(selection: Selection, temperature, top_k, slot=None) -> Selection:
        """The selection with the bars' knobs (checked as any request's) and, if given, another slot."""
        with endpoints.answered():
            request = service.parse(api.InsideRequest, **{**selection.request.model_dump(),
                                                          "temperature": temperature, "top_k": top_k})
            slot = selection.slot if slot is None else analysis.slot_of(selection.read, slot)
        read_now = dataclasses.replace(selection.read, temperature=request.temperature, top_k=request.top_k)
        return Selection(request, read_now, slot)

    def pick(selection, temperature, top_k, layer, head, heat, evt: gr.EventData):
        """A click on a character: only the views at that slot are computed, the rows stay as they are."""
        selection = knobs_set(selection, temperature, top_k, evt.pos)  # what CLICK_JS's trigger sent
        return selection, *position_views(service, selection, layer, head, heat)

    def redraw(selection, temperature, top_k, layer, head, heat):
        """A changed knob or selector: the same slot drawn again."""
        selection = knobs_set(selection, temperature, top_k)
        return selection, *position_views(service, selection, layer, head, heat)

    def switched(ladder_name):
        """The app's ladder or the visitor's: its models offered, and chosen but for the ablation."""
        with endpoints.answered():
            offered = service.on(ladder_name).models.readable
        return gr.CheckboxGroup(choices=[(offered[key].milestone.label, key) for key in offered],
                                value=[key for key in offered if key != ABLATION])

    shown = [key for key in available if key != ABLATION]  # the ablation is there to be chosen, not by default
    heat_default = next((key for key in reversed(shown) if key in with_attention), None)

    @functools.cache  # the same for every visitor: read once, when the first one opens the page
    def first_view():
        request = service.parse(api.InsideRequest, text=DEFAULT_TEXT, milestones=shown)
        return read(service, request, service.inside(request), view.MEAN, view.MEAN, heat_default)

    with gr.Row(equal_height=False, elem_id="inside-layout"):
        with gr.Column(scale=1, min_width=240):
            ladder_switch = your_text.switch(context)
            # No max_length: the browser would cut a longer paste without a word; the server says the limit.
            text = gr.Textbox(DEFAULT_TEXT, label="Text", lines=3, max_lines=8, elem_id="inside-text",
                              info="Shift+Enter (or Look inside) scores it with every chosen model; Enter is a "
                                   "new line.")
            button = gr.Button("Look inside", variant="primary", elem_id="inside-look")
            offered = {"prompt", "texts"} <= context.shared.keys()
            use = gr.Button("Use the text just generated", size="sm", elem_id="inside-use", visible=offered)
            chosen = gr.CheckboxGroup([(models[key].milestone.label, key) for key in available], value=shown,
                                      label="Models to show", elem_id="inside-milestones",
                                      info=f"The ablation is milestone {ladder.ablation_of} without its residual "
                                           f"connections.")
            gains = gr.Checkbox(False, label="What each idea saved: a row of bits against the model below",
                                elem_id="inside-gains")
            lens = gr.Checkbox(False, label=f"Logit lens rows: the bits after each block "
                                            f"({analysis.deep_ones(ladder)})", elem_id="inside-lens")
            temperature = gr.Slider(0, api.MAX_TEMPERATURE, api.DEFAULT_TEMPERATURE, step=0.05,
                                    label="Temperature (the amber bars)", elem_id="inside-temperature")
            top_k = gr.Slider(0, api.MAX_TOP_K, 0, step=1, label="Top-k (0 = off)",
                              elem_id="inside-top-k")
        with gr.Column(scale=5, min_width=320):
            rows = gr.HTML(js_on_load=CLICK_JS, elem_id="surprise-rows")
            # What the chosen character's views show, the bars beside the attention: right under the rows.
            with gr.Row(equal_height=False, elem_id="inside-focus"):
                with gr.Column(scale=3, min_width=300):
                    bars = gr.HTML(js_on_load=None, elem_id="next-bars")
                with gr.Column(scale=2, min_width=300):
                    looks = gr.HTML(js_on_load=END_JS, elem_id="attention-rows")
                    layer = gr.Radio(layer_choices, value=view.MEAN, label="Attention layer", elem_id="inside-layer")
                    head = gr.Radio(head_choices, value=view.MEAN, label="Attention head", elem_id="inside-head")
                    heat = gr.Dropdown([(models[key].milestone.label, key) for key in with_attention],
                                       value=heat_default, label="Full attention map of", elem_id="inside-heat")
                    heatmap = gr.HTML(js_on_load=None, elem_id="attention-map")
            lens_cards = gr.HTML(js_on_load=None, elem_id="lens-cards")
    state = gr.State()
    views = [bars, looks, heatmap, lens_cards]
    knobs = [temperature, top_k, layer, head, heat]
    reading = [ladder_switch, text, chosen, gains, lens, *knobs]
    if available:
        gr.on(None, first_view, outputs=[rows, state, *views], api_visibility="private", show_progress="hidden")
    gr.on([button.click, text.submit, gains.change, lens.change], look, inputs=[*reading, state],
          outputs=[rows, state, *views], api_visibility="private", show_progress="minimal", trigger_mode="always_last")
    rows.click(pick, inputs=[state, *knobs], outputs=[state, *views], api_visibility="private",
               show_progress="hidden", trigger_mode="always_last")
    gr.on([temperature.release, top_k.release, layer.change, head.change, heat.change], redraw,
          inputs=[state, *knobs], outputs=[state, *views], api_visibility="private", show_progress="hidden",
          trigger_mode="always_last")
    ladder_switch.change(switched, ladder_switch, chosen, api_visibility="private").success(
        look, inputs=reading, outputs=[rows, state, *views], api_visibility="private")
    if offered:
        use.click(generated, inputs=[context.shared["prompt"], *context.shared["texts"]], outputs=text,
                  api_visibility="private").success(look, inputs=reading, outputs=[rows, state, *views],
                                                    api_visibility="private")


def generated(prompt: str, *texts: str) -> str:
    """The Compare tab's prompt and what the highest milestone that wrote anything wrote after it."""
    written = [t for t in texts if t]
    if not written:
        raise gr.Error("Generate a text in the Compare tab first.", print_exception=False)
    return ((prompt or "") + written[-1])[-api.MAX_TEXT:]
