"""Serving: the loaded milestones and one engine that batches every visitor's decoding.

``Models`` owns what was loaded (final weights, snapshots made on first use, each model's decoding); the
``Engine`` runs one ``pool.Pool`` per model (its sequence slots and their KV cache, advanced in one batched step)
from one thread per core, a tick at a time, for every request at once.
"""

from .engine import Engine, Generation, GenerationError
from .models import Models

__all__ = ["Engine", "Generation", "GenerationError", "Models"]
