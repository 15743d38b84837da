"""What a training run measured, in one schema: ``TrainingRecord`` per model (its ``history.json``) and
``RunSummary`` for the whole run (``results.json`` at the top of the weights folder).

The trainer's results become a record in ``train.py``; the weights loader reads it once
(``weights.read_record``) and the report, the CLI and the app use its fields, never raw JSON.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

# 1 was the schema-less dict of the first releases (migrated once, in the committed weights); 3 added the corpus
# record and the seeds.
FORMAT = 3


@dataclass(frozen=True)
class Example:
    """An example prompt of the Compare tab, with the label its button shows."""
    prompt: str
    label: str


@dataclass(frozen=True)
class Presentation:
    """How the app presents a ladder trained on this text: the header's words for it, the prompt training
    samples from (and the Training tab's rewind shows), and the Compare tab's example prompts (the first one is
    its default)."""
    described: str                 # HTML for "trained on ___", e.g. "the <i>Toy Story</i> (1995) screenplay"
    sample_prompt: str
    examples: tuple[Example, ...]

    @property
    def default_prompt(self) -> str:
        return self.examples[0].prompt


@dataclass(frozen=True)
class CorpusRecord:
    """The text a ladder was trained on: which file, and what it holds (milestone 1's dataset exploration)."""
    name: str                      # a named corpus ("toy-story-1995-screenplay", "tiny-shakespeare") or the file name
    file: str                      # the file read (its name only: the path is the trainer's machine's)
    sha256: str                    # of the file's bytes
    bytes: int                     # the file's size
    characters: int                # of the training text (for the screenplay: its clean text, both splits)
    vocabulary: int                # distinct characters
    lines: int
    top_characters: tuple[tuple[str, int], ...]
    speeches: int | None           # the screenplay only: lines that are speeches, and the most frequent speakers
    top_speakers: tuple[tuple[str, int], ...] | None
    presentation: Presentation

    def to_text(self) -> str:
        """The statistics, one per line, as milestone 1's sample and the Training tab show them."""
        shown = ", ".join(f"{_visible(char)} {count:,}" for char, count in self.top_characters)
        lines = (f"text: {self.name} ({self.file}, {self.bytes:,} bytes, SHA-256 {self.sha256[:12]}…)\n"
                 f"characters: {self.characters:,}\nvocabulary: {self.vocabulary} distinct characters\n"
                 f"lines: {self.lines:,}" + (f" ({self.speeches:,} of them speeches)" if self.speeches is not None
                                             else "") + f"\nmost frequent characters: {shown}\n")
        if self.top_speakers is not None:
            lines += f"top speakers by lines: {', '.join(f'{name} {count}' for name, count in self.top_speakers)}\n"
        return lines

    @classmethod
    def from_dict(cls, raw: dict) -> CorpusRecord:
        """From its JSON object (tuples come back as lists); ValueError says what does not fit."""
        try:
            shown = raw["presentation"]
            presentation = Presentation(shown["described"], shown["sample_prompt"],
                                        tuple(Example(**e) for e in shown["examples"]))
            speakers = raw["top_speakers"]
            return cls(**{**raw, "presentation": presentation,
                          "top_characters": tuple((c, n) for c, n in raw["top_characters"]),
                          "top_speakers": None if speakers is None else tuple((s, n) for s, n in speakers)})
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"the corpus record is not {{{', '.join(f.name for f in dataclasses.fields(cls))}}} "
                             f"({exc!r})") from None


def _visible(char: str) -> str:
    """A character as a reader can see it in a list: a space or a line break named."""
    return {" ": "␠ (space)", "\n": "⏎ (line break)", "\t": "⇥ (tab)", "\r": "␍ (CR)"}.get(char, repr(char))


@dataclass
class Evaluation:
    """One evaluation during training: the validation loss then, the mean training loss since the last one, and
    what the model wrote then (``SAMPLE_*`` in train.py: the same prompt and seed at every step)."""
    step: int
    train_loss: float | None       # None at step 0, before any training
    val_loss: float
    elapsed: float                 # seconds of training so far
    sample: str | None = None      # None where training recorded none


@dataclass
class TrainingRecord:
    """What training measured for one model (its ``history.json``)."""
    milestone: int | None          # its number on the ladder; None for the ablation
    name: str
    params: int
    best_val_loss: float           # nats/char over the whole validation split, at ``best_step``
    best_step: int
    steps: int                     # steps taken (fewer than max_steps after early stopping)
    wall_time: float
    device: str
    model_config: dict
    train_config: dict             # trainer.TrainConfig's fields, its seed included
    corpus: CorpusRecord
    history: list[Evaluation] = field(default_factory=list)
    format: int = FORMAT

    @property
    def seed(self) -> int:
        return self.train_config["seed"]

    @property
    def still_improving(self) -> bool:
        """Its best evaluation was its last (training ran out of steps, not patience): more steps would help."""
        return self.best_step == self.steps

    @property
    def train_loss_at_best(self) -> float | None:
        """The mean training loss over the steps up to its best evaluation (None if that was step 0)."""
        return next((point.train_loss for point in self.history if point.step == self.best_step), None)

    def to_json(self) -> str:
        return _to_json(self)

    @classmethod
    def from_json(cls, text: str) -> TrainingRecord:
        """Parse and check a history.json; ValueError says what is wrong with it."""
        raw = _fields(text, cls)
        raw["corpus"] = CorpusRecord.from_dict(raw["corpus"])
        try:
            raw["history"] = [Evaluation(**point) for point in raw["history"]]
        except TypeError as exc:
            raise ValueError(f"a history entry is not {{step, train_loss, val_loss, elapsed[, sample]}} "
                             f"({exc})") from None
        return cls(**raw)


@dataclass(frozen=True)
class ResultRow:
    """One row of the results table: one trained model and seed, as measured (``report.row``)."""
    milestone: int | None          # its number on the ladder; None for the ablation
    folder: str
    label: str
    params: int | None             # None where nothing recorded it (so for every field below that may be None)
    val_loss: float | None         # best validation loss, nats/char
    val_bits: float | None         # the same in bits/char
    best_step: int | None
    steps: int | None
    wall_time: float | None        # seconds of training
    seed: int | None
    served: bool                   # its weights are in the folder (the run's first seed)
    still_improving: bool | None
    train_loss: float | None       # the mean training loss up to its best step


@dataclass
class RunSummary:
    """What one run of train.py measured as a whole (``results.json``); its rows cover every model in the folder."""
    command: str
    wall_time: float
    corpus: CorpusRecord           # the text the models were trained on
    seeds: list[int]               # every seed trained, the served one (whose weights the folders hold) first
    rows: list[ResultRow]          # report.row of each model and seed: milestones in order, then the ablation
    format: int = FORMAT

    @property
    def served_seed(self) -> int:
        return self.seeds[0]

    def to_json(self) -> str:
        return _to_json(self)

    @classmethod
    def from_json(cls, text: str) -> RunSummary:
        """Parse and check a results.json; ValueError says what is wrong with it."""
        raw = _fields(text, cls)
        try:
            rows = [ResultRow(**row) for row in raw["rows"]]
        except TypeError as exc:
            raise ValueError(f"a row is not {{{', '.join(f.name for f in dataclasses.fields(ResultRow))}}} ({exc})") \
                from None
        return cls(**{**raw, "corpus": CorpusRecord.from_dict(raw["corpus"]), "rows": rows})


def _to_json(record) -> str:
    return json.dumps(dataclasses.asdict(record), indent=1) + "\n"


def _fields(text: str, cls) -> dict:
    """The JSON object in ``text``, checked to be of this schema's format and to have exactly ``cls``'s fields."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    if raw.get("format") != FORMAT:
        raise ValueError(f"format {raw.get('format', 1)!r} is not {FORMAT}: retrain, or rewrite it with this schema")
    known = {f.name for f in dataclasses.fields(cls)}
    if missing := sorted(known - set(raw)):
        raise ValueError(f"missing keys {missing}")
    if unknown := sorted(set(raw) - known):
        raise ValueError(f"unknown keys {unknown}")
    return raw
