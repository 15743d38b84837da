"""Weights folders: one Hub-shaped folder per milestone, written atomically and loaded with clear errors.

``weights/milestoneN/`` holds ``config.json`` and ``model.safetensors`` (via ``PyTorchModelHubMixin``),
``README.md`` (the model card), ``history.json`` (what training measured) and ``milestoneN.txt`` (a sample).
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from safetensors import safe_open

from . import folders
from .milestones import MILESTONES, Milestone
from .model import GPT, GPTConfig
from .tokenizer import CharTokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
HISTORY_FILE = "history.json"
CARD_FILE = "README.md"


class WeightsError(RuntimeError):
    """A weights folder is missing, broken or inconsistent; the message names the folder, file and problem."""

    def __init__(self, folder: Path, file: str, problem: str):
        self.folder, self.file, self.problem = Path(folder), file, problem
        super().__init__(f"{self.folder.name}: {file}: {problem}")


@dataclass
class SavedModel:
    """A model loaded from its folder, with its tokenizer and what training recorded."""
    milestone: Milestone
    model: GPT
    tokenizer: CharTokenizer
    info: dict
    folder: Path

    @property
    def sample_file(self) -> Path:
        return self.folder / f"{self.milestone.folder}.txt"


def save(folder: Path, model: GPT, info: dict, sample: str, card: str) -> None:
    """Write a complete folder, replacing any old one as a whole: an interruption leaves the old one intact."""
    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)
        (tmp / CARD_FILE).write_text(card, encoding="utf-8")
        (tmp / HISTORY_FILE).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        (tmp / f"{Path(folder).name}.txt").write_text(sample, encoding="utf-8")

    folders.write(folder, fill)


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


def _check_tensors(folder: Path, config: GPTConfig) -> None:
    """Compare the file's tensor names and shapes (from its header alone) with what the config describes."""
    with torch.device("meta"):  # shapes only: no memory, no random initialisation
        expected = {name: tuple(t.shape) for name, t in GPT(config).state_dict().items()}
    try:
        with safe_open(folder / WEIGHTS_FILE, framework="pt") as f:
            found = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except Exception as exc:  # truncated, garbage, or not safetensors at all
        raise WeightsError(folder, WEIGHTS_FILE, f"not a readable safetensors file ({' '.join(str(exc).split())[:200]})") from None
    for name in _VOCAB_TENSORS:
        if name in expected and name in found and found[name][0] != expected[name][0]:
            raise WeightsError(folder, CONFIG_FILE, f"its vocabulary has {config.vocab_size} characters but the "
                                                    f"weights were trained with {found[name][0]}")
    if missing := sorted(set(expected) - set(found)):
        raise WeightsError(folder, WEIGHTS_FILE, f"missing tensors {missing} that config.json calls for")
    if unexpected := sorted(set(found) - set(expected)):
        raise WeightsError(folder, WEIGHTS_FILE, f"unexpected tensors {unexpected}: config.json describes another model")
    for name, shape in expected.items():
        if found[name] != shape:
            raise WeightsError(folder, WEIGHTS_FILE, f"tensor {name!r} has shape {list(found[name])}, config.json needs {list(shape)}")


def load(folder: Path, milestone: Milestone) -> SavedModel:
    """Load one folder strictly: every tensor present, of the right shape, nothing extra."""
    folder = folders.current(folder)
    if not folder.is_dir():
        raise WeightsError(folder, "", "folder not found")
    config = _read_config(folder)
    if not (folder / WEIGHTS_FILE).is_file():  # checked here so the mixin never falls back to a pickle file
        raise WeightsError(folder, WEIGHTS_FILE, "missing")
    _check_tensors(folder, config)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the mixin print()s a line per local load
            model = GPT.from_pretrained(folder, strict=True)
    except Exception as exc:  # safetensors and torch raise several types for truncated or mismatched files
        problem = " ".join(str(exc).split())
        raise WeightsError(folder, WEIGHTS_FILE, f"cannot be loaded into the model its config describes ({problem[:300]})") from None
    model.eval()
    info = {}
    if (folder / HISTORY_FILE).is_file():
        try:
            info = json.loads((folder / HISTORY_FILE).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise WeightsError(folder, HISTORY_FILE, f"not valid JSON ({exc})") from None
    return SavedModel(milestone, model, CharTokenizer(config.vocab), info, folder)


def load_all(weights_dir: Path) -> tuple[list[SavedModel], dict[int, WeightsError]]:
    """Every milestone found under ``weights_dir``, in ladder order, and the reason each broken one failed."""
    loaded, broken = [], {}
    for milestone in MILESTONES:
        folder = folders.current(Path(weights_dir) / milestone.folder)
        if not folder.exists():
            continue
        try:
            loaded.append(load(folder, milestone))
        except WeightsError as exc:
            broken[milestone.number] = exc
    return loaded, broken
