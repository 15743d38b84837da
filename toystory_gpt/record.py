"""What a training run measured, in one schema: ``TrainingRecord`` per model (its ``history.json``) and
``RunSummary`` for the whole run (``results.json`` at the top of the weights folder).

The trainer's results become a record in ``train.py``; the weights loader reads it once
(``weights.read_record``) and the report, the CLI and the app use its fields, never raw JSON.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

FORMAT = 2  # 1 was the schema-less dict of the first releases (migrated once, in the committed weights)


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
    train_config: dict
    history: list[Evaluation] = field(default_factory=list)
    format: int = FORMAT

    def to_json(self) -> str:
        return _to_json(self)

    @classmethod
    def from_json(cls, text: str) -> TrainingRecord:
        """Parse and check a history.json; ValueError says what is wrong with it."""
        raw = _fields(text, cls)
        try:
            raw["history"] = [Evaluation(**point) for point in raw["history"]]
        except TypeError as exc:
            raise ValueError(f"a history entry is not {{step, train_loss, val_loss, elapsed[, sample]}} "
                             f"({exc})") from None
        return cls(**raw)


@dataclass
class RunSummary:
    """What one run of train.py measured as a whole (``results.json``); its rows cover every model in the folder."""
    command: str
    wall_time: float
    corpus: dict                   # corpus.CorpusStats fields: the clean text the models were trained on
    rows: list[dict]               # report.row of each model, milestones in order, then the ablation
    format: int = FORMAT

    def to_json(self) -> str:
        return _to_json(self)

    @classmethod
    def from_json(cls, text: str) -> RunSummary:
        """Parse and check a results.json; ValueError says what is wrong with it."""
        return cls(**_fields(text, cls))


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
