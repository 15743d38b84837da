"""What a caller may ask: a pydantic model per request, each input's limits and its message declared together.

The web app's tabs and endpoints, the CLI and library callers all build these requests (``api.Service``
answers them, and the engine takes a ``GenerateRequest`` as it is), so the same inputs give the same texts and
numbers, or the same message, everywhere. The models take what a caller may send (anything JSON, or Python,
can hold): numbers as floats (300.0 from a slider), milestone numbers as text (Gradio's API page lists choices
as strings), and nothing extra. Each input type below checks its own value and words its own message, for the
person who sent it: which input is wrong, what it must be, and what came instead.

Which milestones exist is the ladder's business: ``parse(ladder, ...)`` checks numbers against the ladder given
(the served one), ``milestones.LADDER`` when none is.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo
from pydantic_core import PydanticCustomError

from .milestones import ABLATION, LADDER, Ladder

MAX_PROMPT = 1000       # characters; the models only ever see their last block_size of them anyway
MAX_LENGTH = 2000       # characters generated per milestone
MAX_TEMPERATURE = 2.0
MAX_TOP_K = 100         # above the vocabulary size, top-k keeps everything, as 0 does
MAX_SEED = 2**32 - 1
MAX_STEP = 10**9
MAX_TEXT = MAX_PROMPT   # characters an Inside view reads: what one page of rows can show
# Characters of a text a visitor's ladder trains on, pasted, uploaded or sent: Tiny Shakespeare (1.1 M) fits.
MAX_TRAINING_TEXT = 2_000_000

DEFAULT_PROMPT = "WOODY:"
DEFAULT_LENGTH = 300
DEFAULT_TEMPERATURE = 0.8
FINAL = "final"         # the weights training kept as best; any other step names a snapshot


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
# Each type is made by a function that takes its limits and returns the type with a validator that checks them
# and says, in the one message written here, what went wrong.

def _refused(message: str) -> PydanticCustomError:
    return PydanticCustomError("refused", "{message}", {"message": message})


def _ladder(info: ValidationInfo) -> Ladder:
    return (info.context or {}).get("ladder", LADDER)


def _as_whole(value) -> int | None:
    """``value`` as a whole number, or None. JSON and sliders send numbers as floats: 300.0 is a fine length,
    2.5 is not; Gradio's API page shows a choice (a milestone, a step) as text: "5"."""
    if isinstance(value, str) and len(value) <= 20 and value.strip().isdecimal():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return None if isinstance(value, bool) or not isinstance(value, int) else value


def whole(low: int, high: int) -> Any:
    """A whole number from ``low`` to ``high``."""

    def check(value, info: ValidationInfo) -> int:
        called = info.field_name
        number = _as_whole(value)
        if value is None or value == "":  # a cleared number box
            raise _refused(f"{called.capitalize()} is empty: type a whole number from {low:,} to {high:,}.")
        if number is None:
            raise _refused(f"{called} must be a whole number from {low:,} to {high:,}, got {shown(value)}")
        if not low <= number <= high:
            raise _refused(f"{called} must be from {low:,} to {high:,}, got {shown(number)}")
        return number

    return Annotated[int, Field(ge=low, le=high), BeforeValidator(check)]


def _slot(value, info: ValidationInfo) -> int | None:
    # Its range is its text's length: checked where the text is read (analysis.slot_of).
    if value is None:
        return None
    if (number := _as_whole(value)) is None:
        raise _refused(f"{info.field_name} must be a whole number, got {shown(value)}")
    return number


Slot = Annotated[int | None, BeforeValidator(_slot)]


def _step(value) -> int | None:
    if value is None or value == FINAL:
        return None
    number = _as_whole(value)
    if number is None:
        raise _refused(f'step (or "{FINAL}") must be a whole number from 0 to {MAX_STEP:,}, got {shown(value)}')
    if not 0 <= number <= MAX_STEP:
        raise _refused(f'step (or "{FINAL}") must be from 0 to {MAX_STEP:,}, got {shown(number)}')
    return number


Step = Annotated[int | None, BeforeValidator(_step)]  # a snapshot's step; None or "final": the trained weights


def real(low: float, high: float, meaning: str = "") -> Any:
    """A number from ``low`` to ``high``; ``meaning``: what its values mean, for the message."""

    def check(value, info: ValidationInfo) -> float:
        refused = _refused(f"{info.field_name} must be a number from {low:g} to {high:g}{meaning}, got {shown(value)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise refused
        if isinstance(value, int) and abs(value) > 2**1000:  # too large for a float, and out of range anyway
            raise refused
        if not low <= value <= high:  # NaN too
            raise refused
        return float(value)

    return Annotated[float, Field(ge=low, le=high), BeforeValidator(check)]


Temperature = real(0, MAX_TEMPERATURE, " (0 = always the likeliest character)")
TopK = whole(0, MAX_TOP_K)
Length = whole(1, MAX_LENGTH)
Seed = whole(0, MAX_SEED)
K = whole(1, MAX_TOP_K)


def text_type(limit: int, required: bool) -> Any:
    """Text of at most ``limit`` characters; ``required``: None is refused (else it is empty text)."""

    def check(value, info: ValidationInfo) -> str:
        if value is None and not required:
            return ""
        if not isinstance(value, str):
            raise _refused(f"{info.field_name} must be text, got {shown(value)}")
        if len(value) > limit:
            raise _refused(f"{info.field_name} is {len(value):,} characters long; the limit is {limit:,}")
        return value

    return Annotated[str, Field(max_length=limit), BeforeValidator(check)]


Prompt = text_type(MAX_PROMPT, required=False)
Text = text_type(MAX_TEXT, required=True)  # unlike a prompt, a text to read cannot be left out
TrainingText = text_type(MAX_TRAINING_TEXT, required=True)

MAX_LADDER_NAME = 64    # a visitor ladder's name is 22 characters; anything much longer is not one


def _ladder_name(value) -> str | None:
    if value is None or value == "":  # Gradio sends an empty text for "none"
        return None
    if not isinstance(value, str) or len(value) > MAX_LADDER_NAME:
        raise _refused(f"ladder must be the name of a visitor's ladder (/train's last update gives it), "
                       f"got {shown(value)}")
    return value


# A visitor's ladder (the name /train's last update gives); None: the served one.
LadderName = Annotated[str | None, BeforeValidator(_ladder_name)]

NO_MILESTONE = "Choose at least one milestone."


def _numbers(value, info: ValidationInfo) -> tuple[int, ...]:
    top = len(_ladder(info))
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise _refused(f"milestones must be a list of milestone numbers 1-{top}, got {shown(value)}")
    numbers = []
    for item in value:
        number = _as_whole(item)
        if number is None:
            raise _refused(f"each milestone must be a whole number from 1 to {top}, got {shown(item)}")
        if not 1 <= number <= top:
            raise _refused(f"each milestone must be from 1 to {top}, got {shown(number)}")
        numbers.append(number)
    if not numbers:
        raise _refused(NO_MILESTONE)
    return tuple(sorted(set(numbers)))


Milestones = Annotated[tuple[int, ...], BeforeValidator(_numbers)]  # in ladder order, no repeats; at least one


def _number(value, info: ValidationInfo) -> int:
    top = len(_ladder(info))
    number = _as_whole(value)
    if number is None or not 1 <= number <= top:
        raise _refused(f"milestone must be a milestone number 1-{top}, got {shown(value)}")
    return number


def _key(value, info: ValidationInfo) -> int | str:
    top = len(_ladder(info))
    number = _as_whole(value)
    if value != ABLATION and (number is None or not 1 <= number <= top):
        raise _refused(f'milestone must be a milestone number 1-{top} or "{ABLATION}", got {shown(value)}')
    return ABLATION if value == ABLATION else number


def _keys(value, info: ValidationInfo) -> tuple[int | str, ...]:
    top = len(_ladder(info))
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise _refused(f'milestones must be a list of milestone numbers 1-{top} or "{ABLATION}", got {shown(value)}')
    keys = {_key(item, info) for item in value}
    if not keys:
        raise _refused(NO_MILESTONE)
    return tuple(sorted(keys, key=lambda key: top + 1 if key == ABLATION else key))


MilestoneNumber = Annotated[int, BeforeValidator(_number)]
MilestoneKey = Annotated[int | str, BeforeValidator(_key)]  # Milestone.key: a number, or "ablation"
MilestoneKeys = Annotated[tuple[int | str, ...], BeforeValidator(_keys)]  # milestones in order, then the ablation


# ------------------------------------------------------------------------------------------------ the requests

class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def parse(cls, ladder: Ladder = LADDER, /, **inputs: Any):
        """The request, or an InvalidRequest that says what is wrong with the first bad input; milestone numbers
        are checked against ``ladder``."""
        try:
            return cls.model_validate(inputs, context={"ladder": ladder})
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            field = ".".join(map(str, error["loc"]))
            if error["type"] == "extra_forbidden":
                raise InvalidRequest(f"unexpected input {field!r}: {cls.__name__} takes "
                                     f"{', '.join(cls.model_fields)}") from None
            if error["type"] == "missing":
                raise InvalidRequest(f"{field} is missing") from None
            raise InvalidRequest(error["msg"]) from None


class GenerateRequest(_Request):
    """``/generate``: continue ``prompt`` with each chosen milestone, as trained or at a training ``step``."""
    # In the order a message reports the first bad one.
    milestones: Milestones
    prompt: Prompt = DEFAULT_PROMPT
    temperature: Temperature = DEFAULT_TEMPERATURE
    length: Length = DEFAULT_LENGTH
    top_k: TopK = 0
    seed: Seed = 0
    step: Step = None
    ladder: LadderName = None


class TextRequest(_Request):
    """``/surprise``: every chosen milestone's surprise at each character of ``text``."""
    text: Text
    milestones: Milestones
    ladder: LadderName = None


class NextCharsRequest(TextRequest):
    """``/next_chars``: the likeliest next characters at a slot, raw and as sampled with these knobs."""
    temperature: Temperature = DEFAULT_TEMPERATURE
    top_k: TopK = 0
    k: K = 5
    position: Slot = None  # a slot from 0 to the text's length: None, after the text


class AttentionRequest(_Request):
    """``/attention``: one milestone's attention over the context of a slot."""
    text: Text
    milestone: MilestoneNumber
    position: Slot = None  # as in NextCharsRequest
    ladder: LadderName = None

    @property
    def milestones(self) -> tuple[int, ...]:
        return (self.milestone,)


class LensRequest(_Request):
    """``/logit_lens``: a deep model's stream read after each block (a model of at least analysis.LENS_BLOCKS
    blocks, the ablation included)."""
    text: Text
    milestone: MilestoneKey
    ladder: LadderName = None

    @property
    def milestones(self) -> tuple[int | str, ...]:
        return (self.milestone,)


class InsideRequest(_Request):
    """The Inside tab: every chosen model's surprise rows, with the gain and lens rows if asked, and the sampling
    knobs its next-character bars show."""
    text: Text
    milestones: MilestoneKeys
    gains: bool = False
    lens: bool = False
    temperature: Temperature = DEFAULT_TEMPERATURE
    top_k: TopK = 0
    ladder: LadderName = None


class TrainRequest(_Request):
    """``/train``: the chosen milestones trained on ``text`` (checked as ``train.py --text`` checks a file)."""
    text: TrainingText
    milestones: Milestones


__all__ = ["AttentionRequest", "FINAL", "GenerateRequest", "InsideRequest", "InvalidRequest", "LensRequest",
           "NextCharsRequest", "TextRequest", "TrainRequest", "shown"]
