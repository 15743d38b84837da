"""Inside-the-models speed, server-side: all eight milestones' surprise for a 300-character text, their next-character
bars, and attention over 128 characters; and what one click in the Inside tab costs (every milestone at one slot).

    python benchmarks/analysis.py            # median of 9 runs
    python benchmarks/analysis.py --quick    # median of 3 runs
    python benchmarks/analysis.py --json     # one JSON object instead of the table

Targets: each view ≤ 0.3 s for all eight milestones (the click's ≤ 0.5 s in the browser is measured by
tests/test_inside_browser.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

# The repo root, so `python benchmarks/inside.py` works.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import WEIGHTS, load_ladder, machine, machine_line, median_seconds, verdict  # noqa: E402
from toystory_gpt import analysis  # noqa: E402
from toystory_gpt.report import markdown_table  # noqa: E402

# 300 characters of our own making, in the screenplay's layout.
TEXT = ("WOODY: Listen up, everybody! The new toy is coming up the stairs.\n"
        "BUZZ: I come in peace. Where is my space ship?\n"
        "REX: Is he dangerous? He looks dangerous to me.\n"
        "HAMM: Relax, he is just a toy like the rest of us, only shinier.\n"
        "WOODY: Everybody stay calm and get back to your places now.\n"
        "SLINKY: Okay, Woody. Whatever you say, pal.\n")[:300]
ATTENTION_CHARS = 128
TARGET_S = 0.3


def measure(models: dict, runs: int) -> dict:
    """Median seconds of each view for all eight milestones (attention: milestones 3-8, which have it)."""
    everyone = sorted(models)
    attending = [n for n in everyone if models[n].model.config.has_attention]
    req = analysis.reading(models, TEXT, everyone, 0.8, 0)
    tail = TEXT[-ATTENTION_CHARS + 1:]
    return {
        "surprise": median_seconds(lambda: analysis.surprise(models, analysis.reading(models, TEXT, everyone)), runs),
        "next_chars": median_seconds(lambda: analysis.next_chars(models, req, 10), runs),
        "attention": median_seconds(lambda: [analysis.attention(models, analysis.reading(models, tail, [n]))
                                             for n in attending], runs),
        "click": median_seconds(lambda: analysis.look(models, req, len(TEXT) - 1), runs),
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
    figures = measure({saved.milestone.number: saved for saved in ladder}, runs)
    limits = {"surprise": TARGET_S, "next_chars": TARGET_S, "attention": TARGET_S}
    if args.json:
        print(json.dumps({**facts, "trained_weights": source.startswith("trained"), "runs": runs,
                          **{f"{view}_seconds": s for view, s in figures.items()},
                          **{f"target_{view}_met": figures[view] <= limit for view, limit in limits.items()}}))
        return 0
    what = {"surprise": f"surprise, all eight × {len(TEXT)} characters (one batched pass each)",
            "next_chars": "next-character bars after the text, all eight (top 10, raw and sampled)",
            "attention": f"attention over {ATTENTION_CHARS} characters, milestones 3-8 (every layer and head)",
            "click": "one click in the tab: every milestone's logits and attention at one slot"}
    rows = [[what[view], f"{s * 1000:.1f} ms",
             f"≤ {limits[view] * 1000:.0f} ms: {verdict(s <= limits[view])}" if view in limits else "—"]
            for view, s in figures.items()]
    print(f"Inside-the-models speed — {machine_line(facts)}\nModels: {source}. Median of {runs} runs after one "
          f"warmup run, server-side (no HTTP, no HTML).\n")
    print(markdown_table(["view", "median", "target"], rows), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
