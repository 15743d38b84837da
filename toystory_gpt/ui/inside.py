"""The Inside tab: where each milestone is surprised by a text, what it expects next, and where it looks.

One row of characters per milestone, shaded by surprise; clicking a character shows, for every milestone,
the next-character bars at that slot and the attention that predicted it. Also the ``/surprise``,
``/next_chars`` and ``/attention`` API endpoints. The numbers all come from ``toystory_gpt.analysis``.
"""

from __future__ import annotations

import base64
import html
import io

import gradio as gr
import numpy as np
from PIL import Image

from .. import analysis, api, milestones
from . import endpoints
from .endpoints import shown_characters

TITLE = "Inside"
DEFAULT_TEXT = "The little robot rolled under the bed and waited for the lights to go out."
MAX_BITS = 8.0          # the colour scale's top: 8 bits is a 1-in-256 surprise
BARS = 8                # next characters listed per milestone
MEAN = "mean"           # the layer/head choice that averages them
HEATMAP_PIXELS = 384    # the T×T heatmap is drawn about this wide

# Delegated, so it survives every re-render of the rows; the selection moves at once, before the server answers.
CLICK_JS = """
element.addEventListener('click', (event) => {
  const span = event.target.closest('[data-pos]');
  if (!span) return;
  element.querySelectorAll('.ins-sel').forEach(s => s.classList.remove('ins-sel'));
  element.querySelectorAll(`[data-pos="${span.dataset.pos}"]`).forEach(s => s.classList.add('ins-sel'));
  trigger('click', {pos: Number(span.dataset.pos)});
});
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
@media (max-width: 640px) {
  .ins-label { min-width: 1.6rem; max-width: 1.6rem; padding: 0 0.3rem; }
  .ins-wide { display: none; }
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
.ins-map img { image-rendering: pixelated; max-width: 100%; border: 1px solid var(--border-color-primary); }
.ins-map p { font-size: 0.8rem; opacity: 0.85; margin: 0.3rem 0 0; }
"""


def glyph(character: str) -> str:
    """How a character is drawn in a row: spaces and newlines as visible symbols, one cell wide."""
    return {" ": "␣", "\n": "↵", "\t": "⇥"}.get(character, character)


def quoted(character: str) -> str:
    return f"'{glyph(character)}'"


def surprise_colour(bits: float) -> str:
    """One scale for every row: white at 0 bits, amber at half of MAX_BITS, red from MAX_BITS on."""
    t = min(max(bits / MAX_BITS, 0.0), 1.0)
    low, mid, high = np.array([255, 255, 255]), np.array([251, 191, 36]), np.array([220, 38, 38])
    rgb = low + (mid - low) * t * 2 if t <= 0.5 else mid + (high - mid) * (t - 0.5) * 2
    return "#" + "".join(f"{round(c):02x}" for c in rgb)


def legend_html() -> str:
    return (f'<div class="ins-legend"><span>Surprise, bits per character: 0 <span class="ins-scale"></span> '
            f'{MAX_BITS:g}+</span><span>Hover a character for its probability and each model\'s top guesses; '
            f'click it to see what every model expected there and where it looked.</span></div>')


def _cell(character: str, slot: int | None, style: str, title: str, classes: str) -> str:
    """One character of a row; ``slot`` makes it clickable."""
    ws = " ins-ws" if character in " \n\t" else ""
    pos = "" if slot is None else f'data-pos="{slot}" '
    return (f'<span {pos}class="{classes}{ws}" style="{style}" '
            f'title="{html.escape(title)}">{html.escape(glyph(character))}</span>')


def row_html(number: int, cells: str, figure: str = "", unit: str = "", note: str = "") -> str:
    """One milestone's row: its label (just the number on a phone), the cells, and a figure at the end."""
    milestone = milestones.LADDER[number]
    label = html.escape(milestone.label + note)
    return (f'<div class="ins-row"><span class="ins-label" title="{label}"><span>{number}</span>'
            f'<span class="ins-wide">{label[len(str(number)):]}</span></span><span class="ins-chars">{cells}</span>'
            f'<span class="ins-bpc">{figure}<span class="ins-wide">{unit}</span></span></div>')


def surprise_html(models: dict, req: analysis.Request, rows: list[analysis.Surprise],
                  selected: int | None) -> str:
    """The shaded rows, one per milestone, the same characters in the same columns, and the legend."""
    lines = []
    for row in rows:
        saved = models[row.milestone]
        vocab = saved.tokenizer.vocab
        cells = []
        for i, character in enumerate(req.text):
            bits = float(row.bits[i])
            guesses = ", ".join(f"{quoted(vocab[g])} {p:.2f}"
                                for g, p in zip(row.guesses[i], row.guess_probabilities[i], strict=True))
            title = (f"{saved.milestone.label}\n{quoted(character)}: p = {2 ** -bits:.4f} ({bits:.1f} bits)\n"
                     f"top guesses: {guesses}")
            classes = ("ins-hot " if bits > 0.75 * MAX_BITS else "") + ("ins-sel" if i == selected else "")
            cells.append(_cell(character, i, f"background:{surprise_colour(bits)}", title, classes))
        lines.append(row_html(row.milestone, "".join(cells), f"{row.bits_per_char:.2f}", " bits/char"))
    return legend_html() + f'<div class="ins-rows">{"".join(lines)}</div>'


def heading_html(req: analysis.Request, slot: int) -> str:
    before = req.text[max(0, slot - 30):slot]
    target = (f"character {slot + 1} of {len(req.text)}, {html.escape(quoted(req.text[slot]))}"
              if slot < len(req.text) else "the character after the text")
    return (f'<p class="ins-heading"><b>Predicting {target}</b> after “{html.escape("".join(map(glyph, before)))}”. '
            f'Blue: the model\'s own probability; amber: as sampling would draw it at this temperature and top-k '
            f'(greyed: cut by top-k).</p>')


def bars_html(models: dict, req: analysis.Request, slot: int, looks: list[analysis.Look]) -> str:
    """For every milestone, the likeliest next characters, raw beside as-sampled, the true one marked."""
    truth = req.text[slot] if slot < len(req.text) else None
    cards = []
    for seen in looks:
        saved = models[seen.milestone]
        entry = analysis.next_chars_entry(saved, seen, truth, req.temperature, req.top_k, BARS)
        listed = entry["chars"]
        true = entry.get("true_next")
        summary = ""
        if true:
            summary = (f'<p class="ins-truth">true next {html.escape(quoted(true["char"]))}: rank {true["rank"]}, '
                       f'p = {true["probability"]:.3f}</p>')
            if true["rank"] > BARS:
                listed = [*listed, true]
        rows = "".join(_bar_row(item, true) for item in listed)
        cards.append(f'<div class="ins-card"><h4>{html.escape(saved.milestone.label)}</h4>{summary}<table>'
                     f'<tr><th></th><th>model</th><th>as sampled</th></tr>{rows}</table></div>')
    return heading_html(req, slot) + f'<div class="ins-cards">{"".join(cards)}</div>'


def _bar_row(item: dict, true: dict | None) -> str:
    classes = ("ins-cut " if item["sampled_probability"] == 0 else "") + (
        "ins-true" if true and item["char"] == true["char"] else "")
    mark = f" ✓{true['rank']}" if true and item["char"] == true["char"] else ""

    def bar(kind: str, p: float) -> str:
        return f'<div class="ins-bar {kind}"><div style="width:{100 * p:.1f}%"></div><span>{p:.3f}</span></div>'

    return (f'<tr class="{classes}"><td class="ins-ch">{html.escape(quoted(item["char"]))}{mark}</td>'
            f'<td>{bar("ins-raw", item["probability"])}</td>'
            f'<td>{bar("ins-smp", item["sampled_probability"])}</td></tr>')


def choose(attention: np.ndarray, layer: str, head: str) -> tuple[np.ndarray, str]:
    """One (T, T) map from (layers, heads, T, T): the chosen layer and head, or their means where a model has no such
    layer or head (said in the second value)."""
    layers, heads = attention.shape[:2]
    note = []
    if layer != MEAN and int(layer) > layers:
        note.append(f"has {layers} layer{'s' * (layers > 1)}")
    if head != MEAN and int(head) > heads:
        note.append(f"has {heads} head{'s' * (heads > 1)}")
    by_layer = attention.mean(0) if layer == MEAN or int(layer) > layers else attention[int(layer) - 1]
    chosen = by_layer.mean(0) if head == MEAN or int(head) > heads else by_layer[int(head) - 1]
    return chosen, (" (" + ", ".join(note) + ": mean shown)") if note else ""


def attention_colour(weight: float) -> str:
    """Blue, by the square root of the weight, so that the small weights spread over many characters still show."""
    return f"rgba(2,132,199,{min(1.0, float(weight)) ** 0.5:.3f})"


def attention_html(req: analysis.Request, slot: int, looks: list[analysis.Look], layer: str, head: str) -> str:
    """From the slot's query, each earlier character shaded by the weight it got, one row per milestone."""
    context = analysis.START + req.text
    lines = []
    for seen in looks:
        label = milestones.LADDER[seen.milestone].label
        if seen.attention is None:
            note = analysis.no_attention(seen.milestone).split(": ", 1)[1]
            lines.append(row_html(seen.milestone, f'<span class="ins-note">{html.escape(note)}</span>'))
            continue
        weights, note = choose(seen.attention, layer, head)
        row = weights[-1]  # (T,): the query is the slot's last character of context
        cells = "".join(
            _cell(context[seen.start + j], None, f"background:{attention_colour(w)}",
                  f"{label}: weight {w:.3f}", "ins-query" if j == len(row) - 1 else "")
            for j, w in enumerate(row))
        lines.append(row_html(seen.milestone, cells, f"{len(row)}", " chars seen", note))
    caption = (f'<p class="ins-heading">Where each model looked to predict it (layer {layer}, head {head}): the '
               f'outlined character is the last one read; darker blue, more weight.</p>')
    return caption + f'<div class="ins-rows">{"".join(lines)}</div>'


def heatmap_html(req: analysis.Request, seen: analysis.Look | None, layer: str, head: str) -> str:
    """The chosen milestone's full T×T attention map at this slot's context, as a pixelated image."""
    if seen is None or seen.attention is None:
        return '<div class="ins-map"><p>Choose a milestone with attention (3 and up) for the full map.</p></div>'
    weights, note = choose(seen.attention, layer, head)  # (T, T)
    shade = (np.clip(weights, 0, 1) ** 0.5)[..., None]  # (T, T, 1)
    rgb = (255 - shade * (255 - np.array([2, 132, 199]))).astype(np.uint8)  # white to blue
    scale = max(1, HEATMAP_PIXELS // len(weights))
    image = Image.fromarray(rgb).resize((len(weights) * scale,) * 2, Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    context = analysis.START + req.text
    first, last = context[seen.start], context[seen.start + len(weights) - 1]
    label = milestones.LADDER[seen.milestone].label
    return (f'<div class="ins-map"><img alt="attention map of {html.escape(label)}" '
            f'src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'
            f'<p>{html.escape(label)}{html.escape(note)}, layer {layer}, head {head}: row i is the character at '
            f'position i of the context ({len(weights)} characters, from {html.escape(quoted(first))} to '
            f'{html.escape(quoted(last))}) and how much it looks at each column j ≤ i; nothing above the diagonal: '
            f'no model may look ahead. The bottom row is the attention shown above.</p></div>')


def position_views(models, state: dict, layer: str, head: str, heat) -> tuple[str, str, str]:
    """Bars, attention rows and heatmap for the slot in ``state``: one forward pass per milestone, no rescoring."""
    req, slot = analysis.Request(**state["request"]), state["slot"]
    looks = analysis.look(models, req, slot)
    heat_look = next((seen for seen in looks if seen.milestone == heat), None)
    return (bars_html(models, req, slot, looks), attention_html(req, slot, looks, layer, head),
            heatmap_html(req, heat_look, layer, head))


def read(service: api.Service, text, chosen, temperature, top_k, layer, head, heat):
    """Score the text once for every chosen milestone, then show the last character's slot."""
    with endpoints.answered():
        req = service.read(api.NextCharsRequest.parse(text=text, milestones=chosen, temperature=temperature,
                                                      top_k=top_k))
    if req.dropped:
        gr.Warning(f"Left out characters the models have never seen: {html.escape(shown_characters(req.dropped))}")
    slot = len(req.text) - 1
    state = {"request": vars(req), "slot": slot}
    models = service.models.saved
    rows = surprise_html(models, req, analysis.score(models, req), slot)
    return rows, state, *position_views(models, state, layer, head, heat)


def build(context) -> None:
    service = context.service
    models = service.models.saved
    ladder = milestones.LADDER
    available = sorted(models)
    with_attention = [n for n in available if models[n].model.config.has_attention]
    configs = [models[n].model.config for n in with_attention]
    layer_choices = [MEAN, *map(str, range(1, max((c.n_layer for c in configs), default=0) + 1))]
    head_choices = [MEAN, *map(str, range(1, max((c.n_head for c in configs), default=0) + 1))]

    def pick(state, temperature, top_k, layer, head, heat, evt: gr.EventData):
        """A click on a character: only the views at that slot are computed, the rows stay as they are."""
        req = analysis.Request(**{**state["request"], "temperature": temperature, "top_k": top_k})
        with endpoints.answered():
            slot = analysis.slot_of(req, evt._data.get("pos") if isinstance(evt._data, dict) else None)
        state = {"request": vars(req), "slot": slot}
        return state, *position_views(models, state, layer, head, heat)

    def redraw(state, temperature, top_k, layer, head, heat):
        """A changed knob or selector: the same slot drawn again."""
        state = {**state, "request": {**state["request"], "temperature": temperature, "top_k": top_k}}
        return state, *position_views(models, state, layer, head, heat)

    heat_default = with_attention[-1] if with_attention else None
    first = (read(service, DEFAULT_TEXT, available, api.DEFAULT_TEMPERATURE, 0, MEAN, MEAN, heat_default)
             if available else ("", None, "", "", ""))
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=240):
            text = gr.Textbox(DEFAULT_TEXT, label="Text", lines=3, max_lines=8, max_length=api.MAX_TEXT,
                              elem_id="inside-text", info="Enter (or Look inside) scores it with every chosen model.")
            offered = {"prompt", "texts"} <= context.shared.keys()
            use = gr.Button("Use the text just generated", size="sm", elem_id="inside-use", visible=offered)
            chosen = gr.CheckboxGroup([(ladder[n].label, n) for n in available], value=available,
                                      label="Milestones to show", elem_id="inside-milestones")
            look = gr.Button("Look inside", variant="primary", elem_id="inside-look")
        with gr.Column(scale=5, min_width=320):
            rows = gr.HTML(first[0], js_on_load=CLICK_JS, elem_id="surprise-rows")
    state = gr.State(first[1])
    with gr.Row(elem_id="inside-knobs"):
        temperature = gr.Slider(0, api.MAX_TEMPERATURE, api.DEFAULT_TEMPERATURE, step=0.05,
                                label="Temperature", elem_id="inside-temperature", min_width=200)
        top_k = gr.Slider(0, api.MAX_TOP_K, 0, step=1, label="Top-k (0 = off)",
                          elem_id="inside-top-k", min_width=200)
        layer = gr.Radio(layer_choices, value=MEAN, label="Attention layer", elem_id="inside-layer", min_width=200)
        head = gr.Radio(head_choices, value=MEAN, label="Attention head", elem_id="inside-head", min_width=200)
    bars = gr.HTML(first[2], js_on_load=None, elem_id="next-bars")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=300):
            looks = gr.HTML(first[3], js_on_load=None, elem_id="attention-rows")
        with gr.Column(scale=2, min_width=300):
            heat = gr.Dropdown([(ladder[n].label, n) for n in with_attention], value=heat_default,
                               label="Full attention map of", elem_id="inside-heat")
            heatmap = gr.HTML(first[4], js_on_load=None, elem_id="attention-map")
    views = [bars, looks, heatmap]
    knobs = [temperature, top_k, layer, head, heat]
    gr.on([look.click, text.submit], lambda *args: read(service, *args), inputs=[text, chosen, *knobs],
          outputs=[rows, state, *views], api_visibility="private", show_progress="minimal")
    rows.click(pick, inputs=[state, *knobs], outputs=[state, *views], api_visibility="private",
               show_progress="hidden", trigger_mode="always_last")
    gr.on([temperature.release, top_k.release, layer.change, head.change, heat.change], redraw,
          inputs=[state, *knobs], outputs=[state, *views], api_visibility="private", show_progress="hidden",
          trigger_mode="always_last")
    if offered:
        use.click(generated, inputs=[context.shared["prompt"], *context.shared["texts"]], outputs=text,
                  api_visibility="private").success(lambda *args: read(service, *args),
                                                    inputs=[text, chosen, *knobs], outputs=[rows, state, *views],
                                                    api_visibility="private")
    endpoints.register_views(service)


def generated(prompt: str, *texts: str) -> str:
    """The Compare tab's prompt and what the highest milestone that wrote anything wrote after it."""
    written = [t for t in texts if t]
    if not written:
        raise gr.Error("Generate a text in the Compare tab first.", print_exception=False)
    return ((prompt or "") + written[-1])[-api.MAX_TEXT:]
