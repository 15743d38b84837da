"""Generate from several milestones side by side: validate one request, then grow every text together.

The web app, its ``/generate`` API and ``python -m toystory_gpt generate`` all go through here,
so the same inputs and seed give the same texts everywhere. Each milestone samples with its own
generator seeded from the request's seed, so its text does not depend on which others run beside it.
"""

from __future__ import annotations

import collections
import itertools
import math
import reprlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import milestones as ladders  # read at call time: tests may extend the ladder
from .sampler import generate
from .weights import SavedModel, WeightsError, load_all

MAX_PROMPT = 1000       # characters; the models only ever see their last block_size of them anyway
MAX_LENGTH = 2000       # characters generated per milestone
MAX_TEMPERATURE = 2.0
MAX_TOP_K = 100         # above the vocabulary size, top-k keeps everything, as 0 does
MAX_SEED = 2**32 - 1
CHUNK = 16              # characters a milestone writes per turn when several stream together (see Comparison.stream)

FINAL = "final"         # the weights training kept as best; any other step names a snapshot
DEFAULTS = dict(prompt="WOODY:", length=300, temperature=0.8, top_k=0, seed=0, step=FINAL)


class InvalidRequest(ValueError):
    """A request the models cannot serve; the message is meant for the person who sent it."""


@dataclass(frozen=True)
class Request:
    milestones: tuple[int, ...]  # ladder order, no repeats
    prompt: str
    length: int
    temperature: float
    top_k: int
    seed: int
    step: int | None = None      # a snapshot's training step, or None for the final weights


class _Repr(reprlib.Repr):
    def repr_int(self, x, level):
        try:
            return super().repr_int(x, level)
        except ValueError:  # Python will not print an integer of more than 4,300 digits
            return f"a {'negative ' if x < 0 else ''}number of about {int(x.bit_length() * math.log10(2)):,} digits"


_REPR = _Repr()


def _show(value) -> str:
    """A short description of what was sent, for a message; never fails, whatever the value."""
    try:
        return _REPR.repr(value)
    except Exception:  # noqa: BLE001 - a library caller may pass an object whose repr raises
        return f"a {type(value).__name__}"


def _whole(value, name: str, low: int, high: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON and sliders send numbers as floats: 300.0 is a fine length, 2.5 is not
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{name} must be a whole number from {low:,} to {high:,}, got {_show(value)}")
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be from {low:,} to {high:,}, got {_show(value)}")
    return value


def _number_from_text(value):
    """Gradio's API page lists choices as strings, so "5" is accepted as well as 5."""
    if isinstance(value, str) and len(value) <= 20 and value.strip().isdecimal():
        return int(value)
    return value


def _step(value) -> int | None:
    """"final" (or nothing) for the final weights, else a training step as a whole number."""
    if value is None or value == FINAL:
        return None
    return _whole(_number_from_text(value), f'step (or "{FINAL}")', 0, 10**9)


def validate(milestones: Sequence, prompt, length, temperature, top_k, seed, step=FINAL) -> Request:
    """Check every input as an API caller may send it (anything JSON can hold); raise InvalidRequest if wrong."""
    if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Sequence):
        raise InvalidRequest(f"milestones must be a list of milestone numbers 1-{len(ladders.LADDER)}, "
                             f"got {_show(milestones)}")
    numbers = {_whole(_number_from_text(n), "each milestone", 1, len(ladders.LADDER)) for n in milestones}
    if not numbers:
        raise InvalidRequest("Choose at least one milestone to compare.")
    prompt = "" if prompt is None else prompt
    if not isinstance(prompt, str):
        raise InvalidRequest(f"prompt must be text, got {_show(prompt)}")
    if len(prompt) > MAX_PROMPT:
        raise InvalidRequest(f"prompt is {len(prompt):,} characters long; the limit is {MAX_PROMPT:,}")
    if (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
            or not 0 <= temperature <= MAX_TEMPERATURE):
        raise InvalidRequest(f"temperature must be a number from 0 to {MAX_TEMPERATURE:g} "
                             f"(0 = always the likeliest character), got {_show(temperature)}")
    return Request(milestones=tuple(sorted(numbers)), prompt=prompt,
                   length=_whole(length, "length", 1, MAX_LENGTH), temperature=float(temperature),
                   top_k=_whole(top_k, "top_k", 0, MAX_TOP_K), seed=_whole(seed, "seed", 0, MAX_SEED),
                   step=_step(step))


class Comparison:
    """The milestones that loaded, and why the others did not; serves requests against them."""

    def __init__(self, loaded: list[SavedModel], broken: dict[int, WeightsError]):
        self.models = {saved.milestone.number: saved for saved in loaded}
        self.broken = broken

    def warm_up(self) -> None:
        """Export every model's decoding to ONNX Runtime now (see ``toystory_gpt.onnx_decode``), and run it once,
        so that the first request does not wait for it."""
        for saved in self.models.values():
            "".join(generate(saved.model, saved.tokenizer, "", 2, exported=saved.exported))

    @classmethod
    def from_folder(cls, weights_dir: Path) -> Comparison:
        return cls(*load_all(weights_dir))

    def unavailable_reason(self, number: int) -> str:
        if number in self.broken:
            return f"its weights are broken ({self.broken[number]})"
        return "it has not been trained (no weights folder)"

    def request(self, milestones: Sequence, prompt, length, temperature, top_k, seed, step=FINAL) -> Request:
        """``validate``, and check that every chosen milestone is loaded (and kept weights at ``step``)."""
        request = validate(milestones, prompt, length, temperature, top_k, seed, step)
        for number in request.milestones:
            if number not in self.models:
                raise InvalidRequest(f"Milestone {ladders.LADDER[number].label} is unavailable: "
                                     f"{self.unavailable_reason(number)}.")
            if request.step is None:
                continue
            kept = self.models[number].snapshot_steps
            if request.step not in kept:
                raise InvalidRequest(f"Milestone {ladders.LADDER[number].label} kept no weights at step "
                                     f"{request.step:,}; it kept steps {', '.join(map(str, kept)) or 'none'} "
                                     f'and "{FINAL}".')
            try:  # loaded now (and kept), so that a broken snapshot is a message, not a failed stream
                self.models[number].at_step(request.step)
            except WeightsError as exc:
                raise InvalidRequest(f"Milestone {ladders.LADDER[number].label}'s weights at step "
                                     f"{request.step:,} are broken ({exc}).") from None
        return request

    def snapshot_steps(self) -> list[int]:
        """Every step at which some loaded milestone kept its weights."""
        return sorted({step for saved in self.models.values() for step in saved.snapshot_steps})

    def dropped(self, request: Request) -> str:
        """The prompt's characters that some chosen milestone's vocabulary lacks (they are left out)."""
        dropped = "".join(self.models[n].tokenizer.encode(request.prompt).dropped for n in request.milestones)
        return "".join(dict.fromkeys(dropped))

    def stream(self, request: Request) -> Iterator[list[str]]:
        """Yield one text per milestone of the ladder, in order ("" where not chosen), each time one text grows.

        The milestones take turns, ``CHUNK`` characters each, so the texts grow together: never more than
        one chunk apart. Turns of one character would look no different on screen (updates are throttled)
        but cost more time: every switch of model evicts the last one's weights from the CPU cache.
        """
        place = {number: i for i, number in enumerate(ladders.LADDER.numbers)}
        texts = [""] * len(place)
        streams = []
        for number in request.milestones:
            if request.step is None:
                saved, exported = self.models[number], self.models[number].exported
            else:  # a snapshot decodes in PyTorch: exporting it would hold up this request and keep ~100 MB
                saved, exported = self.models[number].at_step(request.step), None
            streams.append((place[number], generate(saved.model, saved.tokenizer, request.prompt, request.length,
                                                    request.temperature, request.top_k, request.seed,
                                                    exported=exported)))
        for _ in range(0, request.length, CHUNK):
            for i, characters in streams:
                texts[i] += "".join(itertools.islice(characters, CHUNK))
                yield list(texts)

    def run(self, request: Request) -> list[str]:
        """The finished texts, one per milestone of the ladder."""
        return collections.deque(self.stream(request), maxlen=1)[0]  # the last update holds the finished texts
