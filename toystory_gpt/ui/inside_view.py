"""The Inside tab's view-model: from the numbers of ``toystory_gpt.analysis`` to what the tab shows, without Gradio.

Rows first: per model its surprise row and, under it, optional thin rows (what its idea saved against the model
below it; what its stream predicts after each block), built as ``Row``s of ``Cell``s from an
``analysis.Reading`` (what ``api.Service.inside`` read) and drawn as HTML. Then the views at one clicked slot:
the next-character bars, the attention, the full attention map, and the lens. Models are named by
``Milestone.key`` (a number, or "ablation") and come as a mapping in display order.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import html
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .. import analysis
from ..milestones import ABLATION, Ladder
from ..weights import SavedModel

MAX_BITS = 8.0          # the surprise scale's top: 8 bits is a 1-in-256 surprise
GAIN_BITS = 4.0         # the gain scale's ends: ±4 bits is 16 times likelier or less likely
BARS = 8                # next characters listed per milestone
LENS_TOP = 3            # characters listed per block in the lens
MEAN = "mean"           # the layer/head choice that averages them
HEATMAP_PIXELS = 384    # the T×T heatmap is drawn about this wide

Models = Mapping[object, SavedModel]  # Milestone.key → model, in display order


class Kind(enum.Enum):
    SURPRISE = "surprise"   # a model's bits at each character
    GAIN = "gain"           # bits it saved against the model below it
    LENS = "lens"           # bits its stream would give after one of its blocks


@dataclass(frozen=True)
class Cell:
    character: str
    slot: int
    value: float            # bits (surprise, lens) or bits saved (gain)
    colour: str
    title: str              # the hover text


@dataclass(frozen=True)
class Row:
    key: object             # Milestone.key of the model the row belongs to
    kind: Kind
    label: str
    short: str              # the label on a phone
    cells: tuple[Cell, ...]
    figure: str             # the row's total, at its end
    unit: str


def glyph(character: str) -> str:
    """How a character is drawn in a row: spaces and newlines as visible symbols, one cell wide."""
    return {" ": "␣", "\n": "↵", "\t": "⇥"}.get(character, character)


def quoted(character: str) -> str:
    return f"'{glyph(character)}'"


def _hex(rgb: np.ndarray) -> list[str]:
    """(N, 3) colours from 0 to 255 as CSS hex colours."""
    return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in np.rint(rgb).astype(int).tolist()]


LOW, MID, HIGH = np.array([255, 255, 255]), np.array([251, 191, 36]), np.array([220, 38, 38])


def surprise_colours(bits: np.ndarray) -> list[str]:
    """One scale for every surprise row: white at 0 bits, amber at half of MAX_BITS, red from MAX_BITS on."""
    t = np.clip(np.asarray(bits, float) / MAX_BITS, 0.0, 1.0)[:, None]  # (N, 1); a whole row at once, for speed
    return _hex(np.where(t <= 0.5, LOW + (MID - LOW) * t * 2, MID + (HIGH - MID) * (t - 0.5) * 2))


SAVED_RGB, LOST_RGB = np.array([22, 163, 74]), np.array([147, 51, 234])  # green: bits saved; purple: bits lost


def gain_colours(bits: np.ndarray) -> list[str]:
    """One signed scale for every gain row, centred on zero: white, to green at GAIN_BITS saved, to purple at
    GAIN_BITS lost."""
    bits = np.asarray(bits, float)[:, None]
    t = np.minimum(np.abs(bits) / GAIN_BITS, 1.0)
    return _hex(255 + (np.where(bits > 0, SAVED_RGB, LOST_RGB) - 255) * t)


def attention_colour(weight: float) -> str:
    """Blue, by the square root of the weight, so that the small weights spread over many characters still show."""
    return f"rgba(2,132,199,{min(1.0, float(weight)) ** 0.5:.3f})"


def _guesses(saved: SavedModel, row: analysis.Surprise) -> list[str]:
    """Per character, the model's top guesses there, for the hovers."""
    vocab = saved.tokenizer.vocab
    return [", ".join(f"{quoted(vocab[g])} {p:.2f}" for g, p in zip(ids, ps, strict=True))
            for ids, ps in zip(row.guesses.tolist(), row.guess_probabilities.tolist(), strict=True)]


def _short(saved: SavedModel) -> str:
    return "abl" if saved.milestone.is_ablation else str(saved.milestone.number)


def surprise_row(saved: SavedModel, text: str, row: analysis.Surprise, guesses: list[str]) -> Row:
    """A model's bits at each character; ``guesses``: its top guesses per character (``_guesses``)."""
    label = saved.milestone.label
    cells = tuple(Cell(c, i, bits, colour, f"{label}\n{quoted(c)}: p = {2 ** -bits:.4f} ({bits:.1f} bits)\n"
                                           f"top guesses: {guesses[i]}")
                  for i, (c, bits, colour) in enumerate(zip(text, row.bits.tolist(), surprise_colours(row.bits),
                                                            strict=True)))
    return Row(row.milestone, Kind.SURPRISE, label, _short(saved), cells, f"{row.bits_per_char:.2f}", " bits/char")


def gain_row(upper: SavedModel, lower: SavedModel, text: str, up: analysis.Surprise, down: analysis.Surprise,
             guesses: tuple[list[str], list[str]]) -> Row:
    """What ``upper``'s idea saved against ``lower`` at each character; hover: both models' probability of it and
    their top guesses (``guesses``: each one's, per character)."""
    gained = analysis.gain(up, down)
    against = lower.milestone.number if not lower.milestone.is_ablation else lower.milestone.label
    cells = tuple(Cell(c, i, bits, colour,
                       f"{'saved' if bits >= 0 else 'lost'} {abs(bits):.2f} bits at {quoted(c)} against "
                       f"{lower.milestone.label}\n"
                       f"{upper.milestone.label}: p = {2 ** -up.bits[i]:.4f}; top {guesses[0][i]}\n"
                       f"{lower.milestone.label}: p = {2 ** -down.bits[i]:.4f}; top {guesses[1][i]}")
                  for i, (c, bits, colour) in enumerate(zip(text, gained.bits.tolist(), gain_colours(gained.bits),
                                                            strict=True)))
    return Row(up.milestone, Kind.GAIN, f"↳ saved against {against}", "±", cells, f"{gained.per_char:+.2f}",
               " bits saved/char")


def lens_rows(saved: SavedModel, text: str, read: analysis.Lens) -> list[Row]:
    """The bits after each block but the last (the model's own row), one thin row each; the label says how much
    the block changed the stream."""
    vocab = saved.tokenizer.vocab
    top = np.argsort(-read.logits, axis=-1, kind="stable")[..., :LENS_TOP]  # (L + 1, N, LENS_TOP)
    rows = []
    for block, bits in enumerate(read.bits[:-1]):
        where = "the embeddings" if block == 0 else f"block {block}"
        cells = tuple(Cell(c, i, b, colour,
                           f"{saved.milestone.label}, read after {where}\n{quoted(c)}: {b:.1f} bits, rank "
                           f"{rank}\ntop: {', '.join(quoted(vocab[t]) for t in tops)}")
                      for i, (c, b, colour, rank, tops) in enumerate(zip(
                          text, bits.tolist(), surprise_colours(bits), read.ranks[block].tolist(),
                          top[block].tolist(), strict=True)))
        change = f" (changed {read.change[block - 1]:.0%})" if block else ""
        rows.append(Row(read.milestone, Kind.LENS, f"↳ after {where}{change}", f"·{block}", cells,
                        f"{bits.mean():.2f}", " bits/char"))
    return rows


def rows(models: Models, reading: analysis.Reading) -> list[Row]:
    """Every chosen model's surprise row, each followed by its gain row (where the model below was scored) and its
    lens rows (where read)."""
    shown = []
    req, surprises = reading.request, reading.surprises
    guesses = {key: _guesses(models[key], row) for key, row in surprises.items()}
    for key in req.milestones:
        saved = models[key]
        shown.append(surprise_row(saved, req.text, surprises[key], guesses[key]))
        if (lower := reading.below.get(key)) is not None:
            shown.append(gain_row(saved, models[lower], req.text, surprises[key], surprises[lower],
                                  (guesses[key], guesses[lower])))
        if key in reading.lenses:
            shown.extend(lens_rows(saved, req.text, reading.lenses[key]))
    return shown


def _cell_html(character: str, slot: int | None, style: str, title: str, classes: str, focus: bool = False) -> str:
    """One character of a row; ``slot`` makes it clickable and reachable from the keyboard (``focus``: the row's one
    Tab stop, the arrow keys move from there)."""
    ws = " ins-ws" if character in " \n\t" else ""
    pos = "" if slot is None else f'data-pos="{slot}" tabindex="{0 if focus else -1}" '
    return (f'<span {pos}class="{classes}{ws}" style="{style}" '
            f'title="{html.escape(title)}">{html.escape(glyph(character))}</span>')


def _row_html(label: str, short: str, cells: str, figure: str = "", unit: str = "", classes: str = "") -> str:
    """One row: its label (shorter on a phone), the cells, and a figure at the end."""
    label = html.escape(label)
    return (f'<div class="ins-row {classes}"><span class="ins-label" title="{label}"><span class="ins-narrow">'
            f'{html.escape(short)}</span><span class="ins-wide">{label}</span></span><span class="ins-chars">{cells}'
            f'</span><span class="ins-bpc">{figure}<span class="ins-wide">{unit}</span></span></div>')


def legend_html(gains: bool, lens: bool = False) -> str:
    gain = (f'<span>Saved against the model below: lost {GAIN_BITS:g}+ <span class="ins-scale ins-gain-scale"></span> '
            f'{GAIN_BITS:g}+ bits saved</span>' if gains else "")
    lens = ('<span>Thin rows “after block k” (logit lens): the same surprise scale, as the model would score each '
            'character with only its first k blocks; the figure is their mean in bits/char.</span>' if lens else "")
    return (f'<div class="ins-legend"><span>Surprise, bits per character: 0 <span class="ins-scale"></span> '
            f'{MAX_BITS:g}+</span>{gain}{lens}<span>Hover, tap or Tab to a character for its probability and top '
            f'guesses (arrow keys move); click it or press Enter to see what every model expected there, where it '
            f'looked and, for the deep ones, what each block added.</span></div>')


def readout_html(shown: Sequence[Row], selected: int | None) -> str:
    """The line that shows the focused or tapped character's numbers (on a phone and from the keyboard, where no
    hover is); it starts with the chosen character of the first row."""
    first = next((cell.title for row in shown for cell in row.cells if cell.slot == selected), "")
    return f'<p class="ins-readout" aria-live="polite">{html.escape(first).replace(chr(10), " · ")}</p>'


def rows_html(shown: Sequence[Row], selected: int | None, gains: bool) -> str:
    """The rows, the same characters in the same columns, and the legend of their colour scales."""
    lines = []
    for row in shown:
        hot = row.kind is Kind.SURPRISE
        cells = "".join(_cell_html(cell.character, cell.slot, f"background:{cell.colour}", cell.title,
                                   ("ins-hot " if hot and cell.value > 0.75 * MAX_BITS else "")
                                   + ("ins-sel" if cell.slot == selected else ""), cell.slot == selected)
                        for cell in row.cells)
        ablation = " ins-ablation" if row.key == ABLATION else ""
        lines.append(_row_html(row.label, row.short, cells, row.figure, row.unit, f"ins-{row.kind.value}{ablation}"))
    lens = any(row.kind is Kind.LENS for row in shown)
    return (legend_html(gains, lens) + f'<div class="ins-rows">{"".join(lines)}</div>'
            + readout_html(shown, selected))


def heading_html(req: analysis.Request, slot: int) -> str:
    before, truth = req.text[max(0, slot - 30):slot], req.truth(slot)
    target = (f"character {slot + 1} of {len(req.text)}, {html.escape(quoted(truth))}"
              if truth is not None else "the character after the text")
    return (f'<p class="ins-heading"><b>Predicting {target}</b> after “{html.escape("".join(map(glyph, before)))}”. '
            f'Blue: the model\'s own probability; amber: as sampling would draw it at this temperature and top-k '
            f'(greyed: cut by top-k).</p>')


def bars_html(models: Models, req: analysis.Request, slot: int, looks: Sequence[analysis.Look]) -> str:
    """For every model, the likeliest next characters, raw beside as-sampled, the true one marked."""
    cards = []
    for seen in looks:
        saved = models[seen.milestone]
        entry = analysis.next_chars_entry(saved, seen, req.truth(slot), req.temperature, req.top_k, BARS)
        listed: list[analysis.CharChance] = entry.chars
        true = entry.true_next
        summary = ""
        if true:
            summary = (f'<p class="ins-truth">true next {html.escape(quoted(true.char))}: rank {true.rank}, '
                       f'p = {true.probability:.3f}</p>')
            if true.rank > BARS:
                listed = [*listed, true]
        table = "".join(_bar_row(item, true) for item in listed)
        cards.append(f'<div class="ins-card"><h4>{html.escape(saved.milestone.label)}</h4>{summary}<table>'
                     f'<tr><th></th><th>model</th><th>as sampled</th></tr>{table}</table></div>')
    return heading_html(req, slot) + f'<div class="ins-cards">{"".join(cards)}</div>'


def _bar_row(item: analysis.CharChance, true: analysis.TrueNext | None) -> str:
    classes = ("ins-cut " if item.sampled_probability == 0 else "") + (
        "ins-true" if true and item.char == true.char else "")
    mark = f" ✓{true.rank}" if true and item.char == true.char else ""

    def bar(kind: str, p: float) -> str:
        return f'<div class="ins-bar {kind}"><div style="width:{100 * p:.1f}%"></div><span>{p:.3f}</span></div>'

    return (f'<tr class="{classes}"><td class="ins-ch">{html.escape(quoted(item.char))}{mark}</td>'
            f'<td>{bar("ins-raw", item.probability)}</td>'
            f'<td>{bar("ins-smp", item.sampled_probability)}</td></tr>')


@dataclass(frozen=True)
class LensStep:
    """The stream after one block, at one slot, read through the model's head."""
    after: int              # 0: the embeddings
    top: list[analysis.CharChance]   # the likeliest characters (their probabilities at temperature 1)
    truth: analysis.TrueNext | None  # the true next character, if there is one


def lens_steps(saved: SavedModel, seen: analysis.Look, truth: str | None) -> list[LensStep]:
    """Per block, what the stream at the slot predicts: the bars' own ranking, at temperature 1."""
    steps = []
    for after, logits in enumerate(seen.lens):
        entry = analysis.next_chars_entry(saved, dataclasses.replace(seen, logits=logits), truth, 1.0, 0, LENS_TOP)
        steps.append(LensStep(after, entry.chars, entry.true_next))
    return steps


def lens_html(models: Models, req: analysis.Request, slot: int, looks: Sequence[analysis.Look], ladder: Ladder) -> str:
    """For every deep model, what its stream predicts at the slot after each block: where in depth it gets it."""
    cards = []
    truth = req.truth(slot)
    for seen in looks:
        if seen.lens is None:
            continue
        saved = models[seen.milestone]
        steps = lens_steps(saved, seen, truth)
        first = next((s.after for s in steps if s.truth and s.truth.rank == 1), None)
        lines = []
        for step in steps:
            guesses = " ".join(f"{html.escape(quoted(c.char))}&nbsp;{c.probability:.2f}" for c in step.top)
            true = (f"<td>{step.truth.probability:.3f}</td><td>{step.truth.rank}</td>" if step.truth else "")
            where = "embeddings" if step.after == 0 else f"block {step.after}"
            mark = ' class="ins-first"' if step.after == first else ""
            lines.append(f'<tr{mark}><td>{where}</td>{true}<td class="ins-guesses">{guesses}</td></tr>')
        head = (f"<th>p({html.escape(quoted(truth))})</th><th>rank</th>" if truth is not None else "")
        found = (f"first ranked first after {'the embeddings' if first == 0 else f'block {first}'}"
                 if first is not None else "never ranked first" if truth is not None else "")
        cards.append(f'<div class="ins-card ins-lens-card"><h4>{html.escape(saved.milestone.label)}</h4>'
                     f'<p class="ins-truth">{found}</p><table><tr><th>after</th>{head}<th>top guesses</th></tr>'
                     f'{"".join(lines)}</table></div>')
    if not cards:
        return (f'<p class="ins-heading">Choose a deep model ({analysis.deep_ones(ladder)}) to see what each of its '
                f'blocks adds.</p>')
    return ('<p class="ins-heading"><b>Logit lens</b>: the stream after each block read through the model\'s own final '
            'norm and head, at the clicked character (bold: the first block that ranks the true one first).</p>'
            f'<div class="ins-cards">{"".join(cards)}</div>')


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
    return chosen, (", ".join(note) + ": mean shown") if note else ""


def attention_html(models: Models, req: analysis.Request, looks: Sequence[analysis.Look], layer: str,
                   head: str) -> str:
    """From the slot's query, each earlier character shaded by the weight it got, one row per model."""
    context = analysis.START + req.text
    lines, notes = [], []
    for seen in looks:
        milestone, short = models[seen.milestone].milestone, _short(models[seen.milestone])
        if seen.attention is None:  # said under the rows: a row of its own would scroll out of sight
            notes.append(f"{milestone.label}: {analysis.sees_instead(milestone)}")
            continue
        weights, note = choose(seen.attention, layer, head)
        if note:
            notes.append(f"{milestone.label} {note}")
        row = weights[-1]  # (T,): the query is the slot's last character of context
        cells = "".join(
            _cell_html(context[seen.start + j], None, f"background:{attention_colour(w)}",
                       f"{milestone.label}: weight {w:.3f}", "ins-query" if j == len(row) - 1 else "")
            for j, w in enumerate(row))
        lines.append(_row_html(milestone.label, short, cells, f"{len(row)}", " chars seen"))
    caption = (f'<p class="ins-heading"><b>Where each model looked</b> to predict it (layer {layer}, head {head}): '
               f'the outlined character is the last one read (the rows start scrolled to it); weight '
               f'0 <span class="ins-scale ins-attention-scale"></span> 1.</p>')
    said = "".join(f"<li>{html.escape(note)}.</li>" for note in notes)
    return (caption + f'<div class="ins-rows ins-end">{"".join(lines)}</div>'
            + (f'<ul class="ins-notes">{said}</ul>' if said else ""))


def heatmap_html(models: Models, req: analysis.Request, seen: analysis.Look | None, layer: str, head: str,
                 ladder: Ladder) -> str:
    """The chosen model's full T×T attention map at this slot's context, as a pixelated image."""
    if seen is None or seen.attention is None:
        return (f'<div class="ins-map"><p>Choose a model with attention ({analysis.attending(ladder)}) for the full '
                f'map.</p></div>')
    weights, note = choose(seen.attention, layer, head)  # (T, T)
    shade = (np.clip(weights, 0, 1) ** 0.5)[..., None]  # (T, T, 1)
    rgb = (255 - shade * (255 - np.array([2, 132, 199]))).astype(np.uint8)  # white to blue
    scale = max(1, HEATMAP_PIXELS // len(weights))
    image = Image.fromarray(rgb).resize((len(weights) * scale,) * 2, Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    context = analysis.START + req.text
    first, last = context[seen.start], context[seen.start + len(weights) - 1]
    label = models[seen.milestone].milestone.label
    noted = f"{label} ({note})" if note else label
    return (f'<div class="ins-map"><div class="ins-map-top">looks at (key) →<span>{html.escape(quoted(first))} … '
            f'{html.escape(quoted(last))}</span></div><div class="ins-map-body"><div class="ins-map-side">'
            f'reading (query) ↓</div><img alt="attention map of {html.escape(label)}" '
            f'src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}"></div>'
            f'<p>weight 0 <span class="ins-scale ins-attention-scale"></span> 1 (shaded by its square root, so small '
            f'weights still show)</p>'
            f'<p>{html.escape(noted)}, layer {layer}, head {head}: row i is the character at '
            f'position i of the context ({len(weights)} characters, from {html.escape(quoted(first))} at the top '
            f'left to {html.escape(quoted(last))} at the bottom right) and how much it looks at each column j ≤ i; '
            f'nothing above the diagonal: no model may look ahead. The bottom row is the attention shown '
            f'beside.</p></div>')
