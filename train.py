"""Train the Toy Story GPT ladder: eight character-level models, each adding one idea to the last.

    python train.py                                   # all eight (+ the no-residual ablation), on the screenplay
    python train.py --milestones 2,5,8 --corpus ../shared/data/toy-story-1995-screenplay.txt
    python train.py --text my-book.txt --out /tmp/mine # any UTF-8 plain text; or --text tiny-shakespeare
    python train.py --seeds 1337,2,3                  # every model once per seed: mean ± sd in the results
    python train.py --quick --out /tmp/weights        # a tiny configuration, for smoke tests
    python train.py --resume                          # finish an interrupted run where it stopped
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from toystory_gpt import checkpoint, corpus, folders, report
from toystory_gpt.ladder_run import QUICK_TRAIN, RunPlan, Task, checkpoints, default_jobs, pick_device, train_all
from toystory_gpt.milestones import LADDER, Ladder, milestone_list
from toystory_gpt.record import RunSummary
from toystory_gpt.tokenizer import CharTokenizer
from toystory_gpt.trainer import TrainConfig


@dataclass
class RunRecord:
    """An unfinished run (``.checkpoints/run.json``): its command line, and the tasks already saved."""
    argv: list[str]
    done: list[str]

    def save(self, out: Path) -> None:
        folders.write_file(checkpoints(out) / "run.json", json.dumps(dataclasses.asdict(self)))


def seed_list(value: str) -> list[int]:
    """Seeds written as ``1337,2,3`` (an argparse ``type``): distinct, in the order given."""
    try:
        seeds = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seeds like 1337,2,3, got {value!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"expected distinct non-negative seeds like 1337,2,3, got {value!r}")
    return seeds


def main(argv: list[str] | None = None, ladder: Ladder = LADDER) -> int:
    """Train ``ladder``'s milestones as the command line says."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--milestones", type=milestone_list(ladder), default=ladder.numbers,
                        help=f"comma-separated milestone numbers (default: all {len(ladder)})")
    parser.add_argument("--corpus",
                        help=f"path to the screenplay (default: ${corpus.CORPUS_ENV}, else the cache, else download)")
    parser.add_argument("--text", metavar="PATH|NAME",
                        help=f"train on this UTF-8 plain text instead, as it is (the last 10%% for validation): a "
                             f"path, or a named download: {', '.join(corpus.NAMED_TEXTS)}")
    parser.add_argument("--out", type=Path, default=Path("weights"), help="weights folder (default: weights)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    parser.add_argument("--max-steps", type=int, help=f"training steps per milestone (default {TrainConfig.max_steps})")
    parser.add_argument("--seeds", type=seed_list, default=[TrainConfig.seed],
                        help=f"train every model once per seed (init, batches, dropout), e.g. 1337,2,3; the first "
                             f"seed's weights are saved, the others' records go to {report.SEEDS_DIR}/ "
                             f"(default {TrainConfig.seed})")
    parser.add_argument("--ablation", action=argparse.BooleanOptionalAction, default=None,
                        help=f"also train the ablation, {ladder.ablation.name} "
                             f"(default: when milestone {ladder.ablation_of} is trained)")
    parser.add_argument("--quick", action="store_true", help="tiny models and a few steps: a smoke test in seconds")
    parser.add_argument("--jobs", type=int,
                        help="models trained at once, each in its own process (default: one per CPU core "
                             "this process may use; 1 on a GPU)")
    parser.add_argument("--resume", action="store_true",
                        help="finish the interrupted run in --out with its own options, from its checkpoints")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.text is not None and args.corpus is not None:
        parser.error("--text and --corpus name two corpora: give one")
    run_file = checkpoints(args.out) / "run.json"
    resuming = args.resume  # the run's own options, parsed next, do not hold --resume
    if resuming:
        if not run_file.is_file():
            print(f"error: nothing to resume: {run_file} records no interrupted run", file=sys.stderr)
            return 2
        run = RunRecord(**json.loads(run_file.read_text(encoding="utf-8")))
        argv = run.argv
        args = parser.parse_args(argv)
        print(f"resuming `python train.py {' '.join(argv)}`; already saved: {run.done or 'none'}")
    else:
        run = RunRecord(argv, [])

    train_cfg = TrainConfig(**(QUICK_TRAIN if args.quick else {}))
    if args.max_steps is not None:
        train_cfg = dataclasses.replace(train_cfg, max_steps=args.max_steps)
    try:  # all before anything is written to --out: a text that cannot be trained on leaves it as it was
        text = corpus.load(args.text, args.corpus)
        corpus.check_trainable(text, train_cfg.block_size)
    except corpus.CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tokenizer = CharTokenizer.from_text(text.text)
    train_data, val_data = text.split_ids(tokenizer)
    print(f"corpus: {text.record.name}, {len(text.text):,} characters, vocabulary {tokenizer.vocab_size}, "
          f"train {len(train_data):,} / val {len(val_data):,}")
    if not resuming:
        shutil.rmtree(checkpoints(args.out), ignore_errors=True)  # a new run starts from scratch

    device = pick_device(args.device)
    models = [ladder[n] for n in args.milestones]
    if args.ablation if args.ablation is not None else ladder.ablation_of in args.milestones:
        models.append(ladder.ablation)
    tasks = [Task(m, seed, served=seed == args.seeds[0]) for seed in args.seeds for m in models]
    tasks = tuple(t for t in tasks if t.name not in run.done)
    plan = RunPlan(tasks, text.record, tokenizer.vocab, train_data, val_data, train_cfg, args.quick, device, args.out,
                   args.jobs or default_jobs(device, len(tasks)))

    def on_done(task: Task) -> None:
        run.done.append(task.name)
        run.save(args.out)

    run.save(args.out)
    start = time.perf_counter()
    try:
        train_all(plan, on_done)
    except checkpoint.CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: finished models are saved, the others' folders untouched; "
              f"`python train.py --resume --out {args.out}` continues from the last checkpoints", file=sys.stderr)
        return 130
    total = time.perf_counter() - start
    shutil.rmtree(checkpoints(args.out), ignore_errors=True)
    rows = report.collect_rows(args.out, args.seeds, ladder)
    command = " ".join(["python train.py", *argv])
    report.write_summary(args.out, RunSummary(command=command, wall_time=total, corpus=text.record, seeds=args.seeds,
                                              rows=rows),
                         f"Trained with `{command}` on {device} ({plan.jobs} job(s) at once, "
                         f"{plan.threads} thread(s) each); the run took {total:.0f} s.", ladder)
    print("\n" + report.table(rows, ladder=ladder))
    print(f"total wall time: {total:.0f} s; saved to {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
