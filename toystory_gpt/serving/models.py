"""The loaded milestones, and what serving them needs beside their weights: snapshots and decodings."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from .. import onnx_decode
from ..decoding import Decoding, torch_decoding
from ..milestones import LADDER, Ladder
from ..weights import SavedModel, WeightsError, load_ablation, load_all, load_snapshot

log = logging.getLogger(__name__)

class Models:
    """The milestones that loaded, and why the others did not; each model's snapshots and decoding, made on
    first use and kept (a loaded model's weights never change). ``ladder``: the ladder they were loaded from, which
    everything serving them reads (its labels, which numbers exist, what each model adds to which)."""

    def __init__(self, loaded: list[SavedModel], broken: dict[int, WeightsError], ablation: SavedModel | None = None,
                 ladder: Ladder = LADDER):
        self.ladder = ladder
        self.saved = {saved.milestone.number: saved for saved in loaded}
        self.broken = broken
        # What the Inside views read: every milestone by number, and the ablation (which Compare never shows).
        self.readable: dict[int | str, SavedModel] = {**self.saved,
                                                      **({ablation.milestone.key: ablation} if ablation else {})}
        self._lock = threading.Lock()  # two first requests at once must not load or export twice
        self._snapshots: dict[tuple[int, int], SavedModel] = {}
        self._decodings: dict[tuple[int, int | None], Decoding] = {}

    @classmethod
    def from_folder(cls, weights_dir: Path, ladder: Ladder = LADDER) -> Models:
        """Every milestone of ``ladder`` in ``weights_dir``, and the ablation if it loads (a broken one is left out,
        logged)."""
        try:
            ablation = load_ablation(weights_dir, ladder)
        except WeightsError as exc:
            log.warning("the ablation is left out: %s", exc)
            ablation = None
        return cls(*load_all(weights_dir, ladder), ablation, ladder)

    def unavailable_reason(self, number: int) -> str:
        if number in self.broken:
            return f"its weights are broken ({self.broken[number]})"
        return "it has not been trained (no weights folder)"

    def label(self, number: int) -> str:
        return self.ladder[number].label

    def at(self, number: int, step: int | None = None) -> SavedModel:
        """Milestone ``number``'s final weights, or as they were at training step ``step`` (a WeightsError if
        that snapshot is broken)."""
        if step is None:
            return self.saved[number]
        with self._lock:
            if (number, step) not in self._snapshots:
                self._snapshots[number, step] = load_snapshot(self.saved[number], step)
            return self._snapshots[number, step]

    def decoding(self, number: int, step: int | None = None) -> Decoding:
        """How to decode milestone ``number`` (at ``step``): ONNX Runtime for final weights where it exports,
        else PyTorch. A snapshot stays in PyTorch: exporting it would hold up its request and keep ~100 MB."""
        saved = self.at(number, step)
        with self._lock:
            if (number, step) not in self._decodings:
                exported = onnx_decode.export(saved.model) if step is None else None
                self._decodings[number, step] = exported or torch_decoding(saved.model)
            return self._decodings[number, step]

    def snapshot_steps(self) -> list[int]:
        """Every step at which some loaded milestone kept its weights."""
        return sorted({step for saved in self.saved.values() for step in saved.snapshot_steps})
