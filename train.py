"""Train the Toy Story GPT ladder: eight character-level models, each adding one idea to the last.

    python train.py                                   # all eight (+ the no-residual ablation)
    python train.py --milestones 2,5,8 --corpus ../shared/data/toy-story-1995-screenplay.txt
    python train.py --quick --out /tmp/weights        # a tiny configuration, for smoke tests
    python train.py --resume                          # finish an interrupted run where it stopped
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch

from toystory_gpt import checkpoint, corpus, folders, milestones, report, weights
from toystory_gpt.milestones import Milestone, milestone_list
from toystory_gpt.model import GPT
from toystory_gpt.record import RunSummary, TrainingRecord
from toystory_gpt.serving import generate
from toystory_gpt.tokenizer import CharTokenizer
from toystory_gpt.trainer import TrainConfig, Trainer

SAMPLE_PROMPT = "WOODY: "
SAMPLE_LENGTH = 600
SAMPLE_TEMPERATURE = 0.8
# What each model writes at every evaluation while it trains: the same prompt, temperature and seed
# (TrainConfig.seed) as the final sample, so what it wrote at its best step starts that sample.
RECORD_LENGTH = 200

QUICK_MODEL = dict(block_size=32, n_embd=32)
QUICK_TRAIN = dict(max_steps=30, batch_size=8, block_size=32, eval_interval=10, warmup_steps=5,
                   snapshot_steps=(10, 20))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    return torch.device(name)


def train_one(milestone: Milestone, vocab: str, train_cfg: TrainConfig, data: tuple, device, quick: bool,
              out: Path, stats: dict) -> None:
    """Train one model (resuming from its checkpoint if there is one) and save its weights folder."""
    model_cfg = milestone.model_config(vocab)
    if quick and model_cfg.has_attention:
        model_cfg = dataclasses.replace(model_cfg, **QUICK_MODEL, n_layer=min(model_cfg.n_layer, 2))
    train_cfg = dataclasses.replace(train_cfg, **milestone.training)
    train_cfg = dataclasses.replace(train_cfg, block_size=min(train_cfg.block_size, model_cfg.block_size))
    torch.manual_seed(train_cfg.seed)
    model = GPT(model_cfg).to(device)
    saved_state = checkpoints(out) / milestone.folder
    tokenizer = CharTokenizer(vocab)

    def sample(model: GPT) -> str:
        return "".join(generate(model, tokenizer, SAMPLE_PROMPT, RECORD_LENGTH, SAMPLE_TEMPERATURE,
                                seed=train_cfg.seed))

    result = Trainer(model, train_cfg, *data).run(desc=f"{milestone.label:<28}", checkpoint_dir=saved_state,
                                                  sample=sample)
    if result.interrupted:
        raise KeyboardInterrupt
    record = TrainingRecord(milestone=milestone.number, name=milestone.name, params=model.num_params,
                            best_val_loss=result.best_val_loss, best_step=result.best_step, steps=result.steps,
                            wall_time=result.wall_time, device=str(device), model_config=dataclasses.asdict(model_cfg),
                            train_config=dataclasses.asdict(train_cfg), history=result.history)
    model.cpu()
    text = "".join(generate(model, tokenizer, SAMPLE_PROMPT, SAMPLE_LENGTH, SAMPLE_TEMPERATURE, seed=train_cfg.seed))
    sample = (f"Toy Story GPT — {milestone.label}\n{milestone.idea}\n"
              f"Best validation loss {result.best_val_loss:.3f} nats/char. Sample: prompt {SAMPLE_PROMPT!r}, "
              f"{SAMPLE_LENGTH} characters, temperature {SAMPLE_TEMPERATURE}, seed {train_cfg.seed}.\n\n")
    if milestone.number == 1:  # the first rung is the dataset's exploration
        sample += f"Corpus statistics (clean text, both splits):\n{corpus.CorpusStats(**stats).to_text()}\n"
    sample += SAMPLE_PROMPT + text + "\n"
    snapshots = {} if milestone.is_ablation else result.snapshots  # the ablation is not shown in the app
    weights.save(out / milestone.folder, model, record, sample, report.model_card(milestone, record, sorted(snapshots)),
                 snapshots)
    checkpoint.remove(saved_state)


def checkpoints(out: Path) -> Path:
    """Where an unfinished run keeps its checkpoints and its record (``run.json``) until it completes."""
    return out / ".checkpoints"


def record_run(out: Path, run: dict) -> None:
    folders.write_file(checkpoints(out) / "run.json", json.dumps(run))


def default_jobs(device: torch.device, models: int) -> int:
    """One training per CPU core this process may use (small models use cores poorly one at a time);
    one at a time on a GPU, which a single training already keeps busy."""
    if device.type != "cpu":
        return 1
    return max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
                      models))


def threads_per_job(jobs: int) -> int:
    """The machine's threads shared out among ``jobs`` trainings at once (all of them for a single one)."""
    return torch.get_num_threads() if jobs == 1 else max(1, torch.get_num_threads() // jobs)


def train_all(todo: list[Milestone], jobs: int, on_done, *args) -> None:
    """Train each model (``train_one(milestone, *args)``), ``jobs`` at a time in separate processes,
    calling ``on_done(milestone)`` as each one is saved.

    Small models use cores poorly one at a time, so on a 2-core machine two single-threaded
    trainings beat one two-threaded training; the deepest models go first to keep both busy.
    """
    if jobs == 1:
        for milestone in todo:
            train_one(milestone, *args)
            on_done(milestone)
        return
    threads = threads_per_job(jobs)
    order = sorted(todo, key=lambda m: m.config.get("n_layer", 0), reverse=True)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=torch.set_num_threads, initargs=(threads,)) as pool:
        futures = {pool.submit(train_one, m, *args): m for m in order}
        try:
            for future in as_completed(futures):
                future.result()
                on_done(futures[future])
        except BaseException:  # a failure or Ctrl-C: do not start the models still queued
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ladder = milestones.LADDER
    parser.add_argument("--milestones", type=milestone_list, default=ladder.numbers,
                        help=f"comma-separated milestone numbers (default: all {len(ladder)})")
    parser.add_argument("--corpus",
                        help=f"path to the screenplay (default: ${corpus.CORPUS_ENV}, else the cache, else download)")
    parser.add_argument("--out", type=Path, default=Path("weights"), help="weights folder (default: weights)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    parser.add_argument("--max-steps", type=int, help=f"training steps per milestone (default {TrainConfig.max_steps})")
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
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
    run_file = checkpoints(args.out) / "run.json"
    if args.resume:
        if not run_file.is_file():
            print(f"error: nothing to resume: {run_file} records no interrupted run", file=sys.stderr)
            return 2
        run = json.loads(run_file.read_text(encoding="utf-8"))
        argv = run["argv"]
        args = parser.parse_args(argv)
        print(f"resuming `python train.py {' '.join(argv)}`; already saved: {run['done'] or 'none'}")
    else:
        shutil.rmtree(checkpoints(args.out), ignore_errors=True)  # a new run starts from scratch
        run = {"argv": argv, "done": []}

    try:
        elements = corpus.load_elements(args.corpus)
    except corpus.CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = corpus.render(elements)
    tokenizer = CharTokenizer.from_text(text)
    train_data, val_data = corpus.split(torch.tensor(tokenizer.encode(text).ids))
    stats = dataclasses.asdict(corpus.stats(elements))
    print(f"corpus: {len(text):,} characters, vocabulary {tokenizer.vocab_size}, "
          f"train {len(train_data):,} / val {len(val_data):,}")

    train_cfg = TrainConfig(seed=args.seed, **(QUICK_TRAIN if args.quick else {}))
    if args.max_steps is not None:
        train_cfg = dataclasses.replace(train_cfg, max_steps=args.max_steps)
    device = pick_device(args.device)
    todo = [ladder[n] for n in args.milestones]
    if args.ablation if args.ablation is not None else ladder.ablation_of in args.milestones:
        todo.append(ladder.ablation)
    todo = [m for m in todo if m.folder not in run["done"]]
    jobs = args.jobs or default_jobs(device, len(todo))

    def on_done(milestone: Milestone) -> None:
        run["done"].append(milestone.folder)
        record_run(args.out, run)

    record_run(args.out, run)
    start = time.perf_counter()
    try:
        train_all(todo, jobs, on_done, tokenizer.vocab, train_cfg, (train_data, val_data), device, args.quick,
                  args.out, stats)
    except checkpoint.CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: finished models are saved, the others' folders untouched; "
              f"`python train.py --resume --out {args.out}` continues from the last checkpoints", file=sys.stderr)
        return 130
    total = time.perf_counter() - start
    shutil.rmtree(checkpoints(args.out), ignore_errors=True)
    rows = report.collect_rows(args.out)
    command = " ".join(["python train.py", *argv])
    threads = threads_per_job(jobs)
    report.write_summary(args.out, RunSummary(command=command, wall_time=total, corpus=stats, rows=rows),
                         f"Trained with `{command}` on {device} ({jobs} job(s) at once, "
                         f"{threads} thread(s) each); the run took {total:.0f} s.")
    print("\n" + report.table(rows))
    print(f"total wall time: {total:.0f} s; saved to {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
