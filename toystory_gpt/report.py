"""Tables and cards describing trained milestones: the results table, model cards, the summary JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

from .milestones import ABLATION, MILESTONES, Milestone

NATS_PER_BIT = math.log(2)
SUMMARY_FILE = "results.json"


def row(milestone: Milestone, info: dict) -> dict:
    """The summary row of one trained model (``info`` is what its history.json holds)."""
    return {"milestone": milestone.number, "name": milestone.name, "params": info["params"],
            "val_loss": info["best_val_loss"], "val_bits": info["best_val_loss"] / NATS_PER_BIT,
            "best_step": info["best_step"], "steps": info["steps"], "wall_time": info["wall_time"]}


def table(rows: list[dict]) -> str:
    """A Markdown table that reads well in a terminal too."""
    lines = ["| milestone | params | val nats/char | val bits/char | best step | steps | time (s) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        label = f"{r['milestone']} · {r['name']}" if r["milestone"] else f"ablation · {r['name']}"
        lines.append(f"| {label} | {r['params']:,} | {r['val_loss']:.3f} | {r['val_bits']:.3f} | "
                     f"{r['best_step']:,} | {r['steps']:,} | {r['wall_time']:.0f} |")
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


def collect_rows(weights_dir: Path) -> list[dict]:
    """Rows for every model trained into ``weights_dir`` so far, milestones in order, then the ablation."""
    rows = []
    for milestone in (*MILESTONES, ABLATION):
        history = Path(weights_dir) / milestone.folder / "history.json"
        if history.is_file():
            rows.append(row(milestone, json.loads(history.read_text(encoding="utf-8"))))
    return rows


def write_summary(weights_dir: Path, rows: list[dict], intro: str) -> None:
    """``results.json`` for machines and ``README.md`` (the overview card) for people."""
    weights_dir.mkdir(parents=True, exist_ok=True)
    (weights_dir / SUMMARY_FILE).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    (weights_dir / "README.md").write_text(f"# Toy Story GPT — trained milestones\n\n{intro}\n\n{table(rows)}", encoding="utf-8")
