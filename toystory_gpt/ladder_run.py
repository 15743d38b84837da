"""A run of the ladder: the plan every model trains with, and one model trained and saved as a weights folder.

``train.py`` (the command line) and ``training_job`` (a visitor's text, in the app) both train through here,
so a ladder trained either way is saved, recorded and sampled alike.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import checkpoint, folders, report, weights
from .cores import usable_cores
from .milestones import Milestone
from .model import GPT, GPTConfig
from .pool import generate
from .record import CorpusRecord, Evaluation, TrainingRecord
from .tokenizer import CharTokenizer
from .trainer import TrainConfig, Trainer

# What each model writes, from the corpus's sample prompt (record.Presentation) with training's seed: 600 characters
# in its sample file, and 200 at every evaluation while it trains, so what it wrote at its best step starts that
# sample.
SAMPLE_LENGTH = 600
SAMPLE_TEMPERATURE = 0.8
RECORD_LENGTH = 200

QUICK_MODEL = dict(n_embd=32)
QUICK_TRAIN = dict(max_steps=30, batch_size=8, block_size=32, eval_interval=10, warmup_steps=5,
                   snapshot_steps=(10, 20))


def local_device() -> str:
    """This machine's fastest device: "cuda", "mps" or "cpu"."""
    return "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"


def pick_device(name: str) -> torch.device:
    return torch.device(local_device() if name == "auto" else name)


@dataclass(frozen=True)
class Task:
    """One model trained once: a milestone with one seed. The served seed's weights are saved; the others' records."""
    milestone: Milestone
    seed: int
    served: bool
    training: Mapping = field(default_factory=dict)  # TrainConfig fields of this run's recipe, over the milestone's

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
        return model_config(milestone, self.vocab, self.train_config.block_size, self.quick)


def model_config(milestone: Milestone, vocab: str, block_size: int, quick: bool = False) -> GPTConfig:
    """The model ``milestone`` trains for ``vocab`` with a context of ``block_size``; ``quick``: --quick's tiny size."""
    cfg = milestone.model_config(vocab, block_size=block_size)
    if quick and cfg.has_attention:
        cfg = dataclasses.replace(cfg, **QUICK_MODEL, n_layer=min(cfg.n_layer, 2))
    return cfg


def train_one(plan: RunPlan, task: Task, progress: Callable[[int, Evaluation | None], None] | None = None) -> None:
    """Train one model (resuming from its checkpoint if there is one) and save its weights folder (the served
    seed) or its record (another seed). ``progress(step, evaluation)``: see ``Trainer.run``."""
    milestone, model_cfg = task.milestone, plan.model_config(task.milestone)
    train_cfg = dataclasses.replace(plan.train_config, seed=task.seed, **{**milestone.training, **task.training})
    torch.manual_seed(task.seed)  # the initial weights, and then the dropout masks
    model = GPT(model_cfg).to(plan.device)
    saved_state = checkpoints(plan.out) / task.name
    tokenizer = CharTokenizer(plan.vocab)
    prompt = plan.corpus.presentation.sample_prompt

    def sample(model: GPT) -> str:
        return generate(model, tokenizer, prompt, RECORD_LENGTH, SAMPLE_TEMPERATURE, seed=task.seed)

    result = Trainer(model, train_cfg, plan.train_data, plan.val_data).run(
        desc=f"{milestone.label:<28}" + ("" if task.served else f" seed {task.seed}"), checkpoint_dir=saved_state,
        sample=sample, progress=progress)
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


