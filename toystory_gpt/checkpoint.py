"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON, written atomically.

A checkpoint is a folder holding ``tensors.safetensors`` (model, optimizer moments, best weights so
far, RNG states) and ``state.json`` (step, best validation loss, history, optimizer settings).
It is replaced as a whole (``folders.write``), so a kill at any moment leaves the previous
checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from . import folders

TENSORS_FILE = "tensors.safetensors"
STATE_FILE = "state.json"


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be used; the message says which and why."""


def save(folder: Path, tensors: dict[str, torch.Tensor], state: dict) -> None:
    def fill(tmp: Path) -> None:
        # safetensors refuses tensors that share memory; give it plain contiguous copies.
        save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, tmp / TENSORS_FILE)
        (tmp / STATE_FILE).write_text(json.dumps(state), encoding="utf-8")

    folders.write(folder, fill)


def exists(folder: Path) -> bool:
    return folders.current(folder).exists()


def load(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    folder = folders.current(folder)
    try:
        state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
        tensors = load_file(folder / TENSORS_FILE)
    except Exception as exc:  # missing, truncated or garbled: all mean "cannot resume from here"
        raise CheckpointError(f"checkpoint {folder} cannot be read ({exc}); delete it to start over") from None
    return tensors, state


def split_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state as named tensors plus JSON-able settings."""
    sd = optimizer.state_dict()
    tensors = {f"optim.{index}.{key}": value for index, slot in sd["state"].items() for key, value in slot.items()}
    return tensors, {"param_groups": sd["param_groups"]}


def join_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], settings: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else g for g in settings["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def remove(folder: Path) -> None:
    folder = Path(folder)
    for path in (folder, *folder.parent.glob(f".{folder.name}.*")):
        shutil.rmtree(path, ignore_errors=True)
