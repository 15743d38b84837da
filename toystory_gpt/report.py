"""Describing trained models in words and tables: the results table, model cards, the run summary, and the
commentary on what each step of the ladder did."""

from __future__ import annotations

import json
import math
from pathlib import Path

from . import folders, milestones
from .milestones import Milestone
from .record import RunSummary, TrainingRecord
from .weights import WeightsError, read_record

NATS_PER_BIT = math.log(2)
SUMMARY_FILE = "results.json"
SAME = 0.0005  # nats/char: closer than this, two val losses print the same at three decimals


def row(milestone: Milestone, record: TrainingRecord | None, params: int | None = None,
        val_loss: float | None = None) -> dict:
    """The summary row of one trained model; ``params`` and ``val_loss`` as measured now, else as recorded
    (what no record says is None)."""
    loss = val_loss if val_loss is not None else record and record.best_val_loss
    return {"milestone": milestone.number, "folder": milestone.folder, "label": milestone.label,
            "params": params if params is not None else record and record.params, "val_loss": loss,
            "val_bits": None if loss is None else loss / NATS_PER_BIT, "best_step": record and record.best_step,
            "steps": record and record.steps, "wall_time": record and record.wall_time}


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table (first column left-aligned, the rest right-aligned) that reads well in a terminal too."""
    rows = [[str(cell) for cell in r] for r in rows]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]

    def line(cells):
        padded = (c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" if i else "-" * (w + 2) for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)]) + "\n"


def _cell(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def table(rows: list[dict]) -> str:
    """The results table."""
    return markdown_table(["milestone", "params", "val nats/char", "val bits/char", "best step", "steps", "time (s)"],
                          [[r["label"], *(_cell(r[k], f) for k, f in (("params", ","), ("val_loss", ".3f"),
                                                                       ("val_bits", ".3f"), ("best_step", ","),
                                                                       ("steps", ","), ("wall_time", ".0f")))]
                           for r in rows])


def model_card(milestone: Milestone, record: TrainingRecord, snapshots=()) -> str:
    """The folder's README.md: what the model is, how it scored, how to load it; ``snapshots``: the steps kept."""
    cfg = record.model_config
    shown = {k: v for k, v in cfg.items() if k != "vocab"}
    kept = ""
    if snapshots:
        steps = ", ".join(f"{s:,}" for s in sorted(snapshots))
        kept = (f"\n`snapshots/step-S.safetensors` hold the weights as they were at training steps {steps}, in half "
                f"precision (same tensor names as `model.safetensors`; `weights.load_snapshot(saved, S)` loads one). "
                f"`history.json` records what the model wrote at every evaluation.\n")
    return f"""---
library_name: toystory-gpt
tags: [character-level, toy-story, educational, pytorch_model_hub_mixin]
---

# Toy Story GPT — {milestone.label}

{milestone.idea}

A character-level language model trained on the Toy Story (1995) screenplay (not included: the text
is copyrighted; see the project README for how it is obtained). Best validation loss
**{record.best_val_loss:.3f} nats/char** ({record.best_val_loss / NATS_PER_BIT:.3f} bits/char) at step
{record.best_step:,} of {record.steps:,}; {record.params:,} parameters; trained in {record.wall_time:.0f} s.

Config (besides its {len(cfg['vocab'])}-character vocabulary): `{json.dumps(shown)}`.
Training: `{json.dumps(record.train_config)}`.

Load it with the project's code: `toystory_gpt.weights.load(folder, milestone)`, or
`GPT.from_pretrained(folder, strict=True)`. `history.json` holds the loss curve and
`{milestone.folder}.txt` a sample.
{kept}"""


def saved_record(weights_dir: Path, milestone: Milestone) -> TrainingRecord | None:
    """What training recorded for ``milestone`` in ``weights_dir``; None where that is missing or unreadable
    (the weights loader reports such a folder as broken; a summary just leaves it out)."""
    try:
        return read_record(folders.current(Path(weights_dir) / milestone.folder))
    except WeightsError:
        return None


def collect_rows(weights_dir: Path) -> list[dict]:
    """Rows for every model trained into ``weights_dir`` so far, milestones in order, then the ablation."""
    records = ((m, saved_record(weights_dir, m)) for m in milestones.LADDER.models)
    return [row(m, record) for m, record in records if record is not None]


def write_summary(weights_dir: Path, summary: RunSummary, intro: str) -> None:
    """``results.json`` for machines and ``README.md`` (the overview card) for people."""
    folders.write_file(Path(weights_dir) / SUMMARY_FILE, summary.to_json())
    folders.write_file(Path(weights_dir) / "README.md",
                       f"# Toy Story GPT — trained milestones\n\n{intro}\n\n{table(summary.rows)}")


def read_summary(weights_dir: Path) -> RunSummary | None:
    """The folder's ``results.json``, or None where it is missing or unreadable."""
    try:
        return RunSummary.from_json((Path(weights_dir) / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def loss_line(record: TrainingRecord | None) -> str:
    """A model's best validation loss in nats and bits, for a card."""
    if record is None:
        return "no val loss recorded"
    return f"best val loss {record.best_val_loss:.3f} nats/char ({record.best_val_loss / NATS_PER_BIT:.2f} bits)"


def ladder_commentary(rows: list[dict]) -> str:
    """What each trained milestone scored against the one below it, in Markdown; a step back gets its likely
    reason (the rung's ``why_worse``) and whether the rung below had begun to over-fit."""
    ladder = milestones.LADDER
    by_folder = {r["folder"]: r for r in rows}
    parts = []
    for m in ladder:
        r = by_folder.get(m.folder)
        if r is None:
            parts.append(f"- **{m.label}** — {m.idea} _Not trained yet._")
            continue
        line = (f"- **{m.label}** — {m.idea} Best val loss **{r['val_loss']:.3f}** nats/char "
                f"({r['val_bits']:.2f} bits/char)")
        below = ladder[m.number - 1] if m.number - 1 in ladder else None
        previous = below and by_folder.get(below.folder)
        delta = r["val_loss"] - previous["val_loss"] if previous else 0.0
        if previous and abs(delta) < SAME:
            line += f", the same as milestone {below.number}."
        elif previous:
            line += f", {abs(delta):.3f} {'worse' if delta > 0 else 'better'} than milestone {below.number}."
        else:
            line += "."
        if delta >= SAME:
            line += " **A step back.**" + (f" {m.why_worse}" if m.why_worse else "")
            line += (f" Milestone {below.number} was still improving at its last step, so it was not over-fitting yet."
                     if previous["best_step"] == previous["steps"] else
                     f" Milestone {below.number} peaked at step {previous['best_step']:,} of {previous['steps']:,}, "
                     f"so it had begun to over-fit.")
        parts.append(line)
        if m.number == ladder.ablation_of:
            parts.extend(_ablation_commentary(by_folder, m, below, r))
    return "\n".join(parts)


def _ablation_commentary(by_folder: dict, milestone: Milestone, below: Milestone | None, r: dict) -> list[str]:
    ablation = milestones.LADDER.ablation
    scored, one_below = by_folder.get(ablation.folder), below and by_folder.get(below.folder)
    if scored is None or one_below is None:
        return []
    worse = scored["val_loss"] > one_below["val_loss"]
    return [f"  - The ablation ({ablation.idea}) scored {scored['val_loss']:.3f}, against {one_below['val_loss']:.3f} "
            f"for milestone {below.number} and {r['val_loss']:.3f} for milestone {milestone.number}"
            + (f": {ablation.why_worse}" if worse and ablation.why_worse else ".")]
