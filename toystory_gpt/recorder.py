"""Watch a forward pass from outside: record what named submodules output, through PyTorch's forward hooks.

    with Recorder(model, "blocks.*.attn.weights") as seen:
        model(idx)
    seen["blocks.0.attn.weights"]        # (B, n_head, T, T), the first layer's attention

Names are those of ``model.named_modules()``, matched with ``fnmatch`` patterns. The model needs no
parameter for this, and a pass nobody records runs exactly as before: hooks exist only inside the
``with``, and a ``model.Probe`` (attention weights, keys, values) tells the model whether someone is
looking, so that what the fast path never forms is computed only then.
"""

from __future__ import annotations

import fnmatch
import threading

import torch.nn as nn

from .model import Probe

_LOCK = threading.Lock()  # Probe.watched is shared by every thread that runs the model


class Recorder:
    """Records, by name, the last output of each matching submodule during forward passes in this thread."""

    def __init__(self, model: nn.Module, *patterns: str):
        self.modules = {name: module for name, module in model.named_modules()
                        if name and any(fnmatch.fnmatchcase(name, p) for p in patterns)}
        if not self.modules:
            raise ValueError(f"no submodule of {type(model).__name__} is named like {', '.join(patterns)}")
        self.outputs: dict = {}
        self._handles: list = []

    def __enter__(self) -> dict:
        # Other threads may run the same model meanwhile (the app serves several people): ignore their passes.
        thread = threading.get_ident()

        def hook(name):
            def record(module, args, output):
                if threading.get_ident() == thread:
                    self.outputs[name] = output
            return record

        self._handles = [module.register_forward_hook(hook(name)) for name, module in self.modules.items()]
        with _LOCK:
            for probe in self._probes():
                probe.watched += 1
        return self.outputs

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        with _LOCK:
            for probe in self._probes():
                probe.watched -= 1

    def _probes(self) -> list[Probe]:
        return [m for m in self.modules.values() if isinstance(m, Probe)]
