"""Weights folders: one Hub-shaped folder per milestone, written atomically and loaded with clear errors.

``weights/milestoneN/`` holds ``config.json`` and ``model.safetensors`` (via ``PyTorchModelHubMixin``),
``README.md`` (the model card), ``history.json`` (a ``record.TrainingRecord``), ``milestoneN.txt`` (a sample)
and ``snapshots/step-S.safetensors``: the weights as they were at training step S, in half precision
(the same tensor names as ``model.safetensors``; load one with ``load_snapshot``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from safetensors.torch import load_model, save_file

from . import folders
from .milestones import LADDER, Ladder, Milestone
from .model import GPT, GPTConfig
from .record import TrainingRecord
from .tokenizer import CharTokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
HISTORY_FILE = "history.json"
CARD_FILE = "README.md"
SNAPSHOTS_DIR = "snapshots"
# Snapshots only show how a model learned, so half precision is plenty, and halves what they add to the repo.
SNAPSHOT_DTYPE = torch.float16


class WeightsError(RuntimeError):
    """A weights folder is missing, broken or inconsistent; the message names the folder, file and problem."""

    def __init__(self, folder: Path, file: str, problem: str):
        self.folder, self.file, self.problem = Path(folder), file, problem
        super().__init__(f"{self.folder.name}: {file}: {problem}")


@dataclass
class SavedModel:
    """A model loaded from its folder, with its tokenizer and what training recorded (None if nothing was)."""
    milestone: Milestone
    model: GPT
    tokenizer: CharTokenizer
    record: TrainingRecord | None
    folder: Path

    @property
    def snapshot_steps(self) -> list[int]:
        """The training steps whose weights were kept besides the final ones, in order."""
        found = (p.name.removeprefix("step-").removesuffix(".safetensors")
                 for p in (self.folder / SNAPSHOTS_DIR).glob("step-*.safetensors"))
        return sorted(int(step) for step in found if step.isdecimal())


def save(folder: Path, model: GPT, record: TrainingRecord, sample: str, card: str,
         snapshots: dict[int, dict[str, torch.Tensor]] | None = None) -> None:
    """Write a complete folder, replacing any old one as a whole: an interruption leaves the old one intact."""
    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)
        (tmp / CARD_FILE).write_text(card, encoding="utf-8")
        (tmp / HISTORY_FILE).write_text(record.to_json(), encoding="utf-8")
        (tmp / f"{Path(folder).name}.txt").write_text(sample, encoding="utf-8")
        for step, weights in (snapshots or {}).items():
            (tmp / SNAPSHOTS_DIR).mkdir(exist_ok=True)
            save_file({name: t.detach().to("cpu", SNAPSHOT_DTYPE).contiguous() for name, t in weights.items()},
                      tmp / SNAPSHOTS_DIR / f"step-{step}.safetensors", metadata={"step": str(step)})

    folders.write(folder, fill)


def read_record(folder: Path) -> TrainingRecord | None:
    """The folder's history.json, or None when it has none; a WeightsError when it cannot be read."""
    path = Path(folder) / HISTORY_FILE
    if not path.is_file():
        return None
    try:
        return TrainingRecord.from_json(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise WeightsError(folder, HISTORY_FILE, str(exc)) from None


def _read_config(folder: Path) -> GPTConfig:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise WeightsError(folder, CONFIG_FILE, "missing")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(folder, CONFIG_FILE, f"not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise WeightsError(folder, CONFIG_FILE, "not a JSON object")
    known = {f.name for f in fields(GPTConfig)}
    if unknown := sorted(set(raw) - known):
        raise WeightsError(folder, CONFIG_FILE, f"unknown keys {unknown}")
    if missing := sorted(known - set(raw)):  # defaults could silently describe another model
        raise WeightsError(folder, CONFIG_FILE, f"missing keys {missing}")
    try:
        return GPTConfig(**raw)
    except (TypeError, ValueError) as exc:
        raise WeightsError(folder, CONFIG_FILE, str(exc)) from None


# Tensors whose first dimension is the vocabulary size.
_VOCAB_TENSORS = ("logit_bias", "token_logits.weight", "wte.weight", "lm_head.weight")
# How torch's load_state_dict names a tensor whose shape differs.
_SIZE_MISMATCH = re.compile(r"size mismatch for (\S+): copying a param with shape torch\.Size\(\[([\d, ]*)\]\) "
                            r"from checkpoint, the shape in current model is torch\.Size\(\[([\d, ]*)\]\)")


def _load_tensors(folder: Path, model: GPT, file: str = WEIGHTS_FILE) -> None:
    """Load a weights file (half precision too) into ``model``: every tensor present, of the shape the config
    gives, nothing extra."""
    try:
        missing, unexpected = load_model(model, folder / file, strict=False)
    except RuntimeError as exc:
        if not (found := _SIZE_MISMATCH.search(str(exc))):
            raise WeightsError(folder, file, f"cannot be loaded ({' '.join(str(exc).split())[:300]})") from None
        name, got, needed = found.group(1), [int(d) for d in found.group(2).split(",")], found.group(3)
        if name in _VOCAB_TENSORS and got[0] != model.config.vocab_size:
            raise WeightsError(folder, CONFIG_FILE, f"its vocabulary has {model.config.vocab_size} characters but the "
                                                    f"weights were trained with {got[0]}") from None
        raise WeightsError(folder, file, f"tensor {name!r} has shape {got}, config.json needs "
                                                 f"[{needed}]") from None
    except Exception as exc:  # truncated, garbage, or not safetensors at all
        raise WeightsError(folder, file,
                           f"not a readable safetensors file ({' '.join(str(exc).split())[:200]})") from None
    if missing:
        raise WeightsError(folder, file, f"missing tensors {sorted(missing)} that config.json calls for")
    if unexpected:
        raise WeightsError(folder, file,
                           f"unexpected tensors {sorted(unexpected)}: config.json describes another model")


def load(folder: Path, milestone: Milestone) -> SavedModel:
    """Load one folder strictly: every tensor present, of the right shape, nothing extra."""
    folder = folders.current(folder)
    if not folder.is_dir():
        raise WeightsError(folder, "", "folder not found")
    config = _read_config(folder)
    if not (folder / WEIGHTS_FILE).is_file():
        raise WeightsError(folder, WEIGHTS_FILE, "missing")
    model = GPT(config)
    _load_tensors(folder, model)
    model.eval()
    return SavedModel(milestone, model, CharTokenizer(config.vocab), read_record(folder), folder)


def load_snapshot(saved: SavedModel, step: int) -> SavedModel:
    """``saved`` as it was at training step ``step`` (one of its ``snapshot_steps``)."""
    file = f"{SNAPSHOTS_DIR}/step-{step}.safetensors"
    if step not in saved.snapshot_steps:
        kept = ", ".join(map(str, saved.snapshot_steps)) or "none"
        raise WeightsError(saved.folder, file, f"no snapshot at step {step} (kept: {kept})")
    model = GPT(saved.model.config)
    _load_tensors(saved.folder, model, file)  # copying into float32 parameters converts the half precision
    model.eval()
    return SavedModel(saved.milestone, model, saved.tokenizer, saved.record, saved.folder)


def load_ablation(weights_dir: Path, ladder: Ladder = LADDER) -> SavedModel | None:
    """``ladder``'s ablation trained into ``weights_dir``, None if it was not; a WeightsError if its folder is
    broken."""
    folder = folders.current(Path(weights_dir) / ladder.ablation.folder)
    return load(folder, ladder.ablation) if folder.exists() else None


def load_all(weights_dir: Path, ladder: Ladder = LADDER) -> tuple[list[SavedModel], dict[int, WeightsError]]:
    """Every milestone of ``ladder`` found under ``weights_dir``, in order, and the reason each broken one failed."""
    loaded, broken = [], {}
    for milestone in ladder:
        folder = folders.current(Path(weights_dir) / milestone.folder)
        if not folder.exists():
            continue
        try:
            loaded.append(load(folder, milestone))
        except WeightsError as exc:
            broken[milestone.number] = exc
    return loaded, broken
