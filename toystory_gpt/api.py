"""The one place requests enter: a pydantic model per endpoint, and the ``Service`` that answers them.

The web app's tabs and endpoints (``/generate``, ``/surprise``, ``/next_chars``, ``/attention``), the CLI and
library callers all build these requests and call the same ``Service``, so the same inputs give the same texts
and numbers, or the same message, everywhere. The models take what a caller may send (anything JSON, or
Python, can hold): numbers as floats (300.0 from a slider), milestone numbers as text (Gradio's API page
lists choices as strings), and nothing extra; a mistake becomes an ``InvalidRequest`` whose message says,
for the person who sent it, which input is wrong, what it must be and what came instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import reprlib
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from . import analysis
from . import milestones as ladders  # read at call time: tests may extend the ladder
from .milestones import ABLATION
from .serving import FINAL, Engine, Generation, GenerationError, Models
from .weights import WeightsError

MAX_PROMPT = 1000       # characters; the models only ever see their last block_size of them anyway
MAX_LENGTH = 2000       # characters generated per milestone
MAX_TEMPERATURE = 2.0
MAX_TOP_K = 100         # above the vocabulary size, top-k keeps everything, as 0 does
MAX_SEED = 2**32 - 1
MAX_STEP = 10**9
MAX_TEXT = MAX_PROMPT   # characters an Inside view reads: what one page of rows can show

# Screen updates a second, all streaming visitors together: each costs the server's event loop about the same.
UPDATES_PER_SECOND = 40

DEFAULT_PROMPT = "WOODY:"
DEFAULT_LENGTH = 300
DEFAULT_TEMPERATURE = 0.8


class InvalidRequest(ValueError):
    """A request the models cannot serve; the message is meant for the person who sent it."""


class _Repr(reprlib.Repr):
    def repr_int(self, x, level):
        try:
            return super().repr_int(x, level)
        except ValueError:  # Python will not print an integer of more than 4,300 digits
            return f"a {'negative ' if x < 0 else ''}number of about {int(x.bit_length() * math.log10(2)):,} digits"


_REPR = _Repr()


def shown(value) -> str:
    """A short description of what was sent, for a message; never fails, whatever the value."""
    try:
        return _REPR.repr(value)
    except Exception:  # noqa: BLE001 - a library caller may pass an object whose repr raises
        return f"a {type(value).__name__}"


# ------------------------------------------------------------------------------------------------ input types
# Each type normalises what callers send, then its Field constraints hold the limits; ``_explain`` words every
# failure from the constraints themselves, so a limit is written once.

def _whole_number(value):
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON and sliders send numbers as floats: 300.0 is a fine length, 2.5 is not
    if isinstance(value, bool) or not isinstance(value, int):
        raise PydanticCustomError("whole_number", "not a whole number")
    return value


def _real_number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PydanticCustomError("real_number", "not a number")
    if isinstance(value, int) and abs(value) > 2**1000:  # too large for a float: as far out of range as infinity
        return math.inf if value > 0 else -math.inf
    return float(value)


def _text(value):
    if value is None:
        return ""
    if not isinstance(value, str):
        raise PydanticCustomError("text", "not text")
    return value


def _choice_number(value):
    if isinstance(value, str) and len(value) <= 20 and value.strip().isdecimal():
        value = int(value)  # "5": Gradio's API page shows a choice (a milestone, a step) as text
    return _whole_number(value)


def _milestone_number(value):
    number = _choice_number(value)
    if not 1 <= number <= len(ladders.LADDER):  # the ladder's length is read now: tests may extend it
        # The context holds the number already worded: pydantic prints its context, and Python refuses to print an
        # integer of more than 4,300 digits.
        raise PydanticCustomError("milestone_range", "not a milestone", {"shown": shown(number)})
    return number


Whole = Annotated[int, BeforeValidator(_whole_number)]
Choice = Annotated[int, BeforeValidator(_choice_number)]
MilestoneNumber = Annotated[int, BeforeValidator(_milestone_number)]
Real = Annotated[float, BeforeValidator(_real_number)]
Text = Annotated[str, BeforeValidator(_text)]


def _milestone_list(value):
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise PydanticCustomError("milestone_list", "not a list")
    return list(value)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def parse(cls, **inputs: Any):
        """The request, or an InvalidRequest that says what is wrong with the first bad input."""
        try:
            return cls(**inputs)
        except ValidationError as exc:
            raise InvalidRequest(_explain(cls, exc.errors(include_url=False)[0])) from None


def _ladder_order(numbers: list[int]) -> tuple[int, ...]:
    """Milestone numbers in ladder order, no repeats; at least one."""
    if not numbers:
        raise PydanticCustomError("no_milestone", "no milestone")
    return tuple(sorted(set(numbers)))


Milestones = Annotated[list[MilestoneNumber], BeforeValidator(_milestone_list), AfterValidator(_ladder_order)]


class GenerateRequest(_Request):
    """``/generate``: continue ``prompt`` with each chosen milestone, as trained or at a training ``step``."""
    # In the order a message reports the first bad one.
    milestones: Milestones
    prompt: Annotated[Text, Field(max_length=MAX_PROMPT)] = DEFAULT_PROMPT
    temperature: Annotated[Real, Field(ge=0, le=MAX_TEMPERATURE)] = DEFAULT_TEMPERATURE
    length: Annotated[Whole, Field(ge=1, le=MAX_LENGTH)] = DEFAULT_LENGTH
    top_k: Annotated[Whole, Field(ge=0, le=MAX_TOP_K)] = 0
    seed: Annotated[Whole, Field(ge=0, le=MAX_SEED)] = 0
    step: Annotated[Choice | None, Field(ge=0, le=MAX_STEP)] = None  # a snapshot's step; None or "final": trained

    @field_validator("step", mode="before")
    @classmethod
    def _final(cls, value):
        return None if value == FINAL else value


class _Reading(_Request):
    text: Annotated[Text, Field(max_length=MAX_TEXT)]

    @field_validator("text", mode="before")
    @classmethod
    def _some_text(cls, value):
        if not isinstance(value, str):  # unlike a prompt, a text to read cannot be left out
            raise PydanticCustomError("text", "not text")
        return value


class TextRequest(_Reading):
    """``/surprise``: every chosen milestone's surprise at each character of ``text``."""
    milestones: Milestones


class NextCharsRequest(TextRequest):
    """``/next_chars``: the likeliest next characters at a slot, raw and as sampled with these knobs."""
    temperature: Annotated[Real, Field(ge=0, le=MAX_TEMPERATURE)] = DEFAULT_TEMPERATURE
    top_k: Annotated[Whole, Field(ge=0, le=MAX_TOP_K)] = 0
    k: Annotated[Whole, Field(ge=1, le=MAX_TOP_K)] = 5
    position: Whole | None = None  # a slot from 0 to the text's length (checked there): None, after the text


class AttentionRequest(_Reading):
    """``/attention``: one milestone's attention over the context of a slot."""
    milestone: MilestoneNumber
    position: Whole | None = None  # as in NextCharsRequest

    @property
    def milestones(self) -> tuple[int, ...]:
        return (self.milestone,)


class LensRequest(_Reading):
    """``/logit_lens``: a deep model's stream read after each block: milestone 6, 7, 8 or the ablation."""
    milestone: MilestoneNumber | Literal["ablation"]

    @field_validator("milestone", mode="before")
    @classmethod
    def _named(cls, value):
        return value if value == ABLATION else _milestone_number(value)

    @property
    def milestones(self) -> tuple[int | str, ...]:
        return (self.milestone,)


NAMES = {"step": f'step (or "{FINAL}")'}  # how a message names an input, where not by its own name


def _limits(model: type[BaseModel], field: str) -> tuple:
    low = high = None
    for constraint in model.model_fields[field].metadata:
        low = getattr(constraint, "ge", low)
        high = getattr(constraint, "le", getattr(constraint, "max_length", high))
    return low, high


def _explain(model: type[BaseModel], error: dict) -> str:
    """One pydantic error, in words for the person who sent the input."""
    loc, kind, value = error["loc"], error["type"], error.get("input")
    field = str(loc[0]) if loc else ""
    if kind == "extra_forbidden":
        return f"unexpected input {field!r}: {model.__name__} takes {', '.join(model.model_fields)}"
    if kind == "missing":
        return f"{field} is missing"
    if field in ("milestones", "milestone"):
        top = len(ladders.LADDER)
        if model is LensRequest:
            return f'milestone must be a milestone number 1-{top} or "{ABLATION}", got {shown(value)}'
        if kind == "milestone_list":
            return f"milestones must be a list of milestone numbers 1-{top}, got {shown(value)}"
        if kind == "no_milestone":
            return "Choose at least one milestone to compare."
        got = error.get("ctx", {}).get("shown") or shown(value)
        return f"each milestone must be {'a whole number ' if kind == 'whole_number' else ''}from 1 to {top}, " \
               f"got {got}"
    if field in ("prompt", "text"):
        if kind in ("string_too_long", "too_long"):
            return f"{field} is {len(value):,} characters long; the limit is {_limits(model, field)[1]:,}"
        return f"{field} must be text, got {shown(value)}"
    low, high = _limits(model, field)
    if model.model_fields[field].annotation is float:
        return (f"{field} must be a number from {low:g} to {high:g} (0 = always the likeliest character), "
                f"got {shown(value)}")
    name = NAMES.get(field, field)  # whole numbers below
    if low is None:  # limited by something else (a position, by its text): checked where that is known
        return f"{name} must be a whole number, got {shown(value)}"
    if kind == "whole_number":
        return f"{name} must be a whole number from {low:,} to {high:,}, got {shown(value)}"
    return f"{name} must be from {low:,} to {high:,}, got {shown(_choice_number(value))}"  # 5000.0 as 5000


# ------------------------------------------------------------------------------------------------ the service

class Service:
    """Answers every request, against the milestones that loaded, through one engine."""

    def __init__(self, models: Models, engine: Engine | None = None):
        self.models = models
        self.engine = engine or Engine(models)
        self.streaming = 0  # streams open now (they all run on one event loop: no lock needed)
        self._owned: dict[str, dict[Generation, asyncio.Event]] = {}  # owner -> its streams, each with its end

    @classmethod
    def from_folder(cls, weights_dir) -> Service:
        return cls(Models.from_folder(weights_dir))

    def close(self) -> None:
        self.engine.close()

    # ---- checks beyond one input's own: what this server has loaded
    def _loaded(self, keys: Sequence[int | str]) -> None:
        for key in keys:
            if key == ABLATION and key not in self.models.readable:
                raise InvalidRequest(f"Milestone {ladders.LADDER.ablation.label} is unavailable here.")
            if key != ABLATION and key not in self.models.saved:
                raise InvalidRequest(f"Milestone {ladders.LADDER[key].label} is unavailable: "
                                     f"{self.models.unavailable_reason(key)}.")

    def check(self, request: GenerateRequest) -> GenerateRequest:
        """``request`` if every chosen milestone is loaded (and kept weights at its ``step``); else InvalidRequest."""
        self._loaded(request.milestones)
        if request.step is not None:
            for number in request.milestones:
                label = ladders.LADDER[number].label
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
        return self.check(GenerateRequest.parse(**inputs))

    def dropped(self, request: GenerateRequest) -> str:
        """The prompt's characters that some chosen milestone's vocabulary lacks (they are left out)."""
        found = "".join(self.models.saved[n].tokenizer.encode(request.prompt).dropped for n in request.milestones)
        return "".join(dict.fromkeys(found))

    def submit(self, request: GenerateRequest) -> Generation:
        return self.engine.submit(request.milestones, request.prompt, request.length, request.temperature,
                                  request.top_k, request.seed, request.step)

    @staticmethod
    def in_ladder_order(texts: dict[int, str]) -> list[str]:
        return [texts.get(n, "") for n in ladders.LADDER.numbers]

    def run(self, request: GenerateRequest) -> list[str]:
        """The finished texts, one per milestone of the ladder in order ("" where not chosen)."""
        generation = self.submit(request)
        try:
            return self.in_ladder_order(generation.result())
        finally:
            generation.cancel()

    async def stream(self, request: GenerateRequest, interval: float,
                     owner: str | None = None) -> AsyncIterator[list[str]]:
        """The texts as they grow, at most one update per ``interval`` seconds (less often while many stream: every
        update costs the server the same, so all of them together make at most ``UPDATES_PER_SECOND``), and the
        finished texts last. ``stop(owner)`` ends it early as if written: the texts so far are the last update.
        Closing the iterator early (a closed tab) cancels the generation too. Either way its rows are free at once."""
        generation = self.submit(request)
        done = asyncio.wrap_future(generation.done)
        ended = asyncio.Event()
        if owner is not None:
            self._owned.setdefault(owner, {})[generation] = ended
        self.streaming += 1
        try:
            shown_texts = None
            while not done.done():
                await asyncio.wait([done], timeout=max(interval, self.streaming / UPDATES_PER_SECOND))
                texts = self.in_ladder_order(generation.texts())
                if texts != shown_texts and not done.done():
                    shown_texts = texts
                    yield texts
            done.result()  # a GenerationError, if the engine could not finish
            yield self.in_ladder_order(generation.texts())
        finally:
            self.streaming -= 1
            generation.cancel()
            if owner is not None:
                streams = self._owned[owner]
                del streams[generation]
                if not streams:
                    del self._owned[owner]
            ended.set()

    async def stop(self, owner: str, timeout: float = 10.0) -> int:
        """Stop every stream of ``owner`` (one visitor's page) and wait, at most ``timeout`` seconds, until each
        has sent its last update and ended; returns how many there were."""
        streams = dict(self._owned.get(owner, {}))
        for generation in streams:
            generation.cancel()
        if streams:
            waits = [asyncio.ensure_future(ended.wait()) for ended in streams.values()]
            _, late = await asyncio.wait(waits, timeout=timeout)
            for wait in late:
                wait.cancel()
        return len(streams)

    # ---- the Inside views: single forward passes over the same loaded models
    def read(self, request: TextRequest | AttentionRequest | LensRequest, temperature: float = 0.0,
             top_k: int = 0) -> analysis.Request:
        """What the chosen (loaded) milestones read of the request's text (sampling knobs for the bars)."""
        self._loaded(request.milestones)
        with answerable():
            return analysis.reading(self.models.readable, request.text, request.milestones, temperature, top_k)

    def surprise(self, request: TextRequest) -> dict:
        with answerable():
            return analysis.surprise(self.models.saved, self.read(request))

    def next_chars(self, request: NextCharsRequest) -> dict:
        with answerable():
            return analysis.next_chars(self.models.saved, self.read(request, request.temperature, request.top_k),
                                       request.k, request.position)

    def attention(self, request: AttentionRequest) -> dict:
        with answerable():
            return analysis.attention(self.models.saved, self.read(request), request.position)

    def logit_lens(self, request: LensRequest) -> dict:
        with answerable():
            return analysis.logit_lens(self.models.readable, self.read(request))


@contextlib.contextmanager
def answerable():
    """What the analysis cannot answer reaches the caller as an InvalidRequest, like any other bad input."""
    try:
        yield
    except analysis.Unanswerable as exc:
        raise InvalidRequest(str(exc)) from None


__all__ = ["AttentionRequest", "GenerateRequest", "GenerationError", "InvalidRequest", "LensRequest",
           "NextCharsRequest", "Service", "TextRequest"]
