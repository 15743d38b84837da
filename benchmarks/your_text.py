"""The app's CPU recipe for a visitor's text, measured: the ladder trained as the Your text tab trains it (one
thread, niceness 10), each model's val loss and wall time beside the standard recipe's committed results, the
rungs that fall out of the standard's order, and the plan's estimate against the measured time.

    python benchmarks/your_text.py --text ../shared/data/toy-story-1995-screenplay.txt --screenplay --standard weights
    python benchmarks/your_text.py --text ../shared/data/tiny-shakespeare.txt --standard results/tiny-shakespeare
    python benchmarks/your_text.py --text ... --milestones 1,2,3,8 --out /tmp/mine   # keep the folder

With ``--screenplay`` the text is cleaned as ``train.py --corpus`` cleans it, so the losses compare with the committed
ladder's; a visitor's text (and Tiny Shakespeare, both here and in train.py --text) is used as it is.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from common import machine, machine_line

from toystory_gpt import corpus, report, training_job
from toystory_gpt.milestones import LADDER, milestone_list
from toystory_gpt.report import markdown_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", type=Path, required=True)
    parser.add_argument("--screenplay", action="store_true",
                        help="the text is the screenplay: clean it as train.py does (its committed ladder's text)")
    parser.add_argument("--standard", type=Path, help="a weights folder trained with the standard recipe")
    parser.add_argument("--milestones", type=milestone_list, default=LADDER.numbers)
    parser.add_argument("--out", type=Path, help="keep the trained folder here (default: a temporary one)")
    args = parser.parse_args()
    text = corpus.load_screenplay(args.text) if args.screenplay else training_job.read_text(args.text, args.text.name)
    trainings = training_job.Trainings(device="cpu")
    plan = trainings.plan(text, args.milestones)
    out = args.out or Path(tempfile.mkdtemp(prefix="your-text-"))
    print(machine_line(machine()))
    print("load before:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(plan.describe(), "\n", flush=True)
    os.nice(training_job.NICENESS)
    torch.set_num_threads(1)
    start = time.perf_counter()
    seen = {}
    for update in training_job.run(training_job.Job(text, plan, out)):
        if update.saved:
            seen[update.milestone] = time.perf_counter()
            print(f"  saved milestone {update.milestone} at {update.elapsed:.0f} s", flush=True)
    total = time.perf_counter() - start
    print("load after:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    mine = {r.milestone: r for r in report.collect_rows(out) if r.served and r.milestone}
    standard = {r.milestone: r for r in report.collect_rows(args.standard) if r.served and r.milestone} \
        if args.standard else {}
    rows = []
    for m in plan.models:
        r, s = mine[m.milestone], standard.get(m.milestone)
        rows.append([r.label, f"{r['steps']:,}", f"{r['val_loss']:.3f}" + (" ↑" if r.still_improving else ""),
                     f"{r['wall_time']:.0f}", f"{plan.model_seconds(m):.0f}",
                     f"{s['val_loss']:.3f}" if s else "–", f"{s['steps']:,}" if s else "–",
                     f"{s['wall_time']:.0f}" if s else "–"])
    print(markdown_table(["milestone", "steps", "val (CPU recipe)", "time (s)", "estimated (s)", "val (standard)",
                          "steps (standard)", "time (s, standard)"], rows))
    print(f"\nwall time {total:.0f} s (estimated {plan.seconds:.0f} s); folder {out}")
    numbers = [m.milestone for m in plan.models]
    worse = [f"{LADDER[b].label} scored {mine[b]['val_loss']:.3f}, worse than {LADDER[a].label}'s "
             f"{mine[a]['val_loss']:.3f}" + (" (still improving ↑)" if mine[b].still_improving else "")
             for a, b in zip(numbers, numbers[1:]) if mine[b].val_loss > mine[a].val_loss]
    print("out of the standard's order:", "; ".join(worse) or "none")


if __name__ == "__main__":
    main()
