"""The one place requests are answered: the ``Service`` that serves every request model of ``request``, and the
typed answer of each endpoint.

The web app's tabs and endpoints (``/generate``, ``/surprise``, ``/next_chars``, ``/attention``,
``/logit_lens``), the CLI and library callers all build requests (``Service.parse``, against the served
ladder) and call the same ``Service``, so the same inputs give the same texts and numbers, or the same
message, everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict

from . import analysis, corpus, training_job
from .milestones import ABLATION, LADDER, Ladder
from .pool import start_ids
from .record import Evaluation
from .request import (  # the request models and their limits, re-exported: callers of the API find them here
    DEFAULT_LENGTH,
    DEFAULT_PROMPT,
    DEFAULT_TEMPERATURE,
    FINAL,
    MAX_LENGTH,
    MAX_PROMPT,
    MAX_SEED,
    MAX_STEP,
    MAX_TEMPERATURE,
    MAX_TEXT,
    MAX_TOP_K,
    AttentionRequest,
    GenerateRequest,
    InsideRequest,
    InvalidRequest,
    LensRequest,
    NextCharsRequest,
    TextRequest,
    TrainRequest,
    shown,
)
from .serving import Engine, Generation, GenerationError, Models
from .serving.visitor_ladders import Full, Unknown, VisitorLadders
from .tokenizer import distinct
from .weights import WeightsError

RequestModel = TypeVar("RequestModel", bound=BaseModel)

# Screen updates a second, all streaming visitors together: each costs the server's event loop about the same.
UPDATES_PER_SECOND = 40
# Fair shares: generations held at once (from the moment their inputs are being checked to their last update). A
# page runs one at a time (Gradio ignores Generate while its event is pending), and lets it go before the page hears
# it has finished.
OWNER_LIMIT = 1
# A class of 64 behind one school's address, one generation each; the engine has rows for more, so one address
# can never take them all.
ADDRESS_LIMIT = 64


# ------------------------------------------------------------------------------------------------ /generate's answer

class Written(BaseModel):
    """What one milestone wrote."""
    model_config = ConfigDict(frozen=True)
    milestone: int
    text: str


class GenerateAnswer(BaseModel):
    """``/generate``: the chosen milestones' texts in ladder order (as far as written, while streaming). The
    prompt's characters some chosen vocabulary lacks are left out, and said in a warning (``Service.dropped``), not
    here: they may be lone surrogates, which the server's JSON cannot carry."""
    model_config = ConfigDict(frozen=True)
    texts: list[Written]

    @classmethod
    def of(cls, texts: dict[int, str]) -> GenerateAnswer:
        """From the engine's texts (by milestone number)."""
        return cls(texts=[Written(milestone=n, text=t) for n, t in sorted(texts.items())])

    def text(self, number: int) -> str:
        """What milestone ``number`` wrote ("" if it was not chosen)."""
        return next((w.text for w in self.texts if w.milestone == number), "")


# ------------------------------------------------------------------------------------------------ /train's answer

class TrainingUpdate(BaseModel):
    """One update of ``/train``: where the training stands; the last one names the trained ladder."""
    plan: str                      # the plan in words (Markdown): recipe, steps, where it runs, its cost
    milestone: int | None = None   # the model training now
    step: int = 0
    steps: int = 0
    done: float = 0.0              # of the whole plan's work, 0 to 1
    elapsed: float = 0.0           # seconds
    seconds_left: float | None = None
    evaluation: Evaluation | None = None  # made at this step
    saved: bool = False            # this milestone's weights are saved
    ladder: str | None = None      # the last update: the ladder's name, for ``ladder`` on /generate and the views


# A visitor's ladder serves one page: a small engine, a thread and a few rows.
VISITOR_ROWS = 8


# ------------------------------------------------------------------------------------------------ the service

def _routed(method):
    """The method answered by the ladder the request names (``Service.on``)."""
    @functools.wraps(method)
    def routed(self, request, *args, **kwargs):
        return method(self.on(getattr(request, "ladder", None)), request, *args, **kwargs)
    return routed

@dataclass(eq=False)
class Visit:
    """One generation a visitor asked for, held from the moment its inputs are being checked until its stream has
    sent its last update: what the fair shares count, and what Stop ends at whichever stage it is."""
    owner: str | None
    address: str | None
    stopped: bool = False
    generation: Generation | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class Service:
    """Answers every request, against the milestones that loaded (and the ladder they were loaded from), through
    one engine; and, with ``trainings``, trains visitors' ladders and answers the requests that name one (each
    served by a Service of its own)."""

    def __init__(self, models: Models, engine: Engine | None = None,
                 trainings: training_job.Trainings | None = None):
        self.models = models
        self.ladder: Ladder = models.ladder
        self.engine = engine or Engine(models)
        self.streaming = 0  # streams open now (they all run on one event loop: no lock needed)
        self._visits: list[Visit] = []  # held now; changed on the event loop only
        self.trainings = trainings
        self.ladders: VisitorLadders[Service] | None = None if trainings is None else \
            VisitorLadders(lambda folder: Service.visitor(folder, self.ladder), Service.close)

    @classmethod
    def from_folder(cls, weights_dir: Path, ladder: Ladder = LADDER,
                    trainings: training_job.Trainings | None = None) -> Service:
        """The weights in ``weights_dir``, and visitors' ladders trained with ``trainings`` (default: this
        machine's)."""
        return cls(Models.from_folder(weights_dir, ladder), trainings=trainings or training_job.Trainings())

    @classmethod
    def visitor(cls, folder: Path, ladder: Ladder = LADDER) -> Service:
        """A visitor's ladder (of ``ladder``'s milestones), ready: a small engine of its own, every decoding
        exported."""
        models = Models.from_folder(folder, ladder)
        service = cls(models, Engine(models, threads=1, capacity=VISITOR_ROWS))
        service.engine.warm_up()
        return service

    def close(self) -> None:
        if self.trainings is not None and (running := self.trainings.running) is not None:
            running.stop()
        if self.ladders is not None:
            self.ladders.close()
        self.engine.close()

    def on(self, ladder: str | None) -> Service:
        """What answers requests for ``ladder``: this service for None or "" (or when this one is a visitor's ladder);
        InvalidRequest if no visitor's ladder has that name (now)."""
        if self.ladders is None:
            return self
        self.ladders.expire()  # on every request: an unused ladder goes within its time limit, whoever asks
        if not ladder:  # None, or the empty text Gradio sends for none
            return self
        try:
            return self.ladders.get(ladder).served
        except Unknown:
            raise InvalidRequest(f"No ladder named {shown(ladder)} here: a visitor's ladder is kept while its page "
                                 f"is open and at most {self.ladders.ttl / 60:.0f} min after its last use. Train it "
                                 f"again (the Your text tab, or /train).") from None

    # ---- a visitor's ladder, trained
    def start_training(self, text: corpus.Corpus, milestones: Sequence[int],
                       owner: str | None = None) -> training_job.Training:
        """Start training ``milestones`` on ``text`` for ``owner``'s page; InvalidRequest (before anything starts)
        if the text is too short for the recipe, no ladder more can be kept, or another training is running."""
        if self.trainings is None:
            raise InvalidRequest("This server trains no visitor's ladder.")
        try:
            plan = self.trainings.plan(text, milestones, self.ladder)
            self.ladders.room()
            return self.trainings.start(text, plan, tempfile.mkdtemp(prefix="toystory-ladder-"), owner)
        except (corpus.CorpusError, Full, training_job.Busy) as exc:
            raise InvalidRequest(str(exc)) from None

    def text_of(self, request: TrainRequest) -> corpus.Corpus:
        """The request's text with every check of ``train.py --text`` (InvalidRequest says what is wrong)."""
        with tempfile.TemporaryDirectory(prefix="toystory-text-") as folder:
            path = Path(folder) / "your-text.txt"
            path.write_text(request.text, encoding="utf-8")
            try:
                return training_job.read_text(path, "your text")
            except corpus.CorpusError as exc:
                raise InvalidRequest(str(exc)) from None

    async def train(self, training: training_job.Training, owner: str | None) -> AsyncIterator[TrainingUpdate]:
        """``training``'s progress as it comes, then the ladder, loaded and kept for ``owner``'s page: the last
        update names it. Closing the iterator early (Stop, a closed tab) stops the training and frees all it held."""
        plan = training.job.plan.describe()
        updates = training.updates()
        try:
            yield TrainingUpdate(plan=plan, seconds_left=training.job.plan.seconds)
            while (update := await asyncio.to_thread(next, updates, None)) is not None:
                left = update.elapsed * (1 - update.done) / update.done if update.done > 0 else None
                yield TrainingUpdate(plan=plan, milestone=update.milestone, step=update.step, steps=update.steps,
                                     done=update.done, elapsed=update.elapsed, seconds_left=left,
                                     evaluation=update.evaluation,
                                     saved=update.saved)
            if training.finished:
                try:
                    kept = await asyncio.to_thread(self.ladders.add, training.job.out, owner)
                except Unknown:  # its page closed while it loaded: dropped, nobody to tell
                    return
                yield TrainingUpdate(plan=plan, done=1.0, ladder=kept.name)
        except training_job.Failed as exc:
            raise InvalidRequest(f"The training failed ({exc}).") from None
        except Full as exc:  # another page's ladder took the last room while this one trained
            shutil.rmtree(training.job.out, ignore_errors=True)
            raise InvalidRequest(str(exc)) from None
        finally:
            training.stop()
            with contextlib.suppress(ValueError):  # still read in a thread: it ends there, at its next record
                await asyncio.to_thread(updates.close)  # closed where nothing else reads it (ZeroGPU's call ends)

    def parse(self, model: type[RequestModel], **inputs) -> RequestModel:
        """A request of ``model`` from raw inputs, milestone numbers checked against the served ladder."""
        return model.parse(self.ladder, **inputs)

    # ---- checks beyond one input's own: what this server has loaded
    def _loaded(self, keys: Sequence[int | str]) -> None:
        for key in keys:
            if key == ABLATION and key not in self.models.readable:
                raise InvalidRequest(f"Milestone {self.ladder.by_key(key).label} is unavailable here.")
            if key != ABLATION and key not in self.models.saved:
                raise InvalidRequest(f"Milestone {self.ladder.by_key(key).label} is unavailable: "
                                     f"{self.models.unavailable_reason(key)}.")

    @_routed
    def check(self, request: GenerateRequest) -> GenerateRequest:
        """``request`` if every chosen milestone is loaded (and kept weights at its ``step``); else InvalidRequest."""
        self._loaded(request.milestones)
        for number in request.milestones:
            try:
                start_ids(self.models.saved[number].tokenizer, request.prompt)
            except ValueError as exc:
                raise InvalidRequest(f"Milestone {self.ladder[number].label} cannot start: {exc}.") from None
        if request.step is not None:
            for number in request.milestones:
                label = self.ladder[number].label
                kept = self.models.saved[number].snapshot_steps
                if request.step not in kept:
                    raise InvalidRequest(f"Milestone {label} kept no weights at step {request.step:,}; it kept steps "
                                         f'{", ".join(map(str, kept)) or "none"} and "{FINAL}".')
                try:  # loaded now, so that a broken snapshot is a message, not a failed stream
                    self.models.at(number, request.step)
                except WeightsError as exc:
                    raise InvalidRequest(f"Milestone {label}'s weights at step {request.step:,} are broken "
                                         f"({exc}).") from None
        return request

    def generate_request(self, **inputs) -> GenerateRequest:
        return self.check(self.parse(GenerateRequest, **inputs))

    @_routed
    def dropped(self, request: GenerateRequest) -> str:
        """The prompt's characters that some chosen milestone's vocabulary lacks (they are left out)."""
        return distinct("".join(self.models.saved[n].tokenizer.encode(request.prompt).dropped
                                for n in request.milestones))

    @_routed
    def submit(self, request: GenerateRequest) -> Generation:
        return self.engine.submit(request)

    def run(self, request: GenerateRequest) -> GenerateAnswer:
        """The finished texts."""
        generation = self.submit(request)
        try:
            return GenerateAnswer.of(generation.result())
        finally:
            generation.cancel()

    @contextlib.contextmanager
    def visit(self, owner: str | None = None, address: str | None = None) -> Iterator[Visit]:
        """Hold one generation's share for ``owner`` (a page's session) from ``address`` while the block runs; an
        InvalidRequest if either already holds its limit. Checked here, before the engine sees the request: the
        engine knows models and rows, not who asks; and a refusal is a message at once, not a wait in a queue."""
        if owner is not None and sum(v.owner == owner for v in self._visits) >= OWNER_LIMIT:
            raise InvalidRequest(f"This page already has as many generations running as one visitor may have at once "
                                 f"({OWNER_LIMIT}): wait for one to finish, or press Stop.")
        if address is not None and sum(v.address == address for v in self._visits) >= ADDRESS_LIMIT:
            raise InvalidRequest(f"As many generations are running for your network address as one address may have "
                                 f"at once ({ADDRESS_LIMIT}): try again in a moment.")
        visit = Visit(owner, address)
        self._visits.append(visit)
        try:
            yield visit
        finally:
            self._visits.remove(visit)
            if visit.generation is not None:
                visit.generation.cancel()  # a stream never iterated to its end must not go on writing
            visit.ended.set()

    @_routed
    async def stream(self, request: GenerateRequest, interval: float,
                     visit: Visit | None = None) -> AsyncIterator[GenerateAnswer]:
        """The texts as they grow, at most one update per ``interval`` seconds (less often while many stream: every
        update costs the server the same, so all of them together make at most ``UPDATES_PER_SECOND``), and the
        finished texts last. ``stop`` of the ``visit``'s owner ends it early as if written: the texts so far are the
        last update (none, if it was stopped before it started). Closing the iterator early (a closed tab) cancels
        the generation too. Either way its rows are free at once."""
        if visit is not None and visit.stopped:
            return
        generation = self.submit(request)
        if visit is not None:
            visit.generation = generation
        done = asyncio.wrap_future(generation.done)
        self.streaming += 1
        try:
            shown_texts = None
            while not done.done():
                await asyncio.wait([done], timeout=max(interval, self.streaming / UPDATES_PER_SECOND))
                texts = generation.texts()
                if texts != shown_texts and not done.done():
                    shown_texts = texts
                    yield GenerateAnswer.of(texts)
            done.result()  # a GenerationError, if the engine could not finish
            yield GenerateAnswer.of(generation.texts())
        finally:
            self.streaming -= 1
            generation.cancel()

    async def stop(self, owner: str, timeout: float = 10.0) -> int:
        """Stop every generation ``owner`` (one visitor's page) holds, whether its inputs are still being checked,
        it waits for a row or it is being written, and wait, at most ``timeout`` seconds, until each has sent its
        last update and ended; returns how many there were."""
        visits = [v for v in self._visits if v.owner == owner]
        for visit in visits:
            visit.stopped = True
            if visit.generation is not None:
                visit.generation.cancel()
        if visits:
            waits = [asyncio.ensure_future(v.ended.wait()) for v in visits]
            _, late = await asyncio.wait(waits, timeout=timeout)
            for wait in late:
                wait.cancel()
        return len(visits)

    # ---- the Inside views: single forward passes over the same loaded models
    @_routed
    def read(self, request: TextRequest | AttentionRequest | LensRequest | InsideRequest, temperature: float = 0.0,
             top_k: int = 0, beside: Sequence[int | str] = ()) -> analysis.Request:
        """What the chosen (loaded) milestones read of the request's text (sampling knobs for the bars): the
        characters every one of them, and of the loaded models ``beside`` them, knows."""
        self._loaded(request.milestones)
        with answerable():
            return analysis.reading(self.models.readable, request.text, request.milestones, temperature, top_k,
                                    beside)

    @_routed
    def surprise(self, request: TextRequest) -> analysis.SurpriseAnswer:
        with answerable():
            return analysis.surprise(self.models.saved, self.read(request))

    @_routed
    def next_chars(self, request: NextCharsRequest) -> analysis.NextCharsAnswer:
        with answerable():
            return analysis.next_chars(self.models.saved, self.read(request, request.temperature, request.top_k),
                                       request.k, request.position)

    @_routed
    def attention(self, request: AttentionRequest) -> analysis.AttentionAnswer:
        with answerable():
            return analysis.attention(self.models.saved, self.read(request), request.position)

    @_routed
    def logit_lens(self, request: LensRequest) -> analysis.LensAnswer:
        with answerable():
            return analysis.logit_lens(self.models.readable, self.read(request), self.ladder)

    @_routed
    def inside(self, request: InsideRequest) -> analysis.Reading:
        """The Inside tab's rows: the surprise of every chosen model and, for the gain rows, of the loaded model
        below each; the lens of every chosen deep one, if asked."""
        below = {key: lower for key in request.milestones if request.gains and (lower := self.below(key)) is not None}
        read = self.read(request, request.temperature, request.top_k, list(below.values()))
        with answerable():
            return analysis.read_inside(self.models.readable, read, below, request.lens)

    def below(self, key: int | str) -> int | str | None:
        """The loaded model that ``key``'s model adds its idea to (for the ablation: the one it takes apart)."""
        lower = self.ladder.below(self.ladder.by_key(key))
        return lower.key if lower is not None and lower.key in self.models.readable else None

    def look(self, read: analysis.Request, slot) -> tuple[int, list[analysis.Look]]:
        """The slot (None: after the text) checked against the text, and every chosen model there."""
        with answerable():
            slot = analysis.slot_of(read, slot)
            return slot, analysis.look(self.models.readable, read, slot)


@contextlib.contextmanager
def answerable():
    """What the analysis cannot answer reaches the caller as an InvalidRequest, like any other bad input."""
    try:
        yield
    except analysis.Unanswerable as exc:
        raise InvalidRequest(str(exc)) from None


__all__ = ["DEFAULT_LENGTH", "DEFAULT_PROMPT", "DEFAULT_TEMPERATURE", "FINAL", "MAX_LENGTH", "MAX_PROMPT", "MAX_SEED",
           "MAX_STEP", "MAX_TEMPERATURE", "MAX_TEXT", "MAX_TOP_K", "AttentionRequest", "GenerateAnswer",
           "GenerateRequest", "GenerationError", "InsideRequest", "InvalidRequest", "LensRequest", "NextCharsRequest",
           "Service", "TextRequest", "TrainRequest", "TrainingUpdate", "Visit", "Written", "shown"]
