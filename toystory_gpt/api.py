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
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict

from . import analysis
from .milestones import ABLATION, LADDER, Ladder
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
    shown,
)
from .serving import Engine, Generation, GenerationError, Models
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


# ------------------------------------------------------------------------------------------------ the service

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
    one engine."""

    def __init__(self, models: Models, engine: Engine | None = None):
        self.models = models
        self.ladder: Ladder = models.ladder
        self.engine = engine or Engine(models)
        self.streaming = 0  # streams open now (they all run on one event loop: no lock needed)
        self._visits: list[Visit] = []  # held now; changed on the event loop only

    @classmethod
    def from_folder(cls, weights_dir: Path, ladder: Ladder = LADDER) -> Service:
        return cls(Models.from_folder(weights_dir, ladder))

    def close(self) -> None:
        self.engine.close()

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

    def check(self, request: GenerateRequest) -> GenerateRequest:
        """``request`` if every chosen milestone is loaded (and kept weights at its ``step``); else InvalidRequest."""
        self._loaded(request.milestones)
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

    def dropped(self, request: GenerateRequest) -> str:
        """The prompt's characters that some chosen milestone's vocabulary lacks (they are left out)."""
        return distinct("".join(self.models.saved[n].tokenizer.encode(request.prompt).dropped
                                for n in request.milestones))

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
    def read(self, request: TextRequest | AttentionRequest | LensRequest | InsideRequest, temperature: float = 0.0,
             top_k: int = 0, beside: Sequence[int | str] = ()) -> analysis.Request:
        """What the chosen (loaded) milestones read of the request's text (sampling knobs for the bars): the
        characters every one of them, and of the loaded models ``beside`` them, knows."""
        self._loaded(request.milestones)
        with answerable():
            return analysis.reading(self.models.readable, request.text, request.milestones, temperature, top_k,
                                    beside)

    def surprise(self, request: TextRequest) -> analysis.SurpriseAnswer:
        with answerable():
            return analysis.surprise(self.models.saved, self.read(request))

    def next_chars(self, request: NextCharsRequest) -> analysis.NextCharsAnswer:
        with answerable():
            return analysis.next_chars(self.models.saved, self.read(request, request.temperature, request.top_k),
                                       request.k, request.position)

    def attention(self, request: AttentionRequest) -> analysis.AttentionAnswer:
        with answerable():
            return analysis.attention(self.models.saved, self.read(request), request.position)

    def logit_lens(self, request: LensRequest) -> analysis.LensAnswer:
        with answerable():
            return analysis.logit_lens(self.models.readable, self.read(request), self.ladder)

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
           "Service", "TextRequest", "Visit", "Written", "shown"]
