"""A visitor's text trained into the ladder while they watch: the plan (a recipe, each model's steps, what it costs
and where it runs), checked before anything starts, run in a worker process, its progress reported as plain data.

Where it runs (``where``): on ZeroGPU inside one ``@spaces.GPU`` call whose duration is the plan's; on a CUDA or
MPS device where the machine has one; else on the CPU with ``CPU_RECIPE``, in a worker process at lower
priority with one thread, so that generation keeps serving everyone else. The worker is the same everywhere:
a process of its own (forked, as ZeroGPU makes of a ``@spaces.GPU`` call; spawned on a CUDA or MPS device, which a
forked child cannot use once the server asked about it) that gets the text and the plan as plain data (pickled),
writes the ladder's weights folder to disk and sends back ``Progress`` records; the server then loads the folder.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import queue
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import corpus, milestones, report
from .ladder_run import QUICK_TRAIN, RunPlan, Task, local_device, model_config, train_one
from .milestones import Ladder, Milestone
from .model import GPT
from .record import Evaluation, RunSummary
from .tokenizer import CharTokenizer
from .trainer import TrainConfig, fresh_progress_lock

try:  # on ZeroGPU the GPU exists only inside a @spaces.GPU call; elsewhere the decorator does nothing
    import spaces
except ImportError:
    spaces = None

NICENESS = 10            # the CPU worker's: generation (the server's threads) goes first
EVALUATIONS = 10         # per attention model in a budgeted recipe: the curves' points and the rewind's samples

# What the plan's time estimates assume, per device kind: sustained FLOP/s of a training step, and the fixed cost
# of a step and of an evaluation (its samples of train.RECORD_LENGTH characters, one token at a time). The CPU's
# were measured here (docs/your-text.md); the GPU's are an assumption for a launch-bound tiny model on half an
# RTX Pro 6000, never measured: no GPU here.
THROUGHPUT = {"cpu": 30e9, "gpu": 20e12}
STEP_SECONDS = {"cpu": 0.002, "gpu": 0.004}
EVALUATION_SECONDS = {"cpu": 0.15, "gpu": 0.4}
GPU_MARGIN, GPU_START = 1.5, 15   # a ZeroGPU call ends at its duration: ask for the estimate x1.5 + start-up


class Busy(RuntimeError):
    """The machine is training another ladder; the message says so."""


@dataclass(frozen=True)
class Recipe:
    """How a visitor's ladder is trained: TrainConfig fields over the standard ones, and, for a budgeted recipe,
    the steps each attention model gets when the whole ladder is trained (``Plan`` shares that budget out)."""
    name: str
    train: Mapping = field(default_factory=dict)
    attention_steps: int | None = None   # None: the standard recipe (its steps, early stopping)
    quick: bool = False                  # train.py --quick's tiny models (tests)

    @property
    def train_config(self) -> TrainConfig:
        return TrainConfig(**self.train)


STANDARD = Recipe("the standard recipe (train.py's)")
# On a 2-core CPU a full standard ladder takes ~10 minutes or more: a shorter context (64) halves a step, and the
# attention models share a budget worth 250 steps each for the whole ladder, the same steps for each.
CPU_RECIPE = Recipe("the short CPU recipe", dict(block_size=64), attention_steps=250)
TINY_RECIPE = Recipe("the tiny test recipe", QUICK_TRAIN, attention_steps=20, quick=True)  # tests only


def where() -> str:
    """Where a training would run here: "zerogpu", "cuda", "mps" or "cpu"."""
    if spaces is not None and spaces.config.Config.zero_gpu:
        return "zerogpu"
    return local_device()


@dataclass(frozen=True)
class ModelPlan:
    """One model of a plan: how many steps, and what they cost."""
    milestone: int
    label: str
    steps: int
    training: Mapping     # TrainConfig fields besides the recipe's and the milestone's own
    step_flops: float
    flops: float          # every step and evaluation
    evaluations: int


@dataclass(frozen=True)
class Plan:
    """Everything a visitor's training will do, fixed and costed before it starts."""
    recipe: Recipe
    device: str                      # where(): "zerogpu", "cuda", "mps" or "cpu"
    models: tuple[ModelPlan, ...]
    characters: int
    vocabulary: int
    ladder: Ladder = field(default=milestones.LADDER, compare=False)  # whose milestones it trains

    @property
    def train_config(self) -> TrainConfig:
        return self.recipe.train_config

    @property
    def flops(self) -> float:
        return sum(m.flops for m in self.models)

    @property
    def kind(self) -> str:
        return "cpu" if self.device == "cpu" else "gpu"

    def model_seconds(self, model: ModelPlan) -> float:
        return (model.flops / THROUGHPUT[self.kind] + model.steps * STEP_SECONDS[self.kind]
                + model.evaluations * EVALUATION_SECONDS[self.kind])

    @property
    def seconds(self) -> float:
        """The estimated wall time of the whole training."""
        return sum(self.model_seconds(m) for m in self.models)

    @property
    def gpu_duration(self) -> int:
        """Seconds to ask of ZeroGPU (charged to the visitor's daily quota): the estimate with a margin."""
        return math.ceil(self.seconds * GPU_MARGIN + GPU_START)

    def describe(self) -> str:
        """The plan in words (Markdown), shown before Start."""
        steps = ", ".join(f"{m.label.split(' · ')[0]}: {m.steps:,}" for m in self.models)
        place = {"zerogpu": "on a ZeroGPU slice (half an RTX Pro 6000)", "cuda": "on this machine's CUDA GPU",
                 "mps": "on this Mac's GPU (MPS)", "cpu": f"on this server's CPU, one core, at lower priority "
                                                          f"(niceness {NICENESS})"}[self.device]
        cost = f"about {duration(self.seconds)} (an estimate from its {self.flops / 1e12:,.1f} TFLOPs)"
        if self.device == "zerogpu":
            cost += (f"; it asks ZeroGPU for {self.gpu_duration} s of your daily GPU quota (2 min without an "
                     f"account, 5 min with a free one)")
        lines = [f"**{len(self.models)} models, {self.recipe.name}, {place}**: {cost}.",
                 f"Your text: {self.characters:,} characters, {self.vocabulary} distinct. Steps per model: {steps}."]
        if self.recipe.attention_steps is not None:
            standard = TrainConfig.max_steps
            lines.append(f"The budget: what {self.recipe.attention_steps:,} steps of each attention model of the "
                         f"whole ladder cost, shared out by each one's cost per step: the chosen ones get the same "
                         f"steps each, so the deep ones take most of it (the standard recipe trains up to "
                         f"{standard:,}; the tables, nearly free, get their standard {standard:,}). A model marked "
                         f"{report.STILL_IMPROVING} was still improving when its budget ran out: where it scores "
                         f"worse than the model below it, that is the budget's doing, not its idea's.")
        return "\n\n".join(lines)


def duration(seconds: float) -> str:
    """Seconds as a visitor reads them: "42 s", "3.5 min"."""
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def step_flops(milestone: Milestone, vocab: str, cfg: TrainConfig, quick: bool) -> float:
    """A training step's FLOPs (forward and backward): 6 per parameter and token, and attention's scores."""
    model_cfg = model_config(milestone, vocab, cfg.block_size, quick)
    with torch.device("meta"):  # the shapes only: no memory, no initialisation
        params = GPT(model_cfg).num_params
    tokens = cfg.batch_size * cfg.block_size
    return 6 * params * tokens + 12 * model_cfg.n_layer * cfg.block_size * model_cfg.n_embd * tokens


def plan(text: corpus.Corpus, numbers: Sequence[int], recipe: Recipe, device: str,
         ladder: Ladder = milestones.LADDER) -> Plan:
    """What training ``numbers`` on ``text`` with ``recipe`` would do. A budgeted recipe shares its budget out by each
    model's cost: the budget is what ``attention_steps`` steps of every attention model of the ladder cost, and the
    chosen ones get the same steps each, as many as it buys them (fewer models, more steps, up to the standard's), so
    each takes its cost's share (the deep models most); the tables, nearly free, train their standard steps.
    (Equal time each instead, the cheap models trained longest, put more rungs out of order: a rung then trails the
    one below it for having trained fewer steps.)"""
    cfg = recipe.train_config
    vocab = "".join(sorted(set(text.text)))
    chosen = [ladder[n] for n in sorted(numbers)]
    costs = {m.number: step_flops(m, vocab, cfg, recipe.quick) for m in ladder}
    attention = [m for m in chosen if m.config.get("n_layer", 0) > 0]
    steps = {}
    if recipe.attention_steps is not None and attention:
        budget = recipe.attention_steps * sum(costs[m.number] for m in ladder
                                              if m.config.get("n_layer", 0) > 0)
        each = min(cfg.max_steps, int(budget / sum(costs[m.number] for m in attention)))
        steps = {m.number: each for m in attention}
    val_tokens = len(corpus.split(text.text)[1])
    models = []
    for m in chosen:
        training = {}
        if m.number in steps:
            interval = max(1, steps[m.number] // EVALUATIONS)
            training = dict(max_steps=steps[m.number], eval_interval=interval,
                            warmup_steps=max(1, steps[m.number] // 10),
                            snapshot_steps=tuple(interval * k for k in (1, 3)))
        run_cfg = dataclasses.replace(cfg, **{**m.training, **training})
        evaluations = run_cfg.max_steps // run_cfg.eval_interval + 1
        flops = costs[m.number] * run_cfg.max_steps + evaluations * costs[m.number] / 3 * val_tokens / (
            cfg.batch_size * cfg.block_size)
        models.append(ModelPlan(m.number, m.label, run_cfg.max_steps, training, costs[m.number], flops, evaluations))
    return Plan(recipe, device, tuple(models), len(text.text), len(vocab), ladder)


def read_text(path: Path, shown_as: str) -> corpus.Corpus:
    """The text at ``path`` with every check of ``train.py --text`` (the same messages, naming it ``shown_as``);
    corpus.CorpusError says what is wrong. Its length is TrainRequest's to check."""
    try:
        return corpus.load_text(str(path))
    except corpus.CorpusError as exc:
        raise corpus.CorpusError(str(exc).replace(str(path), shown_as)) from None


@dataclass(frozen=True)
class Job:
    """A training to run: plain data, as a forked worker or a @spaces.GPU call receives it."""
    text: corpus.Corpus
    plan: Plan
    out: Path
    seed: int = TrainConfig.seed


@dataclass(frozen=True)
class Progress:
    """Where a training stands: the model training now, its step, and the plan's work done so far (0 to 1)."""
    milestone: int
    step: int
    steps: int
    done: float
    elapsed: float
    evaluation: Evaluation | None = None   # made at this step
    saved: bool = False                    # the model's weights folder is written


UPDATE_EVERY = 0.25  # seconds between progress records between evaluations


def run(job: Job) -> Iterator[Progress]:
    """Train the job's plan into ``job.out`` (a weights folder with results.json), yielding its progress; closing the
    generator stops the training at its next step."""
    device = torch.device("cuda" if job.plan.device in ("zerogpu", "cuda") else job.plan.device)
    tokenizer = CharTokenizer.from_text(job.text.text)
    train_data, val_data = job.text.split_ids(tokenizer)
    ladder = job.plan.ladder
    tasks = tuple(Task(ladder[m.milestone], job.seed, True, m.training) for m in job.plan.models)
    run_plan = RunPlan(tasks, job.text.record, tokenizer.vocab, train_data, val_data, job.plan.train_config,
                       job.plan.recipe.quick, device, Path(job.out), 1)
    updates: queue.Queue = queue.Queue()
    stopping = threading.Event()
    start = time.perf_counter()

    def train() -> None:
        done = 0.0
        try:
            for model, task in zip(job.plan.models, tasks):
                last = [0.0]

                def progress(step: int, evaluation: Evaluation | None, model=model) -> None:
                    if stopping.is_set():
                        raise KeyboardInterrupt  # the trainer's own way to stop early
                    now = time.perf_counter()
                    if evaluation is not None or now - last[0] >= UPDATE_EVERY:
                        last[0] = now
                        updates.put(Progress(model.milestone, step, model.steps,
                                             (done + model.flops * step / model.steps) / job.plan.flops,
                                             now - start, evaluation))

                train_one(run_plan, task, progress)
                done += model.flops
                updates.put(Progress(model.milestone, model.steps, model.steps, done / job.plan.flops,
                                     time.perf_counter() - start, saved=True))
            rows = report.collect_rows(job.out, [job.seed], ladder)
            report.write_summary(job.out, RunSummary("the app's Your text tab", time.perf_counter() - start,
                                                     job.text.record, [job.seed], rows),
                                 f"Trained in the app with {job.plan.recipe.name} on {job.plan.device}.", ladder)
            updates.put(None)
        except BaseException as exc:  # noqa: BLE001 - told to the reader, which raises it
            updates.put(exc)

    worker = threading.Thread(target=train, name="ladder-training", daemon=True)
    worker.start()
    try:
        while (update := updates.get()) is not None:
            if isinstance(update, BaseException):
                raise update
            yield update
    finally:
        stopping.set()
        worker.join()


def _on_gpu(job: Job) -> Iterator[Progress]:
    fresh_progress_lock()  # ZeroGPU runs this in a process it forked
    yield from run(job)


# Decorated at import, as ZeroGPU requires; the duration is the plan's (computed before Start, shown to the visitor).
_gpu_run = spaces.GPU(duration=lambda job: job.plan.gpu_duration)(_on_gpu) if spaces is not None else _on_gpu


class Failed(RuntimeError):
    """The training stopped with an error; the message says which."""


def _worker(job: Job, updates) -> None:
    """The forked worker: lower priority and one thread on the CPU; every progress record sent back as it comes,
    the trainer's progress bars not written to the server's log."""
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the process's life
    fresh_progress_lock()
    if job.plan.device == "cpu":
        os.nice(NICENESS)
        torch.set_num_threads(1)
    try:
        for update in run(job):
            updates.put(update)
        updates.put(None)
    except BaseException as exc:  # noqa: BLE001 - the parent tells the visitor
        updates.put(Failed(f"{type(exc).__name__}: {exc}"))


def start_method(device: str):
    """The multiprocessing context of a worker on ``device``: forked on the CPU (the call model of ZeroGPU,
    rehearsed); spawned on CUDA or MPS, which a forked child cannot use once its parent asked about them."""
    return multiprocessing.get_context("fork" if device == "cpu" else "spawn")


class Training:
    """One training running in a worker: read its ``updates()``, ``stop()`` it (from any thread)."""

    def __init__(self, job: Job, on_end: Callable[[], None], owner: str | None = None):
        self.job = job
        self.owner = owner  # the page (Gradio session) that started it: its Stop and its closing stop it
        self._on_end = on_end
        self._stopped = threading.Event()
        self.finished = False  # the ladder is saved: its folder is the caller's
        self._ended = False
        self._reading = False  # updates() started: on ZeroGPU, its end closes the call and deletes the folder
        self._lock = threading.Lock()
        if job.plan.device == "zerogpu":  # ZeroGPU forks its own worker for the call and pickles what it yields
            self._process, self._updates = None, _gpu_run(job)
        else:
            context = start_method(job.plan.device)
            self._queue = context.Queue()
            self._process = context.Process(target=_worker, args=(job, self._queue), name="ladder-training",
                                            daemon=True)
            self._process.start()
            self._updates = None

    def updates(self) -> Iterator[Progress]:
        """Progress records until the ladder is saved; Failed if the training failed, nothing more once stopped."""
        self._reading = True
        try:
            if self._process is None:
                for update in self._updates:
                    if self._stopped.is_set():
                        return
                    yield update
                self._updates.close()
                self.finished = not self._stopped.is_set()
                return
            while not self._stopped.is_set():
                try:
                    update = self._queue.get(timeout=0.5)
                except queue.Empty:
                    if not self._process.is_alive() and not self._stopped.is_set():
                        raise Failed(f"the training process ended unexpectedly (exit code {self._process.exitcode})")
                    continue
                if update is None:
                    self._process.join()
                    self.finished = True
                    return
                if isinstance(update, Failed):
                    raise update
                yield update
        finally:
            if self._process is None and self._stopped.is_set():
                self._updates.close()  # the @spaces.GPU call ends; then nothing writes the folder any more
                shutil.rmtree(self.job.out, ignore_errors=True)
            self._end()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def stop(self) -> None:
        """Stop at once, unless it finished: the worker is killed (so all it held is freed) and its folder
        removed (on ZeroGPU once the call ended, by ``updates``: the thread reading it closes it)."""
        if self.finished:
            self._end()
            return
        self._stopped.set()
        if self._process is not None and self._process.is_alive():
            self._process.kill()
            self._process.join()
        if self._process is not None or not self._reading:
            shutil.rmtree(self.job.out, ignore_errors=True)
        self._end()

    def _end(self) -> None:
        with self._lock:
            if self._ended:
                return
            self._ended = True
        self._on_end()


class Trainings:
    """Trains visitors' ladders, one at a time on this machine: ``start`` refuses a second while one runs."""

    def __init__(self, cpu_recipe: Recipe = CPU_RECIPE, gpu_recipe: Recipe = STANDARD, device: str | None = None):
        self.cpu_recipe, self.gpu_recipe, self._device = cpu_recipe, gpu_recipe, device
        self._lock = threading.Lock()
        self.running: Training | None = None

    @property
    def device(self) -> str:
        """where(), asked at the first plan: never while the app is imported or built (ZeroGPU wants no CUDA call
        then)."""
        if self._device is None:
            self._device = where()
        return self._device

    @property
    def recipe(self) -> Recipe:
        return self.cpu_recipe if self.device == "cpu" else self.gpu_recipe

    def plan(self, text: corpus.Corpus, numbers: Sequence[int], ladder: Ladder = milestones.LADDER) -> Plan:
        """The plan for ``numbers`` of ``ladder`` on ``text``; corpus.CorpusError if the text is too short for its
        context."""
        corpus.check_trainable(text, self.recipe.train_config.block_size)
        return plan(text, numbers, self.recipe, self.device, ladder)

    def start(self, text: corpus.Corpus, plan: Plan, out: Path, owner: str | None = None) -> Training:
        with self._lock:
            if self.running is not None and owner is not None and self.running.owner == owner:
                raise Busy("Your ladder is already training: wait for it to finish, or press Stop to start again.")
            if self.running is not None:
                raise Busy("Another visitor's ladder is training on this machine (one at a time, so that "
                           "generation keeps serving everyone). Try again in a few minutes.")
            self.running = Training(Job(text, plan, Path(out)), self._finished, owner)
            return self.running

    def _finished(self) -> None:
        with self._lock:
            self.running = None
