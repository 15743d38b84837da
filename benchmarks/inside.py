"""Inside-the-models speed, server-side: all eight milestones' surprise for a 300-character text, their next-character
bars, and attention over 128 characters; the surprise rows with the gain rows for all eight and the ablation, and
one deep model's logit lens, at 300 characters; and what one click in the Inside tab costs (every model at one slot,
with its attention and lens).

    python benchmarks/inside.py            # median of 9 runs
    python benchmarks/inside.py --quick    # median of 3 runs
    python benchmarks/inside.py --json     # one JSON object instead of the table

Targets: each view ≤ 0.3 s (the click's ≤ 0.5 s in the browser is measured by tests/test_inside_browser.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from common import SCREENPLAY_VOCAB, WEIGHTS, load_ladder, machine, machine_line, median_seconds, verdict

from toystory_gpt import analysis
from toystory_gpt.milestones import ABLATION, LADDER
from toystory_gpt.model import GPT
from toystory_gpt.report import markdown_table
from toystory_gpt.tokenizer import CharTokenizer
from toystory_gpt.ui import inside_view as view
from toystory_gpt.weights import SavedModel, load_ablation

# 300 characters of our own making, in the screenplay's layout.
TEXT = ("WOODY: Listen up, everybody! The new toy is coming up the stairs.\n"
        "BUZZ: I come in peace. Where is my space ship?\n"
        "REX: Is he dangerous? He looks dangerous to me.\n"
        "HAMM: Relax, he is just a toy like the rest of us, only shinier.\n"
        "WOODY: Everybody stay calm and get back to your places now.\n"
        "SLINKY: Okay, Woody. Whatever you say, pal.\n")[:300]
ATTENTION_CHARS = 128
TARGET_S = 0.3


def ablation(weights_dir: Path, trained: bool) -> SavedModel:
    """The ablation beside the ladder: trained if the ladder is and it loads, else random weights of its config."""
    if trained and (saved := load_ablation(weights_dir)):
        return saved
    m = LADDER.ablation
    return SavedModel(m, GPT(m.model_config(SCREENPLAY_VOCAB)).eval(), CharTokenizer(SCREENPLAY_VOCAB), None,
                      weights_dir / m.folder)


def measure(models: dict, runs: int) -> dict:
    """Median seconds of each view (attention: milestones 3-8, which have it; the lens: milestone 8)."""
    everyone = [key for key in models if key != ABLATION]
    attending = [n for n in everyone if models[n].model.config.has_attention]
    req = analysis.reading(models, TEXT, list(models), 0.8, 0)
    below = {key: lower.key for key in models if (lower := LADDER.below(LADDER.by_key(key))) is not None}
    eight = analysis.reading(models, TEXT, everyone, 0.8, 0)
    tail = TEXT[-ATTENTION_CHARS + 1:]
    slot = len(TEXT) - 1

    def gain_rows():  # what the tab does when the gain rows are on: score, build the rows, draw them
        return view.rows_html(view.rows(models, analysis.read_inside(models, req, below, False)), slot, True)

    def click():  # every model at one slot, with its attention and lens, and the cards drawn
        looks = analysis.look(models, req, slot)
        return view.bars_html(models, req, slot, looks), view.lens_html(models, req, slot, looks, LADDER)

    return {
        "surprise": median_seconds(lambda: analysis.surprise(models, analysis.reading(models, TEXT, everyone)), runs),
        "next_chars": median_seconds(lambda: analysis.next_chars(models, eight, 10), runs),
        "attention": median_seconds(lambda: [analysis.attention(models, analysis.reading(models, tail, [n]))
                                             for n in attending], runs),
        "gain_rows": median_seconds(gain_rows, runs),
        "lens": median_seconds(lambda: analysis.lens(models[8], TEXT), runs),
        "click": median_seconds(click, runs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=WEIGHTS, help="weights folder (default: weights/)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as the app)")
    parser.add_argument("--runs", type=int, help="timed runs per figure, the median is reported (default 9, --quick 3)")
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    runs = args.runs or (3 if args.quick else 9)
    torch.set_num_threads(args.threads)
    ladder, source = load_ladder(args.weights)
    facts = machine()
    models = {**{saved.milestone.number: saved for saved in ladder},
              ABLATION: ablation(args.weights, source.startswith("trained"))}
    figures = measure(models, runs)
    limits = {view: TARGET_S for view in ("surprise", "next_chars", "attention", "gain_rows", "lens")}
    if args.json:
        print(json.dumps({**facts, "trained_weights": source.startswith("trained"), "runs": runs,
                          **{f"{view}_seconds": s for view, s in figures.items()},
                          **{f"target_{view}_met": figures[view] <= limit for view, limit in limits.items()}}))
        return 0
    what = {"surprise": f"surprise, all eight × {len(TEXT)} characters (one batched pass each)",
            "next_chars": "next-character bars after the text, all eight (top 10, raw and sampled)",
            "attention": f"attention over {ATTENTION_CHARS} characters, milestones 3-8 (every layer and head)",
            "gain_rows": f"surprise rows + gain rows, all eight and the ablation × {len(TEXT)} characters (HTML drawn)",
            "lens": f"logit lens of milestone 8 × {len(TEXT)} characters (every block)",
            "click": "one click in the tab: all nine models at one slot (logits, attention, lens; cards drawn)"}
    rows = [[what[view], f"{s * 1000:.1f} ms",
             f"≤ {limits[view] * 1000:.0f} ms: {verdict(s <= limits[view])}" if view in limits else "—"]
            for view, s in figures.items()]
    print(f"Inside-the-models speed — {machine_line(facts)}\nModels: {source}. Median of {runs} runs after one "
          f"warmup run, server-side (no HTTP; the gain rows and the click include drawing their HTML).\n")
    print(markdown_table(["view", "median", "target"], rows), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
