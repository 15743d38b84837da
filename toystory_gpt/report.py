"""Tables and cards describing trained milestones: the results table, model cards, the summary JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

from . import folders
from .milestones import ABLATION, BY_NUMBER, MILESTONES, Milestone
from .weights import HISTORY_FILE

NATS_PER_BIT = math.log(2)
SUMMARY_FILE = "results.json"


def row(milestone: Milestone, info: dict) -> dict:
    """The summary row of one trained model (``info`` is what its history.json holds; what it lacks is None)."""
    loss = info.get("best_val_loss")
    return {"milestone": milestone.number, "name": milestone.name, "params": info.get("params"),
            "val_loss": loss, "val_bits": None if loss is None else loss / NATS_PER_BIT,
            "best_step": info.get("best_step"), "steps": info.get("steps"), "wall_time": info.get("wall_time")}


def _cell(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def table(rows: list[dict]) -> str:
    """A Markdown table that reads well in a terminal too."""
    lines = ["| milestone | params | val nats/char | val bits/char | best step | steps | time (s) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        label = (BY_NUMBER[r["milestone"]] if r["milestone"] else ABLATION).label
        cells = [_cell(r[k], f) for k, f in (("params", ","), ("val_loss", ".3f"), ("val_bits", ".3f"),
                                            ("best_step", ","), ("steps", ","), ("wall_time", ".0f"))]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def model_card(milestone: Milestone, info: dict) -> str:
    cfg = info["model_config"]
    shown = {k: v for k, v in cfg.items() if k != "vocab"}
    return f"""---
library_name: toystory-gpt
tags: [character-level, toy-story, educational, pytorch_model_hub_mixin]
---

# Toy Story GPT — milestone {milestone.number}: {milestone.name}

{milestone.idea}

A character-level language model trained on the Toy Story (1995) screenplay (not included: the text
is copyrighted; see the project README for how it is obtained). Best validation loss
**{info['best_val_loss']:.3f} nats/char** ({info['best_val_loss'] / NATS_PER_BIT:.3f} bits/char) at step
{info['best_step']:,} of {info['steps']:,}; {info['params']:,} parameters; trained in {info['wall_time']:.0f} s.

Config (besides its {len(cfg['vocab'])}-character vocabulary): `{json.dumps(shown)}`.
Training: `{json.dumps(info['train_config'])}`.

Load it with the project's code: `toystory_gpt.weights.load(folder, milestone)`, or
`GPT.from_pretrained(folder, strict=True)`. `history.json` holds the loss curve and
`{milestone.folder}.txt` a sample.
"""


def saved_info(weights_dir: Path, milestone: Milestone) -> dict | None:
    """What training recorded for ``milestone`` in ``weights_dir``, or None where that is missing or unreadable
    (the weights loader reports such a folder as broken; a summary just leaves it out)."""
    path = folders.current(Path(weights_dir) / milestone.folder) / HISTORY_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return info if isinstance(info, dict) else None


def collect_rows(weights_dir: Path) -> list[dict]:
    """Rows for every model trained into ``weights_dir`` so far, milestones in order, then the ablation."""
    infos = ((m, saved_info(weights_dir, m)) for m in (*MILESTONES, ABLATION))
    return [row(m, info) for m, info in infos if info is not None]


def write_summary(weights_dir: Path, rows: list[dict], intro: str) -> None:
    """``results.json`` for machines and ``README.md`` (the overview card) for people."""
    weights_dir.mkdir(parents=True, exist_ok=True)
    (weights_dir / SUMMARY_FILE).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    (weights_dir / "README.md").write_text(f"# Toy Story GPT — trained milestones\n\n{intro}\n\n{table(rows)}", encoding="utf-8")
