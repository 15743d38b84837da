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
import multiprocessing
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import torch

from toystory_gpt import checkpoint, corpus, folders, report, weights
from toystory_gpt.cores import usable_cores
from toystory_gpt.milestones import LADDER, Ladder, Milestone, milestone_list
from toystory_gpt.model import GPT, GPTConfig
from toystory_gpt.pool import generate
from toystory_gpt.record import CorpusRecord, RunSummary, TrainingRecord
from toystory_gpt.tokenizer import CharTokenizer
from toystory_gpt.trainer import TrainConfig, Trainer

# What each model writes, from the corpus's sample prompt (record.Presentation) with training's seed: 600 characters
# in its sample file, and 200 at every evaluation while it trains, so what it wrote at its best step starts that
# sample.
SAMPLE_LENGTH = 600
SAMPLE_TEMPERATURE = 0.8
RECORD_LENGTH = 200

QUICK_MODEL = dict(n_embd=32)
QUICK_TRAIN = dict(max_steps=30, batch_size=8, block_size=32, eval_interval=10, warmup_steps=5,
                   snapshot_steps=(10, 20))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    return torch.device(name)


@dataclass(frozen=True)
class Task:
    """One model trained once: a milestone with one seed. The served seed's weights are saved; the others' records."""
    milestone: Milestone
    seed: int
    served: bool

    @property
    def name(self) -> str:
        """Its name in run.json and under .checkpoints/."""
        return self.milestone.folder if self.served else f"seed-{self.seed}/{self.milestone.folder}"


@dataclass(frozen=True)
class RunPlan:
    """Everything a run trains with, fixed before the first model starts; each worker process gets a copy."""
    tasks: tuple[Task, ...]
    corpus: CorpusRecord
    vocab: str
    train_data: torch.Tensor
    val_data: torch.Tensor
    train_config: TrainConfig      # every model's, before its seed and its milestone's own training settings
    quick: bool
    device: torch.device
    out: Path
    jobs: int

    @property
    def threads(self) -> int:
        """The machine's threads shared out among the trainings at once (all of them for a single one)."""
        return torch.get_num_threads() if self.jobs == 1 else max(1, torch.get_num_threads() // self.jobs)

    def model_config(self, milestone: Milestone) -> GPTConfig:
        cfg = milestone.model_config(self.vocab, block_size=self.train_config.block_size)
        if self.quick and cfg.has_attention:
            cfg = dataclasses.replace(cfg, **QUICK_MODEL, n_layer=min(cfg.n_layer, 2))
        return cfg


def train_one(plan: RunPlan, task: Task) -> None:
    """Train one model (resuming from its checkpoint if there is one) and save its weights folder (the served
    seed) or its record (another seed)."""
    milestone, model_cfg = task.milestone, plan.model_config(task.milestone)
    train_cfg = dataclasses.replace(plan.train_config, seed=task.seed, **milestone.training)
    torch.manual_seed(task.seed)  # the initial weights, and then the dropout masks
    model = GPT(model_cfg).to(plan.device)
    saved_state = checkpoints(plan.out) / task.name
    tokenizer = CharTokenizer(plan.vocab)
    prompt = plan.corpus.presentation.sample_prompt

    def sample(model: GPT) -> str:
        return generate(model, tokenizer, prompt, RECORD_LENGTH, SAMPLE_TEMPERATURE, seed=task.seed)

    result = Trainer(model, train_cfg, plan.train_data, plan.val_data).run(
        desc=f"{milestone.label:<28}" + ("" if task.served else f" seed {task.seed}"), checkpoint_dir=saved_state,
        sample=sample)
    if result.interrupted:
        raise KeyboardInterrupt
    record = TrainingRecord(milestone=milestone.number, name=milestone.name, params=model.num_params,
                            best_val_loss=result.best_val_loss, best_step=result.best_step, steps=result.steps,
                            wall_time=result.wall_time, device=str(plan.device),
                            model_config=dataclasses.asdict(model_cfg), train_config=dataclasses.asdict(train_cfg),
                            corpus=plan.corpus, history=result.history)
    if not task.served:
        folders.write_file(report.seed_record_path(plan.out, task.seed, milestone), record.to_json())
        checkpoint.remove(saved_state)
        return
    model.cpu()
    text = generate(model, tokenizer, prompt, SAMPLE_LENGTH, SAMPLE_TEMPERATURE, seed=task.seed)
    sample = (f"Toy Story GPT — {milestone.label}\n{milestone.idea}\n"
              f"Best validation loss {result.best_val_loss:.3f} nats/char. Sample: prompt {prompt!r}, "
              f"{SAMPLE_LENGTH} characters, temperature {SAMPLE_TEMPERATURE}, seed {task.seed}.\n\n")
    if milestone.number == 1:  # the first rung is the dataset's exploration
        sample += f"Corpus statistics (the training text, both splits):\n{plan.corpus.to_text()}\n"
    sample += prompt + text + "\n"
    snapshots = {} if milestone.is_ablation else result.snapshots  # the ablation is not shown in the app
    weights.save(plan.out / milestone.folder, model, record, sample,
                 report.model_card(milestone, record, sorted(snapshots)), snapshots)
    checkpoint.remove(saved_state)


def checkpoints(out: Path) -> Path:
    """Where an unfinished run keeps its checkpoints and its record (``run.json``) until it completes."""
    return out / ".checkpoints"


@dataclass
class RunRecord:
    """An unfinished run (``.checkpoints/run.json``): its command line, and the tasks already saved."""
    argv: list[str]
    done: list[str]

    def save(self, out: Path) -> None:
        folders.write_file(checkpoints(out) / "run.json", json.dumps(dataclasses.asdict(self)))


def default_jobs(device: torch.device, models: int) -> int:
    """One training per CPU core this process may use (small models use cores poorly one at a time);
    one at a time on a GPU, which a single training already keeps busy."""
    if device.type != "cpu":
        return 1
    return max(1, min(usable_cores(), models))


def train_all(plan: RunPlan, on_done) -> None:
    """Train every task of the plan, ``plan.jobs`` at a time in separate processes, calling ``on_done(task)`` as
    each one is saved.

    Small models use cores poorly one at a time, so on a 2-core machine two single-threaded
    trainings beat one two-threaded training; the deepest models go first to keep both busy.
    """
    if plan.jobs == 1:
        for task in plan.tasks:
            train_one(plan, task)
            on_done(task)
        return
    order = sorted(plan.tasks, key=lambda t: t.milestone.config.get("n_layer", 0), reverse=True)
    with ProcessPoolExecutor(plan.jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=torch.set_num_threads, initargs=(plan.threads,)) as pool:
        futures = {pool.submit(train_one, plan, task): task for task in order}
        try:
            for future in as_completed(futures):
                future.result()
                on_done(futures[future])
        except BaseException:  # a failure or Ctrl-C: do not start the models still queued
            pool.shutdown(wait=True, cancel_futures=True)
            raise


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
